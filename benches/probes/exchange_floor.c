/* The data movement of a 2-rank all-gather of B bytes per rank, without
 * any protocol: two processes, each pinned to its own core, each copying
 * its own block into its receive buffer (memcpy) and pulling the other's
 * block straight out of the other's memory (process_vm_readv, the single
 * copy Courier and the peers use), N times. No process waits for the other
 * between iterations, so this is a lower bound on any implementation's
 * time per all-gather on this machine.
 *
 * Not an all-to-all's: here the pulled block is the one its owner has just
 * read for its own copy, so it comes from that core's cache; an
 * all-to-all pulls the block meant for the puller, which its owner never
 * touches. On the AMD EPYC VM, 1 MiB, vCPUs sharing caches: about 100 µs
 * here against 172 µs for `alltoall_floor 2` (see that probe).
 *
 * Build: cc -O2 -o exchange_floor exchange_floor.c
 * Usage: exchange_floor [iterations-scale]   (prints size and µs per iteration)
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    size_t max = 1 << 20;
    int up[2], down[2];
    if (pipe(up) || pipe(down)) return 1;
    /* Both processes allocate before the fork: same addresses in each. */
    char *send = aligned_alloc(4096, max), *recv = aligned_alloc(4096, 2 * max);
    memset(send, 1, max);
    memset(recv, 0, 2 * max);
    pid_t parent = getpid();
    pid_t child = fork();
    int me = child == 0;
    pid_t peer = me ? parent : child;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(me, &set);
    sched_setaffinity(0, sizeof set, &set);
    memset(send, me + 1, max);
    for (size_t b = 16384; b <= max; b *= 2) {
        long n = (long)(scale * (b <= 65536 ? 20000 : 2000));
        char c = 0;
        /* Start together. */
        if (me) {
            if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1) return 1;
        } else {
            if (read(up[0], &c, 1) != 1 || write(down[1], &c, 1) != 1) return 1;
        }
        double t0 = now();
        for (long i = 0; i < n; i++) {
            memcpy(recv + (size_t)me * b, send, b);
            struct iovec local = {recv + (size_t)(1 - me) * b, b};
            struct iovec remote = {send, b};
            if (process_vm_readv(peer, &local, 1, &remote, 1, 0) != (ssize_t)b) {
                perror("process_vm_readv");
                return 1;
            }
        }
        double us = (now() - t0) * 1e6 / n;
        /* Finish together: the other's memory must stay until both are done. */
        if (me) {
            if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1) return 1;
        } else {
            if (read(up[0], &c, 1) != 1 || write(down[1], &c, 1) != 1) return 1;
        }
        if (!me) printf("%8zu %10.2f\n", b, us);
        fflush(stdout);
    }
    if (!me) waitpid(child, NULL, 0);
    return 0;
}
