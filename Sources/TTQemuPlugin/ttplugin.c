/*
 * tt's QEMU TCG plugin (QEMU 10, plugin API v4): an exact transfer counter, an instruction
 * counter and a branch-record ring, all in a shared-memory control file the controller
 * created (plugin argument shm=PATH; layout in Sources/CTTPluginABI/include/ttplugin.h and
 * docs/qemu-plugin-shm.md). What a transfer is: docs/bts.md.
 *
 * Every instruction is decoded once, at translation, into its kind as a transfer (none,
 * rep string, conditional direct, unconditional direct, indirect/far/system, software
 * interrupt) and direct target. The common path makes no call: inline operations store
 * each instruction (packed) as it starts and count it, and the instruction that ends a
 * block's straight line stores where it leads and counts its transfer when that is
 * foreseeable (a direct jump or call; a conditional jump, predicted taken). A block start
 * that is not where the prediction led calls on_block_start, which undoes the prediction
 * and applies the shared classification (tt_classify_arrival) to the last instruction that
 * started, P, and the block's first, N: P's own transfer (also when its target is the next
 * instruction), none (fall-through, rep iteration), or an interrupt or exception, whose
 * source comes from the frame the CPU pushed (read with qemu_plugin_read_register and
 * qemu_plugin_read_memory_vaddr at N, a block start where the guest registers are in
 * memory). While tracing, blocks are translated foreseeing no transfer, so that every
 * transfer reaches on_block_start and gets its record (QEMU's translations are dropped
 * when tracing is switched).
 *
 * Single vCPU only (QEMU record/replay supports one).
 */
#define _GNU_SOURCE
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

static volatile uint8_t *shm;          /* the mapped control file */
/* Its header page as the plugin's C code reads and writes it: once vCPU 0 exists, the
 * alias inside the scoreboard entry that the inline operations write. Through the same
 * address, a load right after an inline store is forwarded from it; through the other
 * mapping of the same page the CPU detects the overlap late and replays (measured: 42% of
 * the callback's time on its first load). */
static volatile uint8_t *hdr;
static struct tt_shm_record *ring;
static uint64_t ring_mask;

#define FIELD(off) (*(volatile uint64_t *)(hdr + (off)))

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

/* Can this instruction neither fault nor leave its block early (an I/O access QEMU
 * re-executes alone)? Register-to-register arithmetic, moves and immediates, lea, nop:
 * no memory operand (ModRM mod 3, except lea, which never accesses memory), no lock
 * prefix, no division, no segment or control register, no pause. Only such instructions
 * skip storing themselves in LAST_INFO: a block left early is always left at one that
 * stored itself. Conservative: anything not listed stores. */
