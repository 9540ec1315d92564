/* The latency of TCP over loopback without any protocol: two processes,
 * each pinned to its own core, connected by one TCP socket (TCP_NODELAY),
 * pass a message of SIZE bytes (default 8) back and forth; the receiver
 * spins on a non-blocking recv, as Courier and the peers do, and after
 * each read that leaves more of a message to come asks for quick
 * acknowledgements (TCP_QUICKACK; without them a large message waits for
 * delayed ones: 1 MiB took 1.5x as long here). Prints the one-way time,
 * round trip / 2: the kernel's share of `courier bench latency
 * --transport tcp` at that size.
 *
 * Build: cc -O2 -o tcp_latency_floor tcp_latency_floor.c
 * Usage: tcp_latency_floor [round trips (default 100000)] [SIZE (default 8)]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void spin_recv(int fd, char *buf, size_t n) {
    size_t got = 0;
    int one = 1;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            if (got < n) setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) exit(1);
    }
}

static void spin_send(int fd, const char *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t r = send(fd, buf + put, n - put, MSG_DONTWAIT);
        if (r > 0) put += (size_t)r;
        else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) exit(1);
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000, warm = n / 100 + 10;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 8;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al))
        return 1;
    pid_t child = fork();
    int me = child == 0, fd;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(me, &s);
    sched_setaffinity(0, sizeof s, &s);
    if (me) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a)) return 1;
    } else {
        fd = accept(l, 0, 0);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Written through first, as OSU's buffers are. */
    char *msg = malloc(size), *back = malloc(size);
    if (!msg || !back) return 1;
    memset(msg, 'a', size);
    memset(back, 'b', size);
    double t0 = 0;
    for (long i = 0; i < n + warm; i++) {
        if (i == warm) t0 = now();
        if (me == 0) {
            spin_send(fd, msg, size);
            spin_recv(fd, back, size);
        } else {
            spin_recv(fd, back, size);
            spin_send(fd, msg, size);
        }
    }
    if (!me) {
        printf("%zu %.3f us one way\n", size, (now() - t0) / n / 2 * 1e6);
        waitpid(child, 0, 0);
    }
    close(fd);
    return 0;
}
