/*
 * tt's QEMU TCG plugin (QEMU 10, plugin API v4): an exact transfer counter, an instruction
 * counter and a branch-record ring, all in a shared-memory control file the controller
 * created (plugin argument shm=PATH; layout in Sources/CTTPluginABI/include/ttplugin.h and
 * docs/qemu-plugin-shm.md). What a transfer is: docs/bts.md.
 *
 * Every instruction is decoded once, at translation, into its kind as a transfer (none,
 * rep string, conditional direct, unconditional direct, indirect/far/system, software
 * interrupt) and direct target. When the next instruction N executes after P, the shared
 * classification (tt_classify_arrival) says which transfers happened in between: P's own
 * (also when its target is the next instruction), none (fall-through, rep iteration), or
 * an interrupt or exception, whose source comes from the frame the CPU pushed (read with
 * qemu_plugin_read_register and qemu_plugin_read_memory_vaddr at N, a block start where
 * the guest registers are in memory).
 *
 * Single vCPU only (QEMU record/replay supports one).
 */
#include "qemu-plugin-api.h"
#include "ttplugin.h"
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

TT_PLUGIN_EXPORT int qemu_plugin_version = TT_QEMU_PLUGIN_VERSION;

/* Plugin-private flag: the first instruction of its block (never stored in the control file). */
#define TT_FLAG_FIRST (1ull << 32)

/* What the exec callback needs about one translated instruction. */
struct insn_info {
    uint64_t pc;
    uint64_t size;
    uint64_t flags;  /* TT_SHM_FLAG_VALID | TT_SHM_FLAG_REP | kind << TT_SHM_KIND_SHIFT */
    uint64_t target; /* direct target (jcc, jmp rel, call rel) */
};

static volatile uint8_t *shm;          /* the mapped control file */
static struct tt_shm_record *ring;
static uint64_t ring_mask;

#define FIELD(off) (*(volatile uint64_t *)(shm + (off)))

/* Instruction descriptors are never freed: QEMU may run a translated block until the
 * end, and re-translations are rare enough that the arena stays small. */
static struct insn_info *arena;
static size_t arena_left;

static struct insn_info *new_info(void) {
    if (arena_left == 0) {
        arena_left = 65536;
        arena = malloc(arena_left * sizeof *arena);
        if (!arena) { qemu_plugin_outs("ttplugin: out of memory\n"); abort(); }
    }
    arena_left--;
    return arena++;
}

/* The instruction's kind as a transfer, and its direct target. The size comes from QEMU,
 * so the width of a relative displacement is what is left after prefixes and opcode. */
static uint64_t decode_kind(const uint8_t *b, size_t n, uint64_t pc, uint64_t *target, int *rel16, int *system) {
    size_t i = 0;
    int rep = 0;
    *target = 0;
    *rel16 = 0;
    *system = 0;
    for (; i < n; i++) {
        uint8_t c = b[i];
        if (c == 0xf2 || c == 0xf3) rep = 1;
        else if (c == 0x66 || c == 0x67 || c == 0xf0 || c == 0x2e || c == 0x36 ||
                 c == 0x3e || c == 0x26 || c == 0x64 || c == 0x65) continue;
        else break;
    }
    if (i < n && (b[i] & 0xf0) == 0x40 && i + 1 < n) i++;   /* REX (64-bit code) */
    if (i >= n) return TT_KIND_NONE;
    uint8_t op = b[i];
    uint64_t next = pc + n;
    if (rep && ((op >= 0x6c && op <= 0x6f) || (op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf)))
        return TT_KIND_REP;
    size_t rel = n - i - 1;   /* bytes after a one-byte opcode */
    if ((op >= 0x70 && op <= 0x7f) || (op >= 0xe0 && op <= 0xe3) || op == 0xeb || op == 0xe9 || op == 0xe8) {
        int64_t d = rel == 1 ? (int8_t)b[i + 1] : rel == 2 ? (int16_t)tt_le(b + i + 1, 2)
                  : rel == 4 ? (int32_t)tt_le(b + i + 1, 4) : 0;
        *target = next + (uint64_t)d;
        if (rel == 2) *rel16 = 1;
        return (op == 0xeb || op == 0xe9 || op == 0xe8) ? TT_KIND_DIRECT : TT_KIND_JCC;
    }
    if (op == 0x0f && i + 1 < n) {
        uint8_t op2 = b[i + 1];
        if (op2 >= 0x80 && op2 <= 0x8f) {
            size_t r = n - i - 2;
            int64_t d = r == 2 ? (int16_t)tt_le(b + i + 2, 2) : r == 4 ? (int32_t)tt_le(b + i + 2, 4) : 0;
            *target = next + (uint64_t)d;
            if (r == 2) *rel16 = 1;
            return TT_KIND_JCC;
        }
        if (op2 == 0x05 || op2 == 0x07 || op2 == 0x34 || op2 == 0x35 || op2 == 0xaa) { *system = 1; return TT_KIND_INDIRECT; }
        return TT_KIND_NONE;
    }
    switch (op) {
    case 0xc2: case 0xc3:
        return TT_KIND_INDIRECT;
    case 0xca: case 0xcb: case 0xcf: case 0xea: case 0x9a:
        *system = 1;
        return TT_KIND_INDIRECT;
    case 0xcc: case 0xcd: case 0xce: case 0xf1:
        return TT_KIND_INT;
    case 0xff:
        if (i + 1 < n) {
            unsigned reg = (b[i + 1] >> 3) & 7;
            if (reg == 3 || reg == 5) *system = 1;   /* far call/jmp through memory */
            if (reg >= 2 && reg <= 5) return TT_KIND_INDIRECT;
        }
        return TT_KIND_NONE;
    }
    return TT_KIND_NONE;
}