static int cannot_leave_block(const uint8_t *b, size_t n) {
    size_t i = 0;
    for (; i < n; i++) {
        uint8_t c = b[i];
        if (c == 0xf0 || c == 0xf2 || c == 0xf3) return 0;     /* lock, rep/pause */
        if (c == 0x66 || c == 0x67 || c == 0x2e || c == 0x36 || c == 0x3e || c == 0x26 || c == 0x64 || c == 0x65) continue;
        break;
    }
    if (i < n && (b[i] & 0xf0) == 0x40 && i + 1 < n) i++;   /* REX (64-bit code) */
    if (i >= n) return 0;
    uint8_t op = b[i];
    int reg_form = i + 1 < n && (b[i + 1] >> 6) == 3;
    if (op >= 0xb0 && op <= 0xbf) return 1;                    /* mov r, imm */
    if (op >= 0x91 && op <= 0x97) return 1;                    /* xchg eAX, r */
    if (op == 0x90) return 1;                                  /* nop (pause has a rep prefix) */
    if (op == 0x8d) return i + 1 < n && !reg_form;             /* lea (mod 3 is #UD) */
    if (op < 0x40 && (op & 7) <= 3) return reg_form;           /* add..cmp r/m, r and r, r/m */
    if (op == 0x84 || op == 0x85 || op == 0x86 || op == 0x87 || (op >= 0x88 && op <= 0x8b) || op == 0x63)
        return reg_form;                                       /* test, xchg, mov, movsxd */
    if (op == 0x80 || op == 0x81 || op == 0x83 || op == 0xc0 || op == 0xc1 || (op >= 0xd0 && op <= 0xd3))
        return reg_form;                                       /* group 1 immediates, shifts */
    if (op == 0xf6 || op == 0xf7) return reg_form && ((b[i + 1] >> 3) & 7) < 6;   /* not div, idiv */
    if (op == 0xfe || op == 0xff) return reg_form && ((b[i + 1] >> 3) & 7) < 2;   /* inc, dec */
    if (op == 0x0f && i + 2 < n) {
        uint8_t op2 = b[i + 1];
        int reg2 = (b[i + 2] >> 6) == 3;
        if ((op2 >= 0x40 && op2 <= 0x4f) || (op2 >= 0x90 && op2 <= 0x9f) || op2 == 0xaf || op2 == 0xb6 ||
            op2 == 0xb7 || op2 == 0xbe || op2 == 0xbf || op2 == 0xa3 || op2 == 0xab || op2 == 0xb3 ||
            op2 == 0xbb || op2 == 0xbc || op2 == 0xbd || op2 == 0xa4 || op2 == 0xa5 || op2 == 0xac || op2 == 0xad)
            return reg2;                                       /* cmov, setcc, imul, movzx/sx, bt*, bsf/bsr, shld/shrd */
        if (op2 == 0x1f) return 1;                             /* nop r/m (no access) */
    }
    if (op == 0x0f && i + 1 < n && b[i + 1] >= 0xc8 && b[i + 1] <= 0xcf) return 1;   /* bswap */
    return 0;
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

static int alias_header_into_scoreboard(void);

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index) {
    (void)id;
    if (vcpu_index != 0) { qemu_plugin_outs("ttplugin: more than one vCPU: not supported\n"); abort(); }
    if (alias_header_into_scoreboard() != 0) {
        qemu_plugin_outs("ttplugin: cannot map the control file's header into a scoreboard\n");
        abort();
    }
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
 * high addresses). The running block's relocation (DELTA in the control file) is found
 * at its start: carried over when it starts where its predecessor's translation leads,
 * else read from the vCPU's instruction pointer (see docs/bts.md for the one case where
 * it is not read). */

/* The address of the block about to run, if it is an alias of translated address n:
 * only with paging on, and only at the same page offset (aliases map the same page). */
static uint64_t current_pc(uint64_t n) {
    if (!reg_rip || !reg_cr0) return 0;
    if ((read_reg(reg_cr0) & 0x80000001u) != 0x80000001u) return 0;   /* no paging, no aliases */
    uint64_t a = read_reg(reg_rip);                                    /* flat code segments */
    return ((a ^ n) & 0xfff) == 0 ? a : 0;
}

/* How the blocks in QEMU's cache were translated: for counting (direct transfers counted
 * ahead, no call where the prediction holds) or for tracing (no transfer foreseen, so that
 * every transfer reaches on_block_start and gets its record). The controller switches
 * tracing only while the vCPU is stopped, after settling the counters, so the first block
 * start after it calls on_block_start, which asks QEMU to drop its translations; QEMU does
 * that before the next block (the request stops the vCPU loop), and on_retranslate
 * settles the counters again so that the next block start is classified whatever it is. */
static qemu_plugin_id_t plugin_id;
static int translated_for_tracing, retranslation_pending;
static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

static void on_retranslate(qemu_plugin_id_t id) {
    translated_for_tracing = FIELD(TT_SHM_OFF_TRACING) != 0;
    retranslation_pending = 0;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    tt_settle(hdr);
}

/* A block starts (translation address n) where its predecessor's prediction did not
 * lead: a conditional jump not taken, an indirect transfer, an interrupt or exception, a
 * block left early (an exception, an I/O instruction QEMU re-executes alone), or the
 * first block after the controller settled the state. Undo the prediction, classify the
 * arrival with the one rule (tt_classify_arrival) and count it. */
static void classify_block_start(uint64_t n_trans, uint64_t packed);

