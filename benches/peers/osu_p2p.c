/* OSU-style point-to-point benchmarks for MPI peers (Open MPI, MPICH), using
 * the same methodology and output format as `courier bench`:
 *   latency: ping-pong, one-way = round trip / 2; 10000/100 iterations up to
 *            8 KiB, 1000/10 above.
 *   bw:      window of 64 MPI_Isend, MPI_Waitall, 4-byte ack; 100/10 and 20/2.
 *   bibw:    both sides post 64 Irecv + 64 Isend per window.
 *   mbw_mr:  n/2 pairs (rank i sends to i + n/2) run the bw pattern at
 *            once; aggregate MB/s and messages/s from the slowest sender.
 *            With THREADS > 1 (environment), under MPI_THREAD_MULTIPLE, each
 *            rank runs THREADS such streams at once, thread t with thread
 *            t of its peer (tags 10 + 2t, 11 + 2t); the slowest thread's
 *            time is the rank's.
 *   latency_mt: THREADS (default 2) threads on each of ranks 0 and 1 run
 *            the latency ping-pong at once, thread t with thread t (tag
 *            10 + t), under MPI_THREAD_MULTIPLE; the average over threads
 *            of each one's one-way latency (osu_latency_mt).
 * ITERS (environment, optional): timed iterations per size, for every size
 *   (as `courier bench --iterations`), instead of the counts above.
 * Usage: osu_p2p latency|bw|bibw|mbw_mr|latency_mt [min_size] [max_size]
 * Build: mpicc.openmpi -O2 -o osu_p2p_ompi osu_p2p.c -lpthread
 */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 64
#define LARGE 8192

/* Timed iterations: ITERS from the environment if set, else `n`. */
static int iters_or(int n) {
    const char *e = getenv("ITERS");
    long v = e ? atol(e) : 0;
    return v > 0 ? (int)v : n;
}

struct mt_arg {
    int rank, tag;
    long sz;
    double us;
};

