/* CRC-32C (Castagnoli) with the SSE4.2 crc32 instruction, 8 bytes at a time: the plain
 * way a C program would check the replay log's entry checksums. */
#include <nmmintrin.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t crc32c_update(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}

/* CRC of an entry's slots without bytes 20..23 (the stored CRC). */
static inline uint32_t entry_crc(const unsigned char *e, size_t len)
{
    uint32_t c = crc32c_update(0xFFFFFFFFu, e, 20);
    return crc32c_update(c, e + 24, len - 24) ^ 0xFFFFFFFFu;
}