/* Registers the frame reader needs (found when the vCPU starts). */
static struct qemu_plugin_register *reg_rsp, *reg_ss, *reg_cr0, *reg_efer, *reg_rip;
static GByteArray *scratch;

static uint64_t read_reg(struct qemu_plugin_register *r) {
    if (!r) return 0;
    scratch->len = 0;
    int n = qemu_plugin_read_register(r, scratch);
    return n > 0 ? tt_le(scratch->data, n > 8 ? 8 : n) : 0;
}

static int plugin_read_frame(void *opaque, uint8_t frame[48], int *width, uint64_t *sp) {
    (void)opaque;
    if (!reg_rsp) return -1;
    uint64_t cr0 = read_reg(reg_cr0), efer = read_reg(reg_efer), rsp = read_reg(reg_rsp);
    uint64_t addr;
    if (!(cr0 & 1)) { *width = 16; addr = (read_reg(reg_ss) & 0xffff) * 16 + (rsp & 0xffff); }
    else if (efer & (1u << 10)) { *width = 64; addr = rsp; }
    else { *width = 32; addr = rsp & 0xffffffffu; }   /* flat stack segment assumed */
    *sp = addr;
    scratch->len = 0;
    if (!qemu_plugin_read_memory_vaddr(addr, scratch, 48) || scratch->len < 48) return -1;
    memcpy(frame, scratch->data, 48);
    return 0;
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index) {
    (void)id; (void)vcpu_index;
    scratch = g_byte_array_new();
    GArray *regs = qemu_plugin_get_registers();
    if (!regs) return;
    const qemu_plugin_reg_descriptor *d = (const qemu_plugin_reg_descriptor *)regs->data;
    for (unsigned i = 0; i < regs->len; i++) {
        const char *nm = d[i].name;
        if (!strcmp(nm, "rsp") || (!reg_rsp && !strcmp(nm, "esp"))) reg_rsp = d[i].handle;
        else if (!strcmp(nm, "ss")) reg_ss = d[i].handle;
        else if (!strcmp(nm, "cr0")) reg_cr0 = d[i].handle;
        else if (!strcmp(nm, "efer")) reg_efer = d[i].handle;
        else if (!strcmp(nm, "rip") || (!reg_rip && !strcmp(nm, "eip"))) reg_rip = d[i].handle;
    }
    g_array_free(regs, 1);
    if (!reg_rsp || !reg_cr0 || !reg_ss || !reg_efer || !reg_rip)
        qemu_plugin_outs("ttplugin: the vCPU's registers lack rsp, rip, ss, cr0 or efer: interrupts cannot be told exactly\n");
}

/* Wait until the ring has room: the controller drains it while the VM runs. Exactness
 * over speed: a record is never dropped. */
