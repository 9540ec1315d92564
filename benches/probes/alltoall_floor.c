/* The data movement of an all-to-all of B bytes per pair on P processes,
 * without any protocol: each process copies its own block into its receive
 * buffer (memcpy) and pulls its block out of each other process's send
 * buffer (process_vm_readv, the single copy Courier and the peers use),
 * N times, with no waiting for anyone between iterations. The processes
 * are not pinned, so with more processes than cores (4 on this 2-vCPU
 * machine) the scheduler shares the cores out as it does for a job's
 * ranks. Prints the wall time from the first start to the last finish,
 * per iteration: a lower bound on any implementation's time per
 * all-to-all here (`courier bench alltoall -n P`, osu_alltoall).
 *
 * With `sync`, the processes also pass a barrier after every iteration
 * (each waits, yielding its core, until all have arrived): the one
 * synchronisation any all-to-all needs, since no process may return
 * before its receive buffer is complete, nor change its send buffer
 * while another still reads it.
 *
 * With `shared`, the send buffers lie in one mapping all processes see
 * (as XPMEM or a shared-memory allocator would give them), and each
 * process copies its blocks out of the others' with a plain memcpy: one
 * copy per block and no system call, the least data movement any
 * all-to-all between processes can have. Courier cannot reach into a
 * user's buffer that way (it copies through its arena, or pulls by
 * cross-memory attach), nor can the peers without XPMEM; this bounds
 * everyone from below.
 *
 * Build: cc -O2 -o alltoall_floor alltoall_floor.c
 * Usage: alltoall_floor [processes (default 4)] [iterations-scale] [sync] [shared]
 *        (prints block size and µs per iteration)
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXP 64

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct shared {
    _Atomic long arrived;
    pid_t pid[MAXP];
    double start[MAXP], end[MAXP];
};

/* Every process waits for all `p` to arrive at barrier number `k`
 * (1, 2, ...), yielding its core while it waits. */
static void barrier(struct shared *sh, int p, long k) {
    atomic_fetch_add(&sh->arrived, 1);
    while (atomic_load(&sh->arrived) < k * p) sched_yield();
}

int main(int argc, char **argv) {
    int p = argc > 1 ? atoi(argv[1]) : 4;
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    int sync = 0, shared = 0;
    for (int a = 3; a < argc; a++) {
        if (strcmp(argv[a], "sync") == 0) sync = 1;
        else if (strcmp(argv[a], "shared") == 0) shared = 1;
        else return 1;
    }
    size_t max = 1 << 20;
    if (p < 2 || p > MAXP) return 1;
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 1;
    memset(sh, 0, sizeof *sh);
    /* Every process allocates before the forks: same addresses in each. */
    char *send = aligned_alloc(4096, (size_t)p * max);
    char *recv = aligned_alloc(4096, (size_t)p * max);
    if (!send || !recv) return 1;
    /* With `shared`: process r's send buffer is all_send + r * p * max. */
    char *all_send = NULL;
    if (shared) {
        all_send = mmap(NULL, (size_t)p * p * max, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (all_send == MAP_FAILED) return 1;
    }
    int me = 0;
    for (int r = 1; r < p; r++) {
        pid_t c = fork();
        if (c == 0) {
            me = r;
            break;
        }
    }
    sh->pid[me] = getpid();
    if (shared) send = all_send + (size_t)me * p * max;
    memset(send, me + 1, (size_t)p * max);
    memset(recv, 0, (size_t)p * max);
    long k = 0;
    barrier(sh, p, ++k);
    for (size_t b = 65536; b <= max; b *= 2) {
        long n = (long)(scale * 100);
        barrier(sh, p, ++k);
        sh->start[me] = now();
        for (long i = 0; i < n; i++) {
            memcpy(recv + (size_t)me * b, send + (size_t)me * b, b);
            for (int s = 1; s < p; s++) {
                int from = (me + p - s) % p;
                if (shared) {
                    const char *theirs = all_send + (size_t)from * p * max;
                    memcpy(recv + (size_t)from * b, theirs + (size_t)me * b, b);
                    continue;
                }
                struct iovec local = {recv + (size_t)from * b, b};
                struct iovec remote = {send + (size_t)me * b, b};
                if (process_vm_readv(sh->pid[from], &local, 1, &remote, 1, 0) != (ssize_t)b) {
                    perror("process_vm_readv");
                    return 1;
                }
            }
            if (sync) barrier(sh, p, ++k);
        }
        sh->end[me] = now();
        /* Finish together: the others' memory must stay until all are done. */
        barrier(sh, p, ++k);
        if (me == 0) {
            double first = sh->start[0], last = sh->end[0];
            for (int r = 1; r < p; r++) {
                if (sh->start[r] < first) first = sh->start[r];
                if (sh->end[r] > last) last = sh->end[r];
            }
            printf("%8zu %10.2f\n", b, (last - first) * 1e6 / n);
            fflush(stdout);
        }
    }
    barrier(sh, p, ++k);
    if (me == 0)
        while (wait(NULL) > 0) {
        }
    return 0;
}
