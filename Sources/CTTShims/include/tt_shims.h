/* Small C helpers for TTSystem where Swift's Glibc module falls short: process spawning
 * with GNU extensions (new session, working directory, pidfd). */
#ifndef TT_SHIMS_H
#define TT_SHIMS_H
#include <stdint.h>
#include <sys/types.h>

/* Start argv (NULL-terminated; argv[0] looked up in PATH) with envp (NULL: this
 * process's environment), default signal dispositions and an empty mask, in a new
 * session when new_session. The child's descriptors 0, 1, 2 are stdio[0..2] (dup2'd in
 * that order, so each must be above 2 or already the right number); cwd may be NULL.
 * death_signal > 0: the child gets that signal when this process dies, however it dies
 * (PR_SET_PDEATHSIG; the spawning thread must live as long as the process — tt spawns
 * from its main thread). cpu >= 0: the child and every thread it starts run on that CPU
 * only (sched_setaffinity before exec). Returns 0 or an errno value (also one from the
 * child's exec). */
int tt_spawn(char *const argv[], char *const envp[], const char *cwd, const int stdio[3],
             int new_session, int death_signal, int cpu, pid_t *pid);

/* The CPUs this thread may run on (sched_getaffinity), ascending, at most capacity of
 * them; their number, or -1 with errno. */
int tt_allowed_cpus(int *cpus, int capacity);

/* The file open at fd opened again for writing (O_DIRECT when direct), close-on-exec,
 * through /proc/self/fd (the same file, whatever its path names now); -1 with errno. */
int tt_reopen_for_writing(int fd, int direct);

/* pidfd_open(2), close-on-exec; -1 with errno on failure. */
int tt_pidfd_open(pid_t pid);
#endif
