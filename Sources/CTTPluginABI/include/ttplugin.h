/*
 * The shared-memory control file between tt's QEMU TCG plugin (producer of counts and
 * branch records, running in QEMU's vCPU thread) and tt's controller (which reads and
 * writes it while the vCPU is stopped, and drains the ring while it runs).
 * This header is the one definition of the layout: the plugin (Sources/TTQemuPlugin) and
 * the Swift controller (Sources/QEMUBackend/PluginControlBlock.swift) both import it, and
 * docs/qemu-plugin-shm.md describes it; a test checks the documented offsets and sizes.
 *
 * All fields are little-endian u64 at fixed offsets; the file is
 * TT_SHM_HEADER_BYTES of header followed by ring_capacity records of 24 bytes.
 */
#ifndef TT_PLUGIN_H
#define TT_PLUGIN_H
#include <stdint.h>

#define TT_SHM_MAGIC        0x3130304d48535454ull   /* "TTSHM001" little-endian */
#define TT_SHM_VERSION      3u
#define TT_SHM_HEADER_BYTES 4096u

/* Offsets (bytes) of the header fields. */
#define TT_SHM_OFF_MAGIC          0    /* u64, written by the controller */
#define TT_SHM_OFF_VERSION        8    /* u32 version, u32 header bytes */
#define TT_SHM_OFF_RING_CAPACITY  16   /* u64 records, a power of two; controller */
#define TT_SHM_OFF_BRCTR          24   /* u64 taken transfers counted by the plugin */
#define TT_SHM_OFF_INSNS          32   /* u64 instructions seen executing */
#define TT_SHM_OFF_LAST_PC        40   /* u64 address of the last instruction seen */
#define TT_SHM_OFF_LAST_SIZE      48   /* u64 its size; 0 = "arrival at LAST_PC already counted" */
#define TT_SHM_OFF_LAST_FLAGS     56   /* u64 bit0 LAST_PC valid, bit1 rep string insn, bits 4-7 its TT_KIND */
#define TT_SHM_OFF_TRACING        64   /* u64 0/1, written by the controller */
#define TT_SHM_OFF_TRACE_AFTER    72   /* u64 records only for brctr > this */
#define TT_SHM_OFF_RING_WAITS     80   /* u64 times the plugin waited for ring space */
#define TT_SHM_OFF_PLUGIN_PID     88   /* u64 pid of the QEMU that attached */
#define TT_SHM_OFF_LAST_TARGET    96   /* u64 the last instruction's direct target (jcc, jmp, call rel) */
#define TT_SHM_OFF_UNEXPLAINED    104  /* u64 arrivals the frame did not explain (see docs/bts.md) */
#define TT_SHM_OFF_LAST_INFO      112  /* u64 the last instruction that started, packed (tt_pack_insn); 0 = use LAST_PC.. */
#define TT_SHM_OFF_EXPECTED       120  /* u64 where the last block leads as predicted (translation addresses), or a sentinel */
#define TT_SHM_OFF_DELTA          256  /* u64 the running block's address minus its translation's (aliased translations) */
#define TT_SHM_OFF_BRANCH_TARGET  264  /* u64 the last direct transfer's target (translation address), stored before it ran */
#define TT_SHM_OFF_HANDLERS       1024 /* u64[TT_HANDLER_SLOTS]: handler entries seen (0 = free) */
#define TT_SHM_OFF_RING_HEAD      128  /* u64 records ever produced (plugin), own cache line */
#define TT_SHM_OFF_RING_TAIL      192  /* u64 records ever consumed (controller), own cache line */

#define TT_SHM_FLAG_VALID 1ull
#define TT_SHM_FLAG_REP   2ull
#define TT_SHM_FLAG_REL16 4ull   /* a 16-bit displacement: the target wraps within 64 KiB */
#define TT_SHM_FLAG_SYSTEM 8ull  /* an indirect transfer that may change privilege (far, iret, sys*) */
#define TT_SHM_KIND_SHIFT 4
#define TT_HANDLER_SLOTS  256u

/* EXPECTED values no block starts at (non-canonical in 64-bit code, above 4 GiB otherwise):
 * a block has started and its last instruction has not (yet) run; the last instruction
 * was an indirect transfer or a software interrupt (no prediction). */
#define TT_EXPECT_BLOCK_STARTED 0x8000000000000001ull
#define TT_EXPECT_NONE          0x8000000000000002ull

