/* Benchmark input: N branch records as a raw BTS file and as a tt replay log (format 1.0,
 * docs/replay-log-format.md: 1 vCPU, hw-branches-64 entries of 4096 records).
 * Addresses come from the functions listed by `nm -S --defined-only` (read on stdin), so
 * symbolic dumps have names to find; a deterministic xorshift picks them, biased to a hot
 * set as real traces are.
 * usage: gen-input N OUT.bts OUT.log < nm-output */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crc32c.h"

struct fn { uint64_t addr, size; };

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: gen-input N OUT.bts OUT.log < nm-output\n"); return 2; }
    uint64_t n = strtoull(argv[1], 0, 10);
    struct fn *fns = 0;
    size_t count = 0, cap = 0;
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long a, s;
        char t;
        if (sscanf(line, "%llx %llx %c", &a, &s, &t) == 3 && (t == 'T' || t == 't') && s >= 8) {
            if (count == cap) { cap = cap ? 2 * cap : 1024; fns = realloc(fns, cap * sizeof *fns); }
            fns[count].addr = a;
            fns[count].size = s;
            count++;
        }
    }
    if (count == 0) { fprintf(stderr, "gen-input: no functions on stdin\n"); return 1; }
    size_t hot = count < 256 ? count : 256;

    FILE *bts = fopen(argv[2], "wb"), *log = fopen(argv[3], "wb");
    if (!bts || !log) { perror("gen-input"); return 1; }

    unsigned char header[128] = {0};
    memcpy(header, "\x89TTLOG\r\n", 8);
    put16(header + 8, 1);
    put16(header + 10, 0);
    put32(header + 12, 0x01020304);
    put32(header + 16, 128);
    put16(header + 20, 64);
    put16(header + 22, 1);
    memcpy(header + 32, "bench", 5);
    put32(header + 124, crc32c_update(0xFFFFFFFFu, header, 124) ^ 0xFFFFFFFFu);
    fwrite(header, 1, 128, log);

    enum { PER = 4096, SLOT = 128 };
    size_t entry_cap = ((80 + PER * 24 + SLOT - 1) / SLOT) * SLOT;
    unsigned char *entry = malloc(entry_cap);
    uint64_t done = 0, index = 0;
    while (done < n) {
        uint64_t k = n - done < PER ? n - done : PER;
        size_t len = ((80 + k * 24 + SLOT - 1) / SLOT) * SLOT;
        memset(entry, 0, len);
        unsigned char *rec = entry + 80;
        for (uint64_t i = 0; i < k; i++) {
            struct fn *a = &fns[(next() & 3) ? next() % hot : next() % count];
            struct fn *b = &fns[(next() & 3) ? next() % hot : next() % count];
            uint64_t from = a->addr + next() % a->size;
            uint64_t to = (next() & 1) ? b->addr : a->addr + next() % a->size;
            put64(rec + 24 * i, from);
            put64(rec + 24 * i + 8, to);
            put64(rec + 24 * i + 16, 0);
        }
        fwrite(rec, 24, k, bts);
        done += k;
        put32(entry + 0, 0x455454E5);
        put32(entry + 4, (uint32_t)(k * 24));
        put16(entry + 8, 17);
        put16(entry + 10, 1);
        put16(entry + 12, 0);
        put32(entry + 16, 0);
        put64(entry + 24, index++);
        put64(entry + 32, 0x1000);
        put64(entry + 40, done); /* brctr after the batch's last record */
        put32(entry + 20, entry_crc(entry, len));
        fwrite(entry, 1, len, log);
    }
    if (fclose(bts) || fclose(log)) { perror("gen-input"); return 1; }
    return 0;
}
