/*
 * tt's QEMU TCG plugin: an exact taken-branch counter, an instruction counter and a
 * branch-record ring, all in a shared-memory control file the controller created
 * (plugin argument shm=PATH; layout in Sources/CTTPluginABI/include/ttplugin.h and docs/qemu-plugin-shm.md).
 *
 * Why per-instruction callbacks: a transfer is taken when the next executed
 * instruction is not at previous address + previous size. Per-TB callbacks are
 * cheaper but wrong (blocks are often left part-way). A `rep` string instruction that
 * executes again at its own address is one more iteration, not a branch: its prefixes
 * are decoded once, at translation.
 *
 * The plugin cannot stop the VM or read registers (QEMU 7.2); the controller reads and
 * writes the counters while the vCPU is stopped and drains the ring while it runs.
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

/* What the exec callback needs about one translated instruction. */
struct insn_info {
    uint64_t pc;
    uint64_t size;
    uint64_t flags; /* TT_SHM_FLAG_VALID | (TT_SHM_FLAG_REP if a rep string insn) */
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

/* Is this a rep/repne-prefixed string instruction (ins, outs, movs, cmps, stos, lods, scas)? */
static int is_rep_string(const uint8_t *b, size_t n) {
    int rep = 0;
    size_t i = 0;
    for (; i < n; i++) {
        uint8_t c = b[i];
        if (c == 0xf2 || c == 0xf3) rep = 1;
        else if (c == 0x66 || c == 0x67 || c == 0xf0 || c == 0x2e || c == 0x36 ||
                 c == 0x3e || c == 0x26 || c == 0x64 || c == 0x65) continue;
        else break;
    }
    if (!rep || i >= n) return 0;
    /* A REX prefix (64-bit mode) sits right before the opcode; in 32-bit code 0x4x is
     * inc/dec and then the instruction ends there, so i + 1 < n fails below. */
    if ((b[i] & 0xf0) == 0x40 && i + 1 < n) i++;
    uint8_t op = b[i];
    return (op >= 0x6c && op <= 0x6f) || (op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf);
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

static void on_exec(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    const struct insn_info *in = userdata;
    uint64_t last_pc = FIELD(TT_SHM_OFF_LAST_PC);
    uint64_t last_flags = FIELD(TT_SHM_OFF_LAST_FLAGS);
    if ((last_flags & TT_SHM_FLAG_VALID) && in->pc != last_pc + FIELD(TT_SHM_OFF_LAST_SIZE) &&
        !((last_flags & TT_SHM_FLAG_REP) && in->pc == last_pc)) {
        uint64_t n = FIELD(TT_SHM_OFF_BRCTR) + 1;
        FIELD(TT_SHM_OFF_BRCTR) = n;
        if (FIELD(TT_SHM_OFF_TRACING) && n > FIELD(TT_SHM_OFF_TRACE_AFTER))
            append_record(last_pc, in->pc, n);
    }
    FIELD(TT_SHM_OFF_LAST_PC) = in->pc;
    FIELD(TT_SHM_OFF_LAST_SIZE) = in->size;
    FIELD(TT_SHM_OFF_LAST_FLAGS) = in->flags;
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
        in->flags = TT_SHM_FLAG_VALID | (is_rep_string(bytes, got) ? TT_SHM_FLAG_REP : 0);
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
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
