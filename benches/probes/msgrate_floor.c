/* The data movement of `bw` at small sizes without any protocol: two
 * processes, each pinned to its own core, stream messages of S payload
 * bytes through one single-producer/single-consumer ring in shared memory,
 * as Courier's ring does (an 8-byte header {stamp, length} stored last,
 * a 16-byte envelope, the payload; records at multiples of ALIGN bytes,
 * never straddling a cache line). The consumer polls the header at its
 * read position and copies each payload into the next of 64 receive
 * buffers; after every window of 64 messages it stores an acknowledgement
 * the producer waits for (osu_bw's pattern). No matching, no requests, no
 * progress engine: what one cache line (ALIGN 64) or half a line (ALIGN
 * 32, two small messages per line) per message costs on this machine.
 *
 * Build: cc -O2 -o msgrate_floor msgrate_floor.c
 * Usage: msgrate_floor [size (default 8)] [align 64|32 (default 64)]
 *                      [ring bytes (default 4194304)] [windows (default 20000)]
 * Prints: size, MB/s, messages/s.
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

#define WINDOW 64
#define ENVELOPE 16

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int c) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(c, &s);
    sched_setaffinity(0, sizeof s, &s);
}

struct ctl {
    _Alignas(64) _Atomic uint64_t head; /* consumer's read position */
    _Alignas(64) _Atomic uint64_t ack;  /* windows received */
    _Alignas(64) _Atomic int ready;
};

int main(int argc, char **argv) {
    size_t S = argc > 1 ? atol(argv[1]) : 8;
    uint64_t align = argc > 2 ? atol(argv[2]) : 64;
    uint64_t cap = argc > 3 ? atol(argv[3]) : 4 << 20;
    long windows = argc > 4 ? atol(argv[4]) : 20000, skip = windows / 10;
    uint64_t fp = (8 + ENVELOPE + S + align - 1) / align * align;
    if ((align != 64 && align != 32) || (fp > 64 && align != 64) || (cap & (cap - 1)) || cap < 4096 ||
        fp > cap / 4) {
        fprintf(stderr, "align 64 or 32 (32: messages of at most %d bytes), ring a power of two of at least 4096 bytes and 4 records\n", 32 - 8 - ENVELOPE);
        return 2;
    }
    struct ctl *c = mmap(0, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint8_t *ring = mmap(0, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED || ring == MAP_FAILED) return 1;
    memset(ring, 0, cap);
    pid_t child = fork();
    int me = child == 0;
    pin(me);
    uint8_t *msg = malloc(S + 64), env[ENVELOPE];
    if (!msg) return 1;
    memset(msg, 7, S + 64);
    memset(env, 1, sizeof env);
    if (me == 0) { /* producer */
        while (!atomic_load(&c->ready)) {}
        uint64_t tail = 0, head_cache = 0;
        double t0 = 0;
        for (long w = 0; w < windows + skip; w++) {
            if (w == skip) t0 = now();
            for (int i = 0; i < WINDOW; i++) {
                while (tail + fp - head_cache > cap - align) /* keep the slot after free */
                    head_cache = atomic_load_explicit(&c->head, memory_order_acquire);
                uint8_t *rec = ring + (tail & (cap - 1));
                memcpy(rec + 8, env, ENVELOPE);
                size_t at = (tail & (cap - 1)) + 8 + ENVELOPE, first = S < cap - at ? S : cap - at;
                memcpy(ring + at, msg, first); /* wraps at the ring's end */
                memcpy(ring, msg + first, S - first);
                uint64_t h = ((uint64_t)(uint32_t)(tail / align + 1) << 32) | (ENVELOPE + S);
                atomic_store_explicit((_Atomic uint64_t *)rec, h, memory_order_release);
                tail += fp;
            }
            while (atomic_load_explicit(&c->ack, memory_order_acquire) < (uint64_t)w + 1) {}
        }
        double t = now() - t0;
        double rate = (double)windows * WINDOW / t;
        printf("%-10zu%18.2f%18.2f\n", S, rate * S / 1e6, rate);
        waitpid(child, 0, 0);
    } else { /* consumer */
        int one = fp > 64; /* messages of several lines land in one buffer */
        uint8_t *bufs = malloc(one ? S + 64 : 64 * WINDOW);
        if (!bufs) return 1;
        atomic_store(&c->ready, 1);
        uint64_t head = 0;
        for (long w = 0; w < windows + skip; w++) {
            for (int i = 0; i < WINDOW; i++) {
                _Atomic uint64_t *hp = (_Atomic uint64_t *)(ring + (head & (cap - 1)));
                uint32_t stamp = (uint32_t)(head / align + 1);
                uint64_t h;
                while (((h = atomic_load_explicit(hp, memory_order_acquire)) >> 32) != stamp)
                    __builtin_ia32_pause();
                uint32_t len = (uint32_t)h;
                size_t at = (head & (cap - 1)) + 8 + ENVELOPE, n = len - ENVELOPE;
                size_t first = n < cap - at ? n : cap - at;
                uint8_t *dst = one ? bufs : bufs + 64 * i;
                memcpy(dst, ring + at, first);
                memcpy(dst + first, ring, n - first);
                head += fp;
                /* publish the read position now and then, as a ring must */
                if ((head & 4095) == 0) atomic_store_explicit(&c->head, head, memory_order_release);
            }
            atomic_store_explicit(&c->head, head, memory_order_release);
            atomic_store_explicit(&c->ack, (uint64_t)w + 1, memory_order_release);
        }
        return bufs[0] == 0;
    }
    return 0;
}