static void on_block_start(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    uint64_t n_trans = (uint64_t)(uintptr_t)userdata;
    uint64_t packed = FIELD(TT_SHM_OFF_LAST_INFO);
    /* The most frequent case by far, kept small (no frame, no stack): a conditional jump
     * predicted taken fell through (no transfer; the block runs where its translation
     * is, as its predecessor did). */
    if ((packed & (TT_PACK_PREDICTED | 7ull << 52)) == (TT_PACK_PREDICTED | (uint64_t)TT_KIND_JCC << 52) &&
        n_trans == tt_packed_pc(packed) + tt_packed_size(packed) &&
        (FIELD(TT_SHM_OFF_TRACING) != 0) == translated_for_tracing) {
        FIELD(TT_SHM_OFF_BRCTR) -= 1;
        return;
    }
    classify_block_start(n_trans, packed);
}

static __attribute__((noinline)) void classify_block_start(uint64_t n_trans, uint64_t packed) {
    if ((FIELD(TT_SHM_OFF_TRACING) != 0) != translated_for_tracing && !retranslation_pending) {
        retranslation_pending = 1;
        qemu_plugin_reset(plugin_id, on_retranslate);
    }
    struct tt_insn p;          /* the last instruction that started, translation addresses */
    uint64_t p_delta, flags;
    if (packed) {
        p_delta = FIELD(TT_SHM_OFF_DELTA);
        p.pc = tt_packed_pc(packed);
        p.size = tt_packed_size(packed);
        p.kind = tt_packed_kind(packed);
        p.rel16 = (packed & TT_PACK_REL16) != 0;
        p.target = (p.kind == TT_KIND_JCC || p.kind == TT_KIND_DIRECT) ? FIELD(TT_SHM_OFF_BRANCH_TARGET) : 0;
        flags = TT_SHM_FLAG_VALID | (packed & TT_PACK_SYSTEM ? TT_SHM_FLAG_SYSTEM : 0);
        if (packed & TT_PACK_PREDICTED) FIELD(TT_SHM_OFF_BRCTR) -= 1;
        FIELD(TT_SHM_OFF_INSNS) -= tt_packed_ahead(packed);
    } else {                   /* settled: real addresses */
        p_delta = 0;
        flags = FIELD(TT_SHM_OFF_LAST_FLAGS);
        p.pc = FIELD(TT_SHM_OFF_LAST_PC);
        p.size = FIELD(TT_SHM_OFF_LAST_SIZE);
        p.kind = (flags >> TT_SHM_KIND_SHIFT) & 15;
        p.target = FIELD(TT_SHM_OFF_LAST_TARGET);
        p.rel16 = (flags & TT_SHM_FLAG_REL16) != 0;
    }
    int valid = (flags & TT_SHM_FLAG_VALID) != 0;
    uint64_t f = p.pc + p.size;
    int expected = !valid || n_trans == f || n_trans == p.pc ||
                   ((p.kind == TT_KIND_DIRECT || p.kind == TT_KIND_JCC) && tt_is_target(&p, n_trans));
    uint64_t delta = p_delta;
    if (!expected) {
        delta = 0;
        int plain_indirect = p.kind == TT_KIND_INDIRECT && !(flags & TT_SHM_FLAG_SYSTEM);
        if (!plain_indirect || ((n_trans ^ (p.pc + p_delta)) >> 63) != 0) {
            uint64_t a = current_pc(n_trans);
            if (a) delta = a - n_trans;
        }
    }
    FIELD(TT_SHM_OFF_DELTA) = delta;
    p.pc += p_delta;
    p.target += p_delta;
    uint64_t n = n_trans + delta;
    if (!valid || (p.kind == TT_KIND_NONE && n == p.pc + p.size)) return;
    volatile uint64_t *handlers = (volatile uint64_t *)(hdr + TT_SHM_OFF_HANDLERS);
    struct tt_arrival a = tt_classify_arrival(&p, n, handlers, plugin_read_frame, NULL);
    for (int k = 0; k < a.n; k++) count(a.from[k], a.to[k]);
    if (a.handler) tt_handler_learn(handlers, n);
    if (a.unexplained) {
        FIELD(TT_SHM_OFF_UNEXPLAINED) += 1;
        if (debug_unexplained > 0) {
            debug_unexplained--;
            uint8_t fr[48]; int w = 0; uint64_t sp = 0;
            int ok = plugin_read_frame(NULL, fr, &w, &sp);
            char line[256];
            snprintf(line, sizeof line, "ttplugin: unexplained %#" PRIx64 " (kind %d size %d) -> %#" PRIx64 " frame ok=%d w=%d sp=%#" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
                     p.pc, (int)p.kind, (int)p.size, n, ok == 0, w, sp, tt_le(fr, 8), tt_le(fr + 8, 8), tt_le(fr + 16, 8));
            qemu_plugin_outs(line);
        }
    }
}