static void append_record(uint64_t from, uint64_t to, uint64_t brctr) {
    uint64_t head = __atomic_load_n((uint64_t *)(shm + TT_SHM_OFF_RING_HEAD), __ATOMIC_RELAXED);
    uint64_t cap = ring_mask + 1;
    if (head - __atomic_load_n((uint64_t *)(shm + TT_SHM_OFF_RING_TAIL), __ATOMIC_ACQUIRE) >= cap) {
        FIELD(TT_SHM_OFF_RING_WAITS) += 1;
        unsigned spins = 0;
        while (head - __atomic_load_n((uint64_t *)(shm + TT_SHM_OFF_RING_TAIL), __ATOMIC_ACQUIRE) >= cap) {
            if (++spins < 100) sched_yield();
            else { struct timespec ts = {0, 50000}; nanosleep(&ts, NULL); }
        }
    }
    struct tt_shm_record *r = &ring[head & ring_mask];
    r->from = from;
    r->to = to;
    r->brctr = brctr;
    __atomic_store_n((uint64_t *)(shm + TT_SHM_OFF_RING_HEAD), head + 1, __ATOMIC_RELEASE);
}

/* TT_PLUGIN_DEBUG=N: describe the first N arrivals the frame did not explain. */
static int debug_unexplained;

static void count(uint64_t from, uint64_t to) {
    uint64_t n = FIELD(TT_SHM_OFF_BRCTR) + 1;
    FIELD(TT_SHM_OFF_BRCTR) = n;
    if (FIELD(TT_SHM_OFF_TRACING) && n > FIELD(TT_SHM_OFF_TRACE_AFTER))
        append_record(from, to, n);
}

/* QEMU 10 translates x86 blocks position-independently (CF_PCREL): a block translated at
 * one virtual address runs, unchanged, wherever the same physical page is mapped at the
 * same page offset, and qemu_plugin_insn_vaddr gives the address of the translation (e.g.
 * Linux's identity mapping of its text during early boot, later reused at the kernel's
 * high addresses). The block that runs is relocated by `delta`, found at its first
 * instruction: 0 when it arrives where its predecessor leads, else from the vCPU's
 * instruction pointer (read where an arrival is unexpected or crosses halves of the
 * address space; see docs/bts.md for the one case this does not read it). */
static uint64_t delta;

/* The address of the block about to run, if it is an alias of translated address n:
 * only with paging on, and only at the same page offset (aliases map the same page). */
static uint64_t current_pc(uint64_t n) {
    if (!reg_rip || !reg_cr0) return 0;
    if ((read_reg(reg_cr0) & 0x80000001u) != 0x80000001u) return 0;   /* no paging, no aliases */
    uint64_t a = read_reg(reg_rip);                                    /* flat code segments */
    return ((a ^ n) & 0xfff) == 0 ? a : 0;
}