/* What an instruction is, as a transfer (decoded by the plugin at translation). */
enum tt_kind {
    TT_KIND_NONE = 0,     /* no transfer of its own */
    TT_KIND_REP = 1,      /* rep string instruction: executing it again is the next iteration */
    TT_KIND_JCC = 2,      /* conditional, direct: jcc, loop*, jcxz (taken = arrival at target) */
    TT_KIND_DIRECT = 3,   /* unconditional, direct: jmp rel, call rel (always a transfer) */
    TT_KIND_INDIRECT = 4, /* unconditional, target at run time: ret, jmp/call r/m, far jmp/call/ret,
                             iret, syscall, sysret, sysenter, sysexit */
    TT_KIND_INT = 5,      /* software interrupt: int n, int3, into, int1 (a trap: pushes the next address) */
};

/* One ring record: the transfer that took the counter to `brctr`. */
struct tt_shm_record {
    uint64_t from;
    uint64_t to;
    uint64_t brctr;
};

/* An instruction as the plugin's per-instruction inline store writes it into LAST_INFO:
 * bits 0-47 its translation's address (sign-extended from bit 47: canonical 48-bit and
 * 32-bit addresses), 48-51 size, 52-54 kind, 55 16-bit displacement, 56 far/system,
 * 57 "predicted taken": the instruction's inline operations added 1 to BRCTR and stored
 * its target in EXPECTED before it ran (direct jumps and calls, conditional jumps
 * predicted taken), 58 always set (the word is never 0), 59-63 the instructions after it
 * that INSNS already counts (a block counts its instructions ahead, up to 32 at a time: a
 * block left early, at a fault or an I/O instruction, takes those back). A direct
 * transfer's target is BRANCH_TARGET: its own inline store put it there. */
#define TT_PACK_REL16     (1ull << 55)
#define TT_PACK_SYSTEM    (1ull << 56)
#define TT_PACK_PREDICTED (1ull << 57)
#define TT_PACK_PRESENT   (1ull << 58)
#define TT_PACK_AHEAD_SHIFT 59
#define TT_PACK_AHEAD_MAX 31u

static inline int tt_packable(uint64_t pc) { return (uint64_t)((int64_t)(pc << 16) >> 16) == pc; }
static inline uint64_t tt_pack_insn(uint64_t pc, uint64_t size, uint64_t kind, int rel16, int system, int predicted,
                                    uint64_t ahead) {
    return (pc & 0xffffffffffffull) | (size & 15) << 48 | (kind & 7) << 52 | (rel16 ? TT_PACK_REL16 : 0) |
           (system ? TT_PACK_SYSTEM : 0) | (predicted ? TT_PACK_PREDICTED : 0) | TT_PACK_PRESENT |
           (ahead & TT_PACK_AHEAD_MAX) << TT_PACK_AHEAD_SHIFT;
}
static inline uint64_t tt_packed_pc(uint64_t w) { return (uint64_t)((int64_t)(w << 16) >> 16); }
static inline uint64_t tt_packed_size(uint64_t w) { return (w >> 48) & 15; }
static inline uint64_t tt_packed_kind(uint64_t w) { return (w >> 52) & 7; }
static inline uint64_t tt_packed_ahead(uint64_t w) { return w >> TT_PACK_AHEAD_SHIFT; }

/* Atomics on the shared words, for the Swift side (Swift's Glibc module has none for
 * memory shared with another process). */
