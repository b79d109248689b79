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
#define TT_SHM_VERSION      1u
#define TT_SHM_HEADER_BYTES 4096u

/* Offsets (bytes) of the header fields. */
#define TT_SHM_OFF_MAGIC          0    /* u64, written by the controller */
#define TT_SHM_OFF_VERSION        8    /* u32 version, u32 header bytes */
#define TT_SHM_OFF_RING_CAPACITY  16   /* u64 records, a power of two; controller */
#define TT_SHM_OFF_BRCTR          24   /* u64 taken transfers counted by the plugin */
#define TT_SHM_OFF_INSNS          32   /* u64 instructions seen executing */
#define TT_SHM_OFF_LAST_PC        40   /* u64 address of the last instruction seen */
#define TT_SHM_OFF_LAST_SIZE      48   /* u64 its size; 0 = "arrival at LAST_PC already counted" */
#define TT_SHM_OFF_LAST_FLAGS     56   /* u64 bit0 LAST_PC valid, bit1 it is a rep string insn */
#define TT_SHM_OFF_TRACING        64   /* u64 0/1, written by the controller */
#define TT_SHM_OFF_TRACE_AFTER    72   /* u64 records only for brctr > this */
#define TT_SHM_OFF_RING_WAITS     80   /* u64 times the plugin waited for ring space */
#define TT_SHM_OFF_PLUGIN_PID     88   /* u64 pid of the QEMU that attached */
#define TT_SHM_OFF_RING_HEAD      128  /* u64 records ever produced (plugin), own cache line */
#define TT_SHM_OFF_RING_TAIL      192  /* u64 records ever consumed (controller), own cache line */

#define TT_SHM_FLAG_VALID 1ull
#define TT_SHM_FLAG_REP   2ull

/* One ring record: the transfer that took the counter to `brctr`. */
struct tt_shm_record {
    uint64_t from;
    uint64_t to;
    uint64_t brctr;
};

/* Atomics on the shared words, for the Swift side (Swift's Glibc module has none for
 * memory shared with another process). */
static inline uint64_t tt_load_relaxed(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline uint64_t tt_load_acquire(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void tt_store_relaxed(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
static inline void tt_store_release(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }

#endif