/* The control file's header page, mapped a second time inside a scoreboard entry: inline
 * operations can only address scoreboards, and the controller must see what they write. */
static qemu_plugin_u64 sb_brctr, sb_insns, sb_last_info, sb_expected, sb_branch_target;
static struct qemu_plugin_scoreboard *board;
static int control_fd = -1;

/* When vCPU 0 exists (scoreboard entries can be found only then, and QEMU translates
 * nothing before): map the header page over the page-aligned middle of its entry. */
static int alias_header_into_scoreboard(void) {
    size_t page = TT_SHM_HEADER_BYTES;
    uint8_t *entry = qemu_plugin_scoreboard_find(board, 0);
    uint8_t *header = (uint8_t *)(((uintptr_t)entry + page - 1) & ~(uintptr_t)(page - 1));
    void *alias = mmap(header, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, control_fd, 0);
    close(control_fd);
    control_fd = -1;
    if (alias == MAP_FAILED) return -1;
    hdr = header;
    size_t base = (size_t)(header - entry);
    sb_brctr = (qemu_plugin_u64){board, base + TT_SHM_OFF_BRCTR};
    sb_insns = (qemu_plugin_u64){board, base + TT_SHM_OFF_INSNS};
    sb_last_info = (qemu_plugin_u64){board, base + TT_SHM_OFF_LAST_INFO};
    sb_expected = (qemu_plugin_u64){board, base + TT_SHM_OFF_EXPECTED};
    sb_branch_target = (qemu_plugin_u64){board, base + TT_SHM_OFF_BRANCH_TARGET};
    return 0;
}

/* Every block: the prediction check, then "started" in EXPECTED. Every instruction:
 * itself into LAST_INFO; the block's instructions counted ahead, 32 at a time. The block's
 * last instruction: where it leads into EXPECTED. Translated for counting: a direct jump or
 * call, and a conditional jump predicted taken, lead to their target and count +1; an
 * instruction with no transfer of its own (and a conditional jump to the next
 * instruction) to the next one; an indirect transfer or software interrupt nowhere
 * foreseeable. Translated for tracing, no transfer is foreseen: conditional jumps lead to
 * the next instruction, direct jumps and calls nowhere. */