static inline uint64_t tt_load_relaxed(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline uint64_t tt_load_acquire(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void tt_store_relaxed(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
static inline void tt_store_release(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }


/* ---- The one classification of an arrival (docs/bts.md), shared by the plugin and tt ----
 *
 * P is the last instruction that executed (its address, size, kind, direct target); N the
 * address about to execute next. The result is the transfers between them, in order, as a
 * branch-trace store records them: none (fall-through, rep iteration), one (P's transfer,
 * or an interrupt/exception), or two (P's taken transfer to T, then an interrupt at T).
 *
 * When N may be an interrupt or exception handler, the frame the CPU pushed tells the
 * source: read_frame fills 48 bytes from the stack pointer at N, the code width of the
 * frame (16 real mode, 32, 64) and the stack pointer; it returns 0 on success. */
struct tt_insn { uint64_t pc, size, kind, target, rel16; };

/* Is n the direct target? With a 16-bit displacement the instruction pointer wraps at
 * 64 KiB (real-mode code), so only the low 16 bits of the distance are fixed. */
static inline int tt_is_target(const struct tt_insn *p, uint64_t n) {
    if (!p->rel16) return n == p->target;
    uint64_t d = n - p->target;
    return (d & 0xffff) == 0 && (n - p->pc + 0x10000) < 0x20000;
}
struct tt_arrival { int n; int unexplained; int handler; uint64_t from[2], to[2]; };
typedef int (*tt_read_frame_fn)(void *opaque, uint8_t frame[48], int *width, uint64_t *sp);

static inline uint64_t tt_le(const uint8_t *b, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static inline unsigned tt_handler_slot(uint64_t a) { return (unsigned)((a ^ (a >> 12)) * 0x9e3779b1u) % TT_HANDLER_SLOTS; }

static inline int tt_handler_known(const volatile uint64_t *table, uint64_t a) {
    if (!table || a == 0) return 0;
    for (unsigned i = 0, s = tt_handler_slot(a); i < TT_HANDLER_SLOTS; i++, s = (s + 1) % TT_HANDLER_SLOTS) {
        if (table[s] == a) return 1;
        if (table[s] == 0) return 0;
    }
    return 0;
}

static inline void tt_handler_learn(volatile uint64_t *table, uint64_t a) {
    if (!table || a == 0) return;
    for (unsigned i = 0, s = tt_handler_slot(a); i < TT_HANDLER_SLOTS; i++, s = (s + 1) % TT_HANDLER_SLOTS) {
        if (table[s] == a) return;
        if (table[s] == 0) { table[s] = a; return; }
    }
}

/* The saved return address of an interrupt frame. want: the candidates (0-terminated,
 * up to 3) it should be one of; any_plausible: accept any structurally valid frame.
 * Returns 1 and sets *r when one interpretation (with or without error code) fits. */
static inline int tt_frame_return(const uint8_t f[48], int width, uint64_t sp, const uint64_t want[3],
                                  int any_plausible, uint64_t *r) {
    if (width == 16) {                       /* real mode: IP, CS, FLAGS (16 bits each) */
        *r = tt_le(f + 2, 2) * 16 + tt_le(f, 2);
        for (int i = 0; i < 3 && want[i]; i++) if (want[i] == *r) return 1;
        return any_plausible;
    }
    for (int e = 0; e < 2; e++) {
        int order = (width == 64) ? ((sp & 15) == 8 ? e : 1 - e) : e;  /* 64-bit: alignment tells */
        uint64_t rip, cs, fl;
        if (width == 64) { rip = tt_le(f + 8 * order, 8); cs = tt_le(f + 8 * order + 8, 8); fl = tt_le(f + 8 * order + 16, 8); }
        else { rip = tt_le(f + 4 * order, 4); cs = tt_le(f + 4 * order + 4, 4); fl = tt_le(f + 4 * order + 8, 4); }
        int plausible = cs != 0 && cs < 0x10000 && (fl & 2) && (fl >> 22) == 0;
        if (!plausible) continue;
        for (int i = 0; i < 3 && want[i]; i++) if (want[i] == rip) { *r = rip; return 1; }
        if (any_plausible) { *r = rip; return 1; }
    }
    return 0;
}

static inline struct tt_arrival tt_classify_arrival(const struct tt_insn *p, uint64_t n,
                                                    const volatile uint64_t *handlers,
                                                    tt_read_frame_fn read_frame, void *opaque) {
    struct tt_arrival a = {0, 0, 0, {0, 0}, {0, 0}};
    uint64_t f = p->pc + p->size, t = p->target;
    switch (p->kind) {
    case TT_KIND_NONE:
    case TT_KIND_REP:
        if (n == f || n == p->pc) return a;      /* fall-through, rep iteration, re-execution */
        break;
    case TT_KIND_JCC:
        if (tt_is_target(p, n) && t != f) { a.n = 1; a.from[0] = p->pc; a.to[0] = n; return a; }
        if (n == f) return a;                    /* not taken (or a jump to the next instruction: see docs/bts.md) */
        break;
    case TT_KIND_DIRECT:
        if (tt_is_target(p, n)) { a.n = 1; a.from[0] = p->pc; a.to[0] = n; return a; }
        break;
    case TT_KIND_INDIRECT:
        if (!tt_handler_known(handlers, n)) { a.n = 1; a.from[0] = p->pc; a.to[0] = n; return a; }
        break;
    case TT_KIND_INT:
        if (n == f) return a;                    /* into, not taken */
        break;
    }
    /* N may be a handler entry: ask the frame. */
    uint8_t frame[48];
    int width = 0;
    uint64_t sp = 0, r = 0;
    int have = read_frame && read_frame(opaque, frame, &width, &sp) == 0;
    if (p->kind == TT_KIND_INDIRECT || p->kind == TT_KIND_INT) {
        uint64_t want[3] = {p->pc, p->kind == TT_KIND_INT ? f : 0, 0};
        if (have && tt_frame_return(frame, width, sp, want, 1, &r) && !(p->kind == TT_KIND_INT && r == f) && r != p->pc) {
            /* P completed to r, then an interrupt or exception came at r. */
            a.n = 2; a.from[0] = p->pc; a.to[0] = r; a.from[1] = r; a.to[1] = n; a.handler = 1;
            return a;
        }
        /* P's own transfer (an int n into its handler), or P faulted: P -> N either way. */
        a.n = 1; a.from[0] = p->pc; a.to[0] = n;
        a.handler = p->kind == TT_KIND_INT || (have && r == p->pc);
        return a;
    }
    uint64_t want[3] = {p->pc, f, (p->kind == TT_KIND_JCC || p->kind == TT_KIND_DIRECT) ? t : 0};
    a.handler = 1;
    if (have && tt_frame_return(frame, width, sp, want, 0, &r)) {
        if ((p->kind == TT_KIND_JCC || p->kind == TT_KIND_DIRECT) && r == t && !(p->kind == TT_KIND_JCC && t == f)) {
            a.n = 2; a.from[0] = p->pc; a.to[0] = t; a.from[1] = t; a.to[1] = n;
        } else {                                  /* fault at P (r == P) or interrupt/trap after it (r == f) */
            a.n = 1; a.from[0] = r; a.to[0] = n;
        }
        return a;
    }
    /* No frame explains it (SMM entry, reset, a frame not found): an asynchronous event
     * after P completed, from the next address, or P's own transfer for a CTI. */
    a.n = 1; a.from[0] = (p->kind == TT_KIND_NONE || p->kind == TT_KIND_REP) ? f : p->pc; a.to[0] = n;
    a.unexplained = 1; a.handler = 0;
    return a;
}

/* The plugin counts ahead: a direct transfer is counted (and its target stored in
 * EXPECTED) by inline operations before it runs, and the next block's start corrects
 * the prediction when the arrival differs (docs/qemu-plugin-shm.md). While the vCPU is
 * stopped, or after QEMU is gone, this puts the state in its settled form: LAST_PC..
 * describe the last instruction that ran, at the address it ran at; BRCTR counts the
 * transfers up to it, not its predicted one; the next block start classifies the arrival
 * there whatever it is. Idempotent; the controller calls it before it reads or saves. */
static inline void tt_settle(volatile uint8_t *shm) {
    volatile uint64_t *w = (volatile uint64_t *)shm;
    uint64_t packed = w[TT_SHM_OFF_LAST_INFO / 8];
    if (packed) {
        uint64_t kind = tt_packed_kind(packed), delta = w[TT_SHM_OFF_DELTA / 8];
        int direct = kind == TT_KIND_JCC || kind == TT_KIND_DIRECT;
        if (packed & TT_PACK_PREDICTED) w[TT_SHM_OFF_BRCTR / 8] -= 1;
        w[TT_SHM_OFF_INSNS / 8] -= tt_packed_ahead(packed);
        w[TT_SHM_OFF_LAST_PC / 8] = tt_packed_pc(packed) + delta;
        w[TT_SHM_OFF_LAST_SIZE / 8] = tt_packed_size(packed);
        w[TT_SHM_OFF_LAST_TARGET / 8] = direct ? w[TT_SHM_OFF_BRANCH_TARGET / 8] + delta : 0;
        w[TT_SHM_OFF_LAST_FLAGS / 8] = TT_SHM_FLAG_VALID | (kind == TT_KIND_REP ? TT_SHM_FLAG_REP : 0) |
                                       (packed & TT_PACK_REL16 ? TT_SHM_FLAG_REL16 : 0) |
                                       (packed & TT_PACK_SYSTEM ? TT_SHM_FLAG_SYSTEM : 0) | kind << TT_SHM_KIND_SHIFT;
        w[TT_SHM_OFF_LAST_INFO / 8] = 0;
    }
    w[TT_SHM_OFF_EXPECTED / 8] = TT_EXPECT_BLOCK_STARTED;
}

#endif
