/* The data movement of a small-message ping-pong without any protocol:
 * two processes, each pinned to its own core, pass a counter back and
 * forth through two cache lines of shared memory (each side stores into
 * its own line and polls the other's). Prints the one-way time, round
 * trip / 2: what a message of one line costs on this machine, against
 * which `courier bench latency` and the peers' 1–8-byte latencies compare.
 *
 * Build: cc -O2 -o latency_floor latency_floor.c
 * Usage: latency_floor [round trips (default 1000000)]
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct line {
    _Alignas(64) _Atomic uint64_t v;
    char pad[56];
};

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000, warm = 1000;
    struct line *l = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (l == MAP_FAILED) return 1;
    pid_t child = fork();
    int me = child == 0;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(me, &s);
    sched_setaffinity(0, sizeof s, &s);
    double t0 = 0;
    for (long i = 1; i <= n + warm; i++) {
        if (i == warm + 1) t0 = now();
        if (me == 0) {
            atomic_store_explicit(&l[0].v, i, memory_order_release);
            while (atomic_load_explicit(&l[1].v, memory_order_acquire) != (uint64_t)i)
                __builtin_ia32_pause();
        } else {
            while (atomic_load_explicit(&l[0].v, memory_order_acquire) != (uint64_t)i)
                __builtin_ia32_pause();
            atomic_store_explicit(&l[1].v, i, memory_order_release);
        }
    }
    if (!me) {
        printf("one-way %.3f us\n", (now() - t0) / n / 2 * 1e6);
        waitpid(child, 0, 0);
    }
    return 0;
}