static void *mt_thread(void *p) {
    struct mt_arg *a = p;
    long sz = a->sz;
    char *s = malloc(sz + 1), *r = malloc(sz + 1);
    memset(s, 'a', sz + 1);
    int n = iters_or(sz > LARGE ? 1000 : 10000), skip = sz > LARGE ? 10 : 100, peer = 1 - a->rank;
    double t0 = 0;
    for (int i = 0; i < n + skip; i++) {
        if (i == skip) t0 = MPI_Wtime();
        if (a->rank == 0) {
            MPI_Send(s, sz, MPI_CHAR, peer, a->tag, MPI_COMM_WORLD);
            MPI_Recv(r, sz, MPI_CHAR, peer, a->tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(r, sz, MPI_CHAR, peer, a->tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(s, sz, MPI_CHAR, peer, a->tag, MPI_COMM_WORLD);
        }
    }
    a->us = (MPI_Wtime() - t0) * 1e6 / (2.0 * n);
    free(s);
    free(r);
    return NULL;
}

struct mr_arg {
    int snd, peer, t;
    long sz;
    double secs;
};

static void *mr_thread(void *p) {
    struct mr_arg *a = p;
    long sz = a->sz;
    char *s = malloc(sz + 1), *r = malloc((size_t)(sz + 1) * WINDOW);
    memset(s, 'a', sz + 1);
    MPI_Request req[WINDOW];
    int n = iters_or(sz > LARGE ? 20 : 100), skip = sz > LARGE ? 2 : 10;
    double tm = 0;
    for (int i = 0; i < n + skip; i++) {
        if (i == skip) tm = MPI_Wtime();
        for (int w = 0; w < WINDOW; w++) {
            if (a->snd) MPI_Isend(s, sz, MPI_CHAR, a->peer, 10 + 2 * a->t, MPI_COMM_WORLD, &req[w]);
            else MPI_Irecv(r + (size_t)w * sz, sz, MPI_CHAR, a->peer, 10 + 2 * a->t, MPI_COMM_WORLD, &req[w]);
        }
        MPI_Waitall(WINDOW, req, MPI_STATUSES_IGNORE);
        int ack = 0;
        if (a->snd) MPI_Recv(&ack, 4, MPI_CHAR, a->peer, 11 + 2 * a->t, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        else MPI_Send(&ack, 4, MPI_CHAR, a->peer, 11 + 2 * a->t, MPI_COMM_WORLD);
    }
    a->secs = MPI_Wtime() - tm;
    free(s);
    free(r);
    return NULL;
}

static int mbw_mr_mt(int rank, int size, int threads, long min, long max) {
    int pairs = size / 2, snd = rank < pairs;
    int peer = snd ? rank + pairs : rank - pairs;
    if (rank == 0) {
        printf("# [ threads per rank: %d ]\n# Size                  MB/s        Messages/s\n", threads);
        fflush(stdout);
    }
    for (long sz = min; sz <= max; sz *= 2) {
        MPI_Barrier(MPI_COMM_WORLD);
        pthread_t th[64];
        struct mr_arg a[64];
        for (int t = 0; t < threads; t++) {
            a[t] = (struct mr_arg){snd, peer, t, sz, 0};
            pthread_create(&th[t], NULL, mr_thread, &a[t]);
        }
        double secs = 0, slowest;
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            if (a[t].secs > secs) secs = a[t].secs;
        }
        if (!snd) secs = 0;
        MPI_Allreduce(&secs, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        int n = iters_or(sz > LARGE ? 20 : 100);
        double rate = (double)pairs * threads * n * WINDOW / slowest;
        if (rank == 0) printf("%-10ld%18.2f%18.2f\n", sz, rate * sz / 1e6, rate);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}

static int latency_mt(int rank, long min, long max) {
    int threads = getenv("THREADS") ? atoi(getenv("THREADS")) : 2;
    if (threads < 1 || threads > 64) threads = 2;
    if (rank == 0) {
        printf("# [ threads per rank: %d ]\n# Size          Latency (us)\n", threads);
        fflush(stdout);
    }
    for (long sz = min; sz <= max; sz *= 2) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank > 1) continue;
        pthread_t th[64];
        struct mt_arg a[64];
        for (int t = 0; t < threads; t++) {
            a[t] = (struct mt_arg){rank, 10 + t, sz, 0};
            pthread_create(&th[t], NULL, mt_thread, &a[t]);
        }
        double sum = 0;
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            sum += a[t].us;
        }
        if (rank == 0) printf("%-10ld%18.3f\n", sz, sum / threads);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}

int main(int argc, char **argv) {
    const char *kind0 = argc > 1 ? argv[1] : "latency";
    int threads0 = getenv("THREADS") ? atoi(getenv("THREADS")) : 1;
    if (!strcmp(kind0, "mbw_mr") && threads0 > 1 && threads0 <= 64) {
        int provided, rank, size;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (provided < MPI_THREAD_MULTIPLE || size % 2) {
            if (rank == 0) fprintf(stderr, "mbw_mr with threads: needs MPI_THREAD_MULTIPLE and an even -n\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        return mbw_mr_mt(rank, size, threads0, argc > 2 ? atol(argv[2]) : 1, argc > 3 ? atol(argv[3]) : 4 << 20);
    }
    if (!strcmp(kind0, "latency_mt")) {
        int provided;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        if (provided < MPI_THREAD_MULTIPLE) {
            if (rank == 0) fprintf(stderr, "MPI_THREAD_MULTIPLE not provided\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        return latency_mt(rank, argc > 2 ? atol(argv[2]) : 1, argc > 3 ? atol(argv[3]) : 4 << 20);
    }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *kind = argc > 1 ? argv[1] : "latency";
    long min = argc > 2 ? atol(argv[2]) : 1, max = argc > 3 ? atol(argv[3]) : 4 << 20;
    char *s = malloc(max), *r = malloc((size_t)max * WINDOW);
    memset(s, 'a', max);
    memset(r, 'b', (size_t)max * WINDOW);
    MPI_Request req[2 * WINDOW];
    int peer = 1 - rank;
    if (rank == 0) {
        if (!strcmp(kind, "latency")) printf("# Size          Latency (us)\n");
        else if (!strcmp(kind, "mbw_mr")) printf("# Size                  MB/s        Messages/s\n");
        else printf("# Size      Bandwidth (MB/s)\n");
        fflush(stdout);
    }
    int pairs = size / 2;
    int mr = !strcmp(kind, "mbw_mr");
    if (mr && size % 2) {
        if (rank == 0) fprintf(stderr, "mbw_mr needs an even number of ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (mr) peer = rank < pairs ? rank + pairs : rank - pairs;
    for (long sz = min; sz <= max; sz *= 2) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (mr) {
            int n = iters_or(sz > LARGE ? 20 : 100), skip = sz > LARGE ? 2 : 10, snd = rank < pairs;
            double tm = 0;
            for (int i = 0; i < n + skip; i++) {
                if (i == skip) tm = MPI_Wtime();
                for (int w = 0; w < WINDOW; w++) {
                    if (snd) MPI_Isend(s, sz, MPI_CHAR, peer, 2, MPI_COMM_WORLD, &req[w]);
                    else MPI_Irecv(r + (size_t)w * sz, sz, MPI_CHAR, peer, 2, MPI_COMM_WORLD, &req[w]);
                }
                MPI_Waitall(WINDOW, req, MPI_STATUSES_IGNORE);
                int ack = 0;
                if (snd) MPI_Recv(&ack, 4, MPI_CHAR, peer, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                else MPI_Send(&ack, 4, MPI_CHAR, peer, 3, MPI_COMM_WORLD);
            }
            double secs = rank < pairs ? MPI_Wtime() - tm : 0, slowest;
            MPI_Allreduce(&secs, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            double rate = (double)pairs * n * WINDOW / slowest;
            if (rank == 0) printf("%-10ld%18.2f%18.2f\n", sz, rate * sz / 1e6, rate);
            fflush(stdout);
            continue;
        }
        if (rank > 1) continue;
        double t0 = 0;
        if (!strcmp(kind, "latency")) {
            int n = iters_or(sz > LARGE ? 1000 : 10000), skip = sz > LARGE ? 10 : 100;
            for (int i = 0; i < n + skip; i++) {
                if (i == skip) t0 = MPI_Wtime();
                if (rank == 0) {
                    MPI_Send(s, sz, MPI_CHAR, peer, 1, MPI_COMM_WORLD);
                    MPI_Recv(r, sz, MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else {
                    MPI_Recv(r, sz, MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    MPI_Send(s, sz, MPI_CHAR, peer, 1, MPI_COMM_WORLD);
                }
            }
            double us = (MPI_Wtime() - t0) * 1e6 / (2.0 * n);
            if (rank == 0) printf("%-10ld%18.3f\n", sz, us);
        } else {
            int bi = !strcmp(kind, "bibw");
            int n = iters_or(sz > LARGE ? 20 : 100), skip = sz > LARGE ? 2 : 10;
            for (int i = 0; i < n + skip; i++) {
                if (i == skip) t0 = MPI_Wtime();
                int k = 0;
                if (rank == 1 || bi)
                    for (int w = 0; w < WINDOW; w++)
                        MPI_Irecv(r + (size_t)w * sz, sz, MPI_CHAR, peer, 2, MPI_COMM_WORLD, &req[k++]);
                if (rank == 0 || bi)
                    for (int w = 0; w < WINDOW; w++)
                        MPI_Isend(s, sz, MPI_CHAR, peer, 2, MPI_COMM_WORLD, &req[k++]);
                MPI_Waitall(k, req, MPI_STATUSES_IGNORE);
                if (!bi) {
                    int ack = 0;
                    if (rank == 0) MPI_Recv(&ack, 4, MPI_CHAR, peer, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    else MPI_Send(&ack, 4, MPI_CHAR, peer, 3, MPI_COMM_WORLD);
                }
            }
            double secs = MPI_Wtime() - t0;
            double mbps = (bi ? 2.0 : 1.0) * (double)sz * n * WINDOW / 1e6 / secs;
            if (rank == 0) printf("%-10ld%18.2f\n", sz, mbps);
        }
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