static void on_exec(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    const struct insn_info *in = userdata;
    uint64_t last_flags = FIELD(TT_SHM_OFF_LAST_FLAGS);
    struct tt_insn p = { FIELD(TT_SHM_OFF_LAST_PC), FIELD(TT_SHM_OFF_LAST_SIZE),
                         (last_flags >> TT_SHM_KIND_SHIFT) & 15, FIELD(TT_SHM_OFF_LAST_TARGET),
                         (last_flags & TT_SHM_FLAG_REL16) != 0 };
    int valid = (last_flags & TT_SHM_FLAG_VALID) != 0;
    if (in->flags & TT_FLAG_FIRST) {
        delta = 0;
        uint64_t n = in->pc, f = p.pc + p.size;
        int expected = !valid || n == f || n == p.pc ||
                       ((p.kind == TT_KIND_DIRECT || p.kind == TT_KIND_JCC) && tt_is_target(&p, n));
        int plain_indirect = p.kind == TT_KIND_INDIRECT && !(last_flags & TT_SHM_FLAG_SYSTEM);
        if (!expected && (!plain_indirect || ((n ^ p.pc) >> 63) != 0)) {
            uint64_t a = current_pc(n);
            if (a) delta = a - n;
        }
    }
    uint64_t pc = in->pc + delta;
    if (valid) {
        /* The common case first: no transfer of its own, and N follows it. */
        if (!(p.kind == TT_KIND_NONE && pc == p.pc + p.size)) {
            volatile uint64_t *handlers = (volatile uint64_t *)(shm + TT_SHM_OFF_HANDLERS);
            struct tt_arrival a = tt_classify_arrival(&p, pc, handlers, plugin_read_frame, NULL);
            for (int k = 0; k < a.n; k++) count(a.from[k], a.to[k]);
            if (a.handler) tt_handler_learn(handlers, pc);
            if (a.unexplained) {
                FIELD(TT_SHM_OFF_UNEXPLAINED) += 1;
                if (debug_unexplained > 0) {
                    debug_unexplained--;
                    uint8_t fr[48]; int w = 0; uint64_t sp = 0;
                    int ok = plugin_read_frame(NULL, fr, &w, &sp);
                    char line[256];
                    snprintf(line, sizeof line, "ttplugin: unexplained %#" PRIx64 " (kind %d size %d) -> %#" PRIx64 " frame ok=%d w=%d sp=%#" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
                             p.pc, (int)p.kind, (int)p.size, pc, ok == 0, w, sp, tt_le(fr, 8), tt_le(fr + 8, 8), tt_le(fr + 16, 8));
                    qemu_plugin_outs(line);
                }
            }
        }
    }
    FIELD(TT_SHM_OFF_LAST_PC) = pc;
    FIELD(TT_SHM_OFF_LAST_SIZE) = in->size;
    FIELD(TT_SHM_OFF_LAST_FLAGS) = in->flags & ~TT_FLAG_FIRST;
    FIELD(TT_SHM_OFF_LAST_TARGET) = in->target + delta;
    FIELD(TT_SHM_OFF_INSNS) += 1;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        struct insn_info *in = new_info();
        in->pc = qemu_plugin_insn_vaddr(insn);
        in->size = qemu_plugin_insn_size(insn);
        uint8_t bytes[16];
        size_t got = qemu_plugin_insn_data(insn, bytes, sizeof bytes);
        int rel16 = 0, system = 0;
        uint64_t kind = decode_kind(bytes, got < in->size ? got : in->size, in->pc, &in->target, &rel16, &system);
        in->flags = TT_SHM_FLAG_VALID | (kind == TT_KIND_REP ? TT_SHM_FLAG_REP : 0) |
                    (rel16 ? TT_SHM_FLAG_REL16 : 0) | (system ? TT_SHM_FLAG_SYSTEM : 0) |
                    kind << TT_SHM_KIND_SHIFT | (i == 0 ? TT_FLAG_FIRST : 0);
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_NO_REGS, in);
    }
}

static int fail(const char *what, const char *path) {
    char line[512];
    snprintf(line, sizeof line, "ttplugin: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    qemu_plugin_outs(line);
    return -1;
}

/* Map the controller's file; without shm=, count into private memory (nobody reads it). */
static int map_control(const char *path) {
    if (!path) {
        void *p = mmap(NULL, TT_SHM_HEADER_BYTES + 64 * sizeof(struct tt_shm_record),
                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return fail("cannot allocate the counters", NULL);
        shm = p;
        FIELD(TT_SHM_OFF_RING_CAPACITY) = 64;
    } else {
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) return fail("cannot open the control file", path);
        struct stat st;
        if (fstat(fd, &st) != 0 || (size_t)st.st_size < TT_SHM_HEADER_BYTES) {
            close(fd);
            return fail("control file too small", path);
        }
        void *p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return fail("cannot map the control file", path);
        shm = p;
        uint64_t cap = FIELD(TT_SHM_OFF_RING_CAPACITY);
        if (FIELD(TT_SHM_OFF_MAGIC) != TT_SHM_MAGIC || cap == 0 || (cap & (cap - 1)) != 0 ||
            TT_SHM_HEADER_BYTES + cap * sizeof(struct tt_shm_record) > (uint64_t)st.st_size)
            return fail("not a tt control file (magic, ring capacity or size wrong)", path);
    }
    ring = (struct tt_shm_record *)(shm + TT_SHM_HEADER_BYTES);
    ring_mask = FIELD(TT_SHM_OFF_RING_CAPACITY) - 1;
    FIELD(TT_SHM_OFF_PLUGIN_PID) = (uint64_t)getpid();
    return 0;
}

TT_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "shm=", 4) == 0) path = argv[i] + 4;
        else { fail("unknown argument (expected shm=PATH)", argv[i]); return -1; }
    }
    if (map_control(path) != 0) return -1;
    const char *dbg = getenv("TT_PLUGIN_DEBUG");
    if (dbg) debug_unexplained = atoi(dbg);
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
