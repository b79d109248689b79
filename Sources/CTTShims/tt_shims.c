#define _GNU_SOURCE
#include "tt_shims.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* PATH lookup done in the parent: the child of a fork in a threaded process may only
 * call async-signal-safe functions, which execvp is not. */
static int resolve(const char *name, char *out, size_t size) {
    if (strchr(name, '/')) {
        if (strlen(name) >= size) return ENAMETOOLONG;
        strcpy(out, name);
        return access(out, X_OK) == 0 ? 0 : errno;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    int last = ENOENT;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (len > 0 && len + 1 + strlen(name) < size) {
            memcpy(out, path, len);
            out[len] = '/';
            strcpy(out + len + 1, name);
            if (access(out, X_OK) == 0) return 0;
            if (errno != ENOENT && errno != ENOTDIR) last = errno;
        }
        path += len;
        if (*path == ':') path++;
    }
    return last;
}

/* fork + prctl(PR_SET_PDEATHSIG) and/or sched_setaffinity + exec: what posix_spawn cannot
 * do. Failures in the child come back as an errno over a close-on-exec pipe (nothing read:
 * the exec happened). */
static int spawn_forked(char *const argv[], char *const envp[], const char *cwd, const int stdio[3],
                        int new_session, int death_signal, int cpu, pid_t *pid) {
    char program[PATH_MAX];
    int rc = resolve(argv[0], program, sizeof program);
    if (rc != 0) return rc;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t parent = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no handler of ours runs in the child */
    pid_t child = fork();
    if (child == 0) {
        int err = 0;
        if (death_signal > 0 && prctl(PR_SET_PDEATHSIG, death_signal) != 0) err = errno;
        else if (death_signal > 0 && getppid() != parent) err = ESRCH; /* the parent died before prctl */
        else if (new_session && setsid() < 0) err = errno;
        else if (cwd && chdir(cwd) != 0) err = errno;
        if (!err && cpu >= 0) {
            /* Before exec: every thread the program starts inherits the one CPU. */
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0) err = errno;
        }
        for (int i = 0; i < 3 && !err; i++) if (dup2(stdio[i], i) < 0) err = errno;
        if (!err) {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            for (int s = 1; s < 32; s++) if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execve(program, argv, envp ? envp : environ);
            err = errno;
        }
        (void)!write(report[1], &err, sizeof err);
        _exit(127);
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (child < 0) { close(report[0]); return saved; }
    int err = 0;
    ssize_t n;
    do { n = read(report[0], &err, sizeof err); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof err && err != 0) {
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
        return err;
    }
    *pid = child;
    return 0;
}

int tt_spawn(char *const argv[], char *const envp[], const char *cwd, const int stdio[3],
             int new_session, int death_signal, int cpu, pid_t *pid) {
    if (cpu >= CPU_SETSIZE) return EINVAL;
    if (death_signal > 0 || cpu >= 0) return spawn_forked(argv, envp, cwd, stdio, new_session, death_signal, cpu, pid);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT); sigaddset(&dfl, SIGTERM); sigaddset(&dfl, SIGHUP);
    sigaddset(&dfl, SIGPIPE); sigaddset(&dfl, SIGCHLD);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    posix_spawnattr_setflags(&at, flags);
    if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
    /* dup2 clears close-on-exec on the copy: the parent opens everything O_CLOEXEC. */
    for (int i = 0; i < 3; i++) posix_spawn_file_actions_adddup2(&fa, stdio[i], i);
    int rc = posix_spawnp(pid, argv[0], &fa, &at, argv, envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return rc;
}

int tt_reopen_for_writing(int fd, int direct) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return open(path, O_WRONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
}

int tt_allowed_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < capacity; c++) if (CPU_ISSET(c, &set)) cpus[n++] = c;
    return n;
}

int tt_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}
