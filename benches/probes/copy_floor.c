/* What a 2-rank all-to-all's copies cost if moving a block between
 * processes cost no more than moving it within one: two processes, each
 * pinned to its own core, each copy two blocks of B bytes (its own and,
 * standing in for the peer's, another local one) into a receive buffer,
 * at the same time, N times. Prints µs per iteration on each rank. Set
 * against `exchange_floor.c` (the same with one block pulled from the
 * other process) and `courier bench alltoall -n 2`.
 *
 * Build: cc -O2 -o copy_floor copy_floor.c
 * Usage: copy_floor [block bytes (default 1048576)] [iterations (default 2000)]
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t b = argc > 1 ? atol(argv[1]) : 1 << 20;
    int n = argc > 2 ? atoi(argv[2]) : 2000;
    pid_t child = fork();
    int me = child == 0;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(me, &s);
    sched_setaffinity(0, sizeof s, &s);
    char *src = malloc(2 * b), *dst = malloc(2 * b);
    if (!src || !dst) return 1;
    memset(src, 1, 2 * b);
    memset(dst, 0, 2 * b);
    for (int i = 0; i < 100; i++) memcpy(dst, src, 2 * b);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        memcpy(dst, src, b);
        memcpy(dst + b, src + b, b);
    }
    printf("rank %d: %zu-byte blocks: %.1f us per iteration\n", me, b, (now() - t0) / n * 1e6);
    if (!me) waitpid(child, 0, 0);
    return dst[b] != 1;
}
