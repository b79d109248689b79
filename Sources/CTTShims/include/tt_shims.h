/* Small C helpers for TTSystem where Swift's Glibc module falls short: process spawning
 * with GNU extensions (new session, working directory, pidfd). */
#ifndef TT_SHIMS_H
#define TT_SHIMS_H
#include <stdint.h>
#include <sys/types.h>

/* posix_spawnp argv (NULL-terminated) in a new session with default signal dispositions
 * and an empty mask; cwd (may be NULL); stdin /dev/null; stdout+stderr appended to
 * output (NULL: /dev/null). Returns 0 or an errno value. */
int tt_spawn(char *const argv[], const char *cwd, const char *output, pid_t *pid);

/* pidfd_open(2), close-on-exec; -1 with errno on failure. */
int tt_pidfd_open(pid_t pid);
#endif
