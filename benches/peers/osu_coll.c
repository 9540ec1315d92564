/* OSU-style collective latency for MPI peers, same methodology and format as
 * `courier bench <coll>`: per size, warm-up, then the average time per call,
 * averaged over ranks. Reduction collectives use float sums.
 * Usage: osu_coll barrier|bcast|reduce|allreduce|allgather|alltoall [max_size] [iters_small] [iters_large]
 * Build: mpicc.openmpi -O2 -o osu_coll_ompi osu_coll.c */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, p;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    const char *k = argc > 1 ? argv[1] : "allreduce";
    long max = argc > 2 ? atol(argv[2]) : 1 << 20;
    int it_small = argc > 3 ? atoi(argv[3]) : 1000, it_large = argc > 4 ? atoi(argv[4]) : 100;
    float *s = malloc(max * p + 16), *r = malloc(max * p + 16);
    for (long i = 0; i < max * p / 4; i++) s[i] = 1.0f;
    int barrier = !strcmp(k, "barrier");
    if (rank == 0) printf(barrier ? "# Avg Latency(us)\n" : "# Size       Avg Latency(us)\n");
    for (long sz = barrier ? 0 : 4; sz <= (barrier ? 0 : max); sz = barrier ? 1 : sz * 2) {
        int n = sz > 8192 ? it_large : it_small, skip = n / 10;
        int cnt = sz / 4;
        double t0 = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        for (int i = 0; i < n + skip; i++) {
            if (i == skip) { MPI_Barrier(MPI_COMM_WORLD); t0 = MPI_Wtime(); }
            if (barrier) MPI_Barrier(MPI_COMM_WORLD);
            else if (!strcmp(k, "bcast")) MPI_Bcast(r, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD);
            else if (!strcmp(k, "reduce")) MPI_Reduce(s, r, cnt, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
            else if (!strcmp(k, "allreduce")) MPI_Allreduce(s, r, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            else if (!strcmp(k, "allgather")) MPI_Allgather(s, cnt, MPI_FLOAT, r, cnt, MPI_FLOAT, MPI_COMM_WORLD);
            else MPI_Alltoall(s, cnt, MPI_FLOAT, r, cnt, MPI_FLOAT, MPI_COMM_WORLD);
        }
        double mine = (MPI_Wtime() - t0) * 1e6 / n, sum = 0;
        MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            if (barrier) printf("%18.3f\n", sum / p);
            else printf("%-10ld%18.3f\n", sz, sum / p);
        }
        fflush(stdout);
        if (barrier) break;
    }
    MPI_Finalize();
    return 0;
}
