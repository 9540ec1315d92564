/* The data movement of a medium-message ping-pong without any protocol:
 * two processes, each pinned to its own core, pass a message of SIZE
 * bytes back and forth through shared memory. The sender copies it from
 * its own (cached) buffer into a shared area, in chunks of CHUNK bytes,
 * publishing a counter after each chunk; the receiver follows the counter
 * and copies each chunk out into its own buffer, then answers the same
 * way. With CHUNK = SIZE the copies run one after the other (one record);
 * smaller chunks let the receiver copy while the sender still writes (a
 * pipeline of records). Prints the one-way time, round trip / 2: the
 * floor of any eager protocol that copies a message in and out, against
 * which `courier bench latency` and the peers' 1–16 KiB latencies compare.
 *
 * With `ring` as the fourth argument the message goes as one record laid
 * out as in Courier's ring instead: an 8-byte header (stamp and length)
 * then the payload, at advancing places over 1 MiB per direction, the
 * header written last and polled by the receiver (no separate flag line).
 * Which layout is faster depends on the VM's placement: in one sitting
 * the fixed area took 1.12-1.16x the time of advancing places at 4 KiB
 * (15 rounds; the writer took its lines back from the reader's cache),
 * in another, with the vCPUs sharing caches, 0.87x at 4 KiB and 0.82x
 * at 8 KiB (10 rounds). `benches/floors.sh` takes the faster per round.
 *
 * Build: cc -O2 -o medium_latency_floor medium_latency_floor.c
 * Usage: medium_latency_floor SIZE [CHUNK (default SIZE)] [round trips (default 200000)] [ring]
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct dir {
    _Alignas(64) _Atomic uint64_t published; /* bytes published, over all messages */
    char pad[56];
};

/* `bytes` of zeroed memory shared with the child about to be forked (NULL on failure). */
static char *shared_zeroed(size_t bytes) {
    char *p = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* Forks; each process pins itself to its own core (parent 0, child 1).
 * Returns 1 in the child, 0 in the parent, and the child's pid there. */
static int fork_pinned(pid_t *child) {
    *child = fork();
    int me = *child == 0;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(me, &s);
    sched_setaffinity(0, sizeof s, &s);
    return me;
}

/* The `ring` layout: one record per message, header last. */
static int ring_pingpong(size_t size, long n, long warm) {
    const size_t lap = 1 << 20;
    size_t foot = (8 + size + 63) & ~(size_t)63, steps = lap / foot;
    if (steps == 0) return 2;
    size_t region = steps * foot;
    char *shm = shared_zeroed(2 * region);
    if (!shm) return 1;
    pid_t child;
    int me = fork_pinned(&child);
    char *out = shm + me * region, *in = shm + (1 - me) * region;
    char *src = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    char *dst = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    memset(src, me + 1, size);
    memset(dst, 0, size);
    double t0 = 0;
    for (long i = 0; i < n + warm; i++) {
        if (i == warm) t0 = now();
        uint64_t k = (uint64_t)(i / 2);
        uint64_t header = (k + 1) << 32 | size;
        if ((i % 2) == me) {
            char *slot = out + (k % steps) * foot;
            memcpy(slot + 8, src, size);
            atomic_store_explicit((_Atomic uint64_t *)slot, header, memory_order_release);
        } else {
            char *slot = in + (k % steps) * foot;
            while (atomic_load_explicit((_Atomic uint64_t *)slot, memory_order_acquire) != header)
                __builtin_ia32_pause();
            memcpy(dst, slot + 8, size);
        }
    }
    double dt = now() - t0;
    if (child == 0) return dst[size - 1] == 1 ? 0 : 1;
    int status;
    waitpid(child, &status, 0);
    printf("%zu bytes, ring records: %.3f us one way\n", size, dt / n * 1e6);
    return dst[size - 1] == 2 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SIZE [CHUNK] [ROUND_TRIPS] [ring]\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[1], 0, 0);
    size_t chunk = argc > 2 ? strtoul(argv[2], 0, 0) : size;
    long n = argc > 3 ? atol(argv[3]) : 200000, warm = 2000;
    int ring = argc > 4 && strcmp(argv[4], "ring") == 0;
    if (size == 0 || chunk == 0 || chunk > size) return 2;
    if (ring) return ring_pingpong(size, n, warm);
    size_t area = (size + 4095) & ~(size_t)4095;
    /* Two directions: a counter line and a data area each. */
    char *shm = shared_zeroed(2 * (4096 + area));
    if (!shm) return 1;
    pid_t child;
    int me = fork_pinned(&child);
    struct dir *out = (struct dir *)(shm + me * (4096 + area));
    char *out_data = (char *)out + 4096;
    struct dir *in = (struct dir *)(shm + (1 - me) * (4096 + area));
    char *in_data = (char *)in + 4096;
    char *src = aligned_alloc(4096, area), *dst = aligned_alloc(4096, area);
    memset(src, me + 1, area);
    memset(dst, 0, area);
    uint64_t sent = 0, got = 0;
    double t0 = 0;
    for (long i = 0; i < n + warm; i++) {
        if (i == warm) t0 = now();
        int my_turn = (i % 2) == me;
        if (my_turn) {
            for (size_t off = 0; off < size; off += chunk) {
                size_t k = size - off < chunk ? size - off : chunk;
                memcpy(out_data + off, src + off, k);
                sent += k;
                atomic_store_explicit(&out->published, sent, memory_order_release);
            }
        } else {
            for (size_t off = 0; off < size; off += chunk) {
                size_t k = size - off < chunk ? size - off : chunk;
                while (atomic_load_explicit(&in->published, memory_order_acquire) < got + k)
                    __builtin_ia32_pause();
                memcpy(dst + off, in_data + off, k);
                got += k;
            }
        }
    }
    double dt = now() - t0;
    if (child == 0) return dst[size - 1] == 1 ? 0 : 1;
    int status;
    waitpid(child, &status, 0);
    printf("%zu bytes, chunks of %zu: %.3f us one way\n", size, chunk, dt / n * 1e6);
    return dst[size - 1] == 2 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
