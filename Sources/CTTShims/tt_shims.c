#define _GNU_SOURCE
#include "tt_shims.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

int tt_spawn(char *const argv[], char *const envp[], const char *cwd, const int stdio[3],
             int new_session, pid_t *pid) {
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

int tt_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}
