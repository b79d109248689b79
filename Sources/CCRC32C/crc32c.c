// CRC-32C for the replay log: a hardware path (SSE4.2 crc32 instruction, three
// independent streams combined by carry-less shifts) and a portable table path.
#include "ttcrc32c.h"
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static int table_ready;

static void make_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
    table_ready = 1;
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t n) {
    if (!table_ready) make_tables();
    while (n && ((uintptr_t)p & 7)) { crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
              table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8; n -= 8;
    }
    while (n--) crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <immintrin.h>

// Multiply two bit-reflected polynomials mod P: used to shift a stream's CRC over the
// bytes that follow it. Computed once per block length into `shift_*`.
static uint32_t gf_mul(uint32_t a, uint32_t b) {
    uint32_t prod = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u) prod ^= b;
        a <<= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return prod;
}

// x^n mod P in the reflected representation (x^0 is 0x80000000).
static uint32_t x_pow(size_t n) {
    uint32_t result = 0x80000000u, base = 0x40000000u; // x^1
    while (n) {
        if (n & 1) result = gf_mul(result, base);
        base = gf_mul(base, base);
        n >>= 1;
    }
    return result;
}

// Three independent crc32 streams keep the instruction's pipeline full (latency 3,
// throughput 1); their results are joined by shifting with a carry-less multiply.
// Several block sizes, largest first, so that entries of a few KiB go almost entirely
// through the three-stream loop.
static const size_t blocks[4] = {2048, 512, 128, 32};
static uint32_t shifts[4];          /* x^(8*block - 32): crc32q multiplies by x^32 itself */
static int shifts_ready;

__attribute__((target("sse4.2,pclmul")))
static uint32_t shift_crc(uint32_t crc, uint32_t k) {
    // The reflected 32x32 product, reduced modulo P by crc32q (which adds the x^32 factor).
    __m128i a = _mm_cvtsi32_si128((int)crc);
    __m128i b = _mm_cvtsi32_si128((int)k);
    __m128i p = _mm_clmulepi64_si128(a, b, 0);
    uint64_t v = (uint64_t)_mm_cvtsi128_si64(p);
    return (uint32_t)_mm_crc32_u64(0, v << 1);
}

__attribute__((target("sse4.2,pclmul")))
static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) { crc = _mm_crc32_u8(crc, *p++); n--; }
    if (n >= 3 * blocks[3]) {
        if (!shifts_ready) {
            for (int i = 0; i < 4; i++) shifts[i] = x_pow(8 * blocks[i] - 32);
            shifts_ready = 1;
        }
        for (int i = 0; i < 4; i++) {
            const size_t block = blocks[i];
            while (n >= 3 * block) {
                uint64_t c0 = crc, c1 = 0, c2 = 0;
                const unsigned char *p1 = p + block, *p2 = p + 2 * block;
                for (size_t j = 0; j < block; j += 8) {
                    uint64_t w0, w1, w2;
                    memcpy(&w0, p + j, 8); memcpy(&w1, p1 + j, 8); memcpy(&w2, p2 + j, 8);
                    c0 = _mm_crc32_u64(c0, w0);
                    c1 = _mm_crc32_u64(c1, w1);
                    c2 = _mm_crc32_u64(c2, w2);
                }
                uint32_t c = shift_crc((uint32_t)c0, shifts[i]) ^ (uint32_t)c1;
                crc = shift_crc(c, shifts[i]) ^ (uint32_t)c2;
                p += 3 * block; n -= 3 * block;
            }
        }
    }
    uint64_t c64 = crc;
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c64 = _mm_crc32_u64(c64, w); p += 8; n -= 8; }
    crc = (uint32_t)c64;
    while (n--) crc = _mm_crc32_u8(crc, *p++);
    return crc;
}

static int have_hw = -1;
#endif

uint32_t tt_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    crc = ~crc;
#if defined(__x86_64__)
    if (have_hw < 0) have_hw = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul");
    if (have_hw) return ~crc_hw(crc, p, length);
#endif
    return ~crc_table(crc, p, length);
}