static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t tb_pc = qemu_plugin_tb_vaddr(tb);
    qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, on_block_start, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_NE,
                                              sb_expected, tb_pc, (void *)(uintptr_t)tb_pc);
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_STORE_U64, sb_expected, TT_EXPECT_BLOCK_STARTED);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn), size = qemu_plugin_insn_size(insn), target = 0;
        uint8_t bytes[16];
        size_t got = qemu_plugin_insn_data(insn, bytes, sizeof bytes);
        int rel16 = 0, system = 0;
        uint64_t kind = decode_kind(bytes, got < size ? got : size, pc, &target, &rel16, &system);
        uint64_t next = pc + size;
        int last = i == n - 1;
        int predicted = !translated_for_tracing && last && (kind == TT_KIND_DIRECT || (kind == TT_KIND_JCC && target != next));
        /* Instructions are counted ahead, per 32 (one addition instead of one each). */
        size_t chunk = i / (TT_PACK_AHEAD_MAX + 1) * (TT_PACK_AHEAD_MAX + 1);
        size_t chunk_end = chunk + TT_PACK_AHEAD_MAX + 1 < n ? chunk + TT_PACK_AHEAD_MAX + 1 : n;
        if (i == chunk)
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64, sb_insns, chunk_end - chunk);
        if (!tt_packable(pc) || (!last && kind != TT_KIND_NONE && kind != TT_KIND_REP)) {
            /* Neither happens with QEMU 10's x86 translator (blocks end at every transfer)
             * nor in 4-level paging; if it ever does, say so rather than count wrong. */
            char line[160];
            snprintf(line, sizeof line, "ttplugin: %s at %#" PRIx64 ": counts are not exact\n",
                     tt_packable(pc) ? "a transfer inside a block" : "an address beyond 48 bits", pc);
            qemu_plugin_outs(line);
            FIELD(TT_SHM_OFF_UNEXPLAINED) += 1;
        }
        /* The last instruction always stores itself (its successor classifies against it);
         * one that cannot leave the block early need not: the next one that can, stores. */
        if (last || !cannot_leave_block(bytes, got < size ? got : size))
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_STORE_U64, sb_last_info,
                                                                tt_pack_insn(pc, size, kind, rel16, system, predicted,
                                                                             chunk_end - 1 - i));
        if (!last) continue;
        if (kind == TT_KIND_JCC || kind == TT_KIND_DIRECT) {
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_STORE_U64, sb_branch_target, target);
            uint64_t leads = predicted ? target : kind == TT_KIND_JCC ? next : TT_EXPECT_NONE;
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_STORE_U64, sb_expected, leads);
            if (predicted)
                qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64, sb_brctr, 1);
        } else if (kind == TT_KIND_INDIRECT || kind == TT_KIND_INT) {
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_STORE_U64, sb_expected, TT_EXPECT_NONE);
        } else {
            qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_STORE_U64, sb_expected, next);
        }
    }
}

static int fail(const char *what, const char *path) {
    char line[512];
    snprintf(line, sizeof line, "ttplugin: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    qemu_plugin_outs(line);
    return -1;
}

/* Map the controller's file (without shm=, a private one nobody reads), and its header
 * page again inside a scoreboard entry for the inline operations. The entry is never
 * freed or moved: QEMU resizes scoreboards only for vCPU indexes beyond the 16 it
 * allocates at first, and record/replay runs one vCPU. */
static int map_control(const char *path) {
    int fd;
    if (!path) {
        fd = memfd_create("ttplugin", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, TT_SHM_HEADER_BYTES + 64 * sizeof(struct tt_shm_record)) != 0)
            return fail("cannot allocate the counters", NULL);
    } else {
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) return fail("cannot open the control file", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < TT_SHM_HEADER_BYTES) {
        close(fd);
        return fail("control file too small", path);
    }
    void *p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { close(fd); return fail("cannot map the control file", path); }
    shm = p;
    hdr = shm;
    if (!path) {
        FIELD(TT_SHM_OFF_MAGIC) = TT_SHM_MAGIC;
        FIELD(TT_SHM_OFF_RING_CAPACITY) = 64;
    }
    uint64_t cap = FIELD(TT_SHM_OFF_RING_CAPACITY);
    if (FIELD(TT_SHM_OFF_MAGIC) != TT_SHM_MAGIC || cap == 0 || (cap & (cap - 1)) != 0 ||
        TT_SHM_HEADER_BYTES + cap * sizeof(struct tt_shm_record) > (uint64_t)st.st_size) {
        close(fd);
        return fail("not a tt control file (magic, ring capacity or size wrong)", path);
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (page != TT_SHM_HEADER_BYTES) { close(fd); return fail("the page size is not the control file's header size", path); }
    control_fd = fd;
    board = qemu_plugin_scoreboard_new(3 * page);
    ring = (struct tt_shm_record *)(shm + TT_SHM_HEADER_BYTES);
    ring_mask = FIELD(TT_SHM_OFF_RING_CAPACITY) - 1;
    /* Whatever state the controller left: the first block start classifies its arrival. */
    tt_settle(hdr);
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

    plugin_id = id;
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
