/* Baseline for bts-extract: read a tt replay log (docs/replay-log-format.md), checking each
 * entry's marker, length, CRC-32C and sequence number as tt's reader does, and write the
 * hw-branches-64 records whose counter is in [LO, HI] (stamp rule: record k of n has
 * brctr - (n-1-k)) to OUT.
 * usage: extract LO HI LOG OUT */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "crc32c.h"

static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t get16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

int main(int argc, char **argv)
{
    if (argc != 5) { fprintf(stderr, "usage: extract LO HI LOG OUT\n"); return 2; }
    uint64_t lo = strtoull(argv[1], 0, 0), hi = strtoull(argv[2], 0, 0);
    int fd = open(argv[3], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || st.st_size < 128) { perror(argv[3]); return 1; }
    size_t size = (size_t)st.st_size;
    const unsigned char *p = mmap(0, size, PROT_READ, MAP_PRIVATE, fd, 0);
    madvise((void *)p, size, MADV_SEQUENTIAL);
    if (memcmp(p, "\x89TTLOG\r\n", 8) || get16(p + 8) != 1 ||
        (crc32c_update(0xFFFFFFFFu, p, 124) ^ 0xFFFFFFFFu) != get32(p + 124)) {
        fprintf(stderr, "extract: bad header\n");
        return 1;
    }
    size_t slot = get32(p + 16);
    FILE *out = fopen(argv[4], "wb");
    static char buf[1 << 20];
    setvbuf(out, buf, _IOFBF, sizeof buf);
    uint64_t index = 0, written = 0;
    for (size_t off = slot; off < size;) {
        const unsigned char *e = p + off;
        if (size - off < 80 || get32(e) != 0x455454E5) { fprintf(stderr, "extract: byte %zu: bad entry\n", off); return 1; }
        uint32_t len = get32(e + 4);
        if (len > (1u << 20)) { fprintf(stderr, "extract: byte %zu: payload too long\n", off); return 1; }
        size_t span = (80 + len + slot - 1) / slot * slot;
        if (span > size - off) { fprintf(stderr, "extract: byte %zu: torn entry\n", off); return 1; }
        if (entry_crc(e, span) != get32(e + 20)) { fprintf(stderr, "extract: byte %zu: bad CRC\n", off); return 1; }
        if (get64(e + 24) != index++) { fprintf(stderr, "extract: byte %zu: bad index\n", off); return 1; }
        if (get16(e + 8) == 17 && len % 24 == 0) {
            uint64_t n = len / 24, brctr = get64(e + 40);
            for (uint64_t k = 0; k < n; k++) {
                uint64_t c = brctr - (n - 1 - k);
                if (c >= lo && c <= hi) { fwrite(e + 80 + 24 * k, 24, 1, out); written++; }
            }
        }
        off += span;
    }
    if (fclose(out)) { perror(argv[4]); return 1; }
    fprintf(stderr, "extract: %llu records\n", (unsigned long long)written);
    return 0;
}
