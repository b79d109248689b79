/* Small C helpers for tt's Swift code where Swift's Glibc module falls short:
 * atomics on words shared with another process (the QEMU plugin's control file) and
 * process spawning with GNU extensions (new session, working directory, pidfd). */
#ifndef TT_SHIMS_H
#define TT_SHIMS_H
#include <stdint.h>
#include <sys/types.h>

static inline uint64_t tt_load_relaxed(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline uint64_t tt_load_acquire(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void tt_store_relaxed(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
static inline void tt_store_release(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }

/* posix_spawnp argv (NULL-terminated) in a new session with default signal dispositions
 * and an empty mask; cwd (may be NULL); stdin /dev/null; stdout+stderr appended to
 * output (NULL: /dev/null). Returns 0 or an errno value. */
int tt_spawn(char *const argv[], const char *cwd, const char *output, pid_t *pid);

/* pidfd_open(2), close-on-exec; -1 with errno on failure. */
int tt_pidfd_open(pid_t pid);
#endif
