/* Baseline for bts-dump: the minimal C program doing the same job — print each 24-byte
 * record as "N: 0x<from> -> 0x<to>" (at least 8 hex digits), or, with -s FILE, each address
 * as "0x<addr> <func+off>" from the ELF symbol table (libelf; binary search per address).
 * usage: dump [-s FILE] BTS */
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct sym { uint64_t addr, size; const char *name; };
static struct sym *syms;
static size_t nsyms;

static int by_addr(const void *a, const void *b)
{
    const struct sym *x = a, *y = b;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static void load(const char *path)
{
    elf_version(EV_CURRENT);
    int fd = open(path, O_RDONLY);
    Elf *e = fd < 0 ? 0 : elf_begin(fd, ELF_C_READ, 0);
    if (!e) { fprintf(stderr, "dump: %s: cannot read ELF\n", path); exit(1); }
    Elf_Scn *scn = 0;
    while ((scn = elf_nextscn(e, scn))) {
        GElf_Shdr sh;
        gelf_getshdr(scn, &sh);
        if (sh.sh_type != SHT_SYMTAB) continue;
        Elf_Data *d = elf_getdata(scn, 0);
        size_t n = sh.sh_size / sh.sh_entsize;
        syms = malloc(n * sizeof *syms);
        for (size_t i = 0; i < n; i++) {
            GElf_Sym s;
            gelf_getsym(d, (int)i, &s);
            if (GELF_ST_TYPE(s.st_info) != STT_FUNC || s.st_value == 0) continue;
            syms[nsyms].addr = s.st_value;
            syms[nsyms].size = s.st_size;
            syms[nsyms].name = strdup(elf_strptr(e, sh.sh_link, s.st_name));
            nsyms++;
        }
    }
    qsort(syms, nsyms, sizeof *syms, by_addr);
}

static void print_addr(uint64_t a)
{
    size_t lo = 0, hi = nsyms;
    while (lo < hi) { size_t m = (lo + hi) / 2; if (syms[m].addr <= a) lo = m + 1; else hi = m; }
    if (lo > 0 && a < syms[lo - 1].addr + (syms[lo - 1].size ? syms[lo - 1].size : 1)) {
        uint64_t off = a - syms[lo - 1].addr;
        if (off) printf("0x%08lx <%s+%lu>", (unsigned long)a, syms[lo - 1].name, (unsigned long)off);
        else printf("0x%08lx <%s>", (unsigned long)a, syms[lo - 1].name);
    } else {
        printf("0x%08lx", (unsigned long)a);
    }
}

int main(int argc, char **argv)
{
    int symbolic = argc == 4 && strcmp(argv[1], "-s") == 0;
    if (!symbolic && argc != 2) { fprintf(stderr, "usage: dump [-s FILE] BTS\n"); return 2; }
    if (symbolic) load(argv[2]);
    const char *path = argv[argc - 1];
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { perror(path); return 1; }
    size_t n = (size_t)st.st_size / 24;
    const unsigned char *p = n ? mmap(0, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : 0;
    static char buf[1 << 20];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    for (size_t i = 0; i < n; i++) {
        uint64_t from, to;
        memcpy(&from, p + 24 * i, 8);
        memcpy(&to, p + 24 * i + 8, 8);
        if (symbolic) {
            printf("%zu: ", i);
            print_addr(from);
            fputs(" -> ", stdout);
            print_addr(to);
            putchar('\n');
        } else {
            printf("%zu: 0x%08lx -> 0x%08lx\n", i, (unsigned long)from, (unsigned long)to);
        }
    }
    return fflush(stdout) ? 1 : 0;
}
