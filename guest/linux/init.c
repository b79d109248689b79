/*
 * init for tt's small Linux guest: prints a few lines to the console, does some
 * work worth tracing (reads /proc/uptime, forks a child), then powers the machine off.
 * Built static so the initramfs needs nothing else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/reboot.h>
#include <sys/mount.h>
#include <sys/wait.h>

static unsigned long checksum(const char *s) {
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

int main(void) {
    mount("proc", "/proc", "proc", 0, NULL);
    printf("tt-linux-guest: init running as pid %d\n", getpid());
    char buf[128] = {0};
    int fd = open("/proc/uptime", O_RDONLY);
    if (fd >= 0) { ssize_t n = read(fd, buf, sizeof buf - 1); if (n > 0) buf[n] = 0; close(fd); }
    printf("tt-linux-guest: uptime %s", buf);
    pid_t child = fork();
    if (child == 0) { printf("tt-linux-guest: child checksum %lu\n", checksum(buf)); _exit(0); }
    int status = 0;
    waitpid(child, &status, 0);
    printf("tt-linux-guest: done, powering off\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
