/* osu_init-style start-up probe: times MPI_Init on every rank and reduces
 * min/max/avg to rank 0, in the format `courier bench startup` prints.
 * Build: mpicc.openmpi -O2 -o osu_init_ompi osu_init.c  (or mpicc.mpich) */
#include <mpi.h>
#include <stdio.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    double t0 = now_ms();
    MPI_Init(&argc, &argv);
    double ms = now_ms() - t0, min, max, sum;
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Reduce(&ms, &min, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
    MPI_Reduce(&ms, &max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&ms, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("nprocs: %d, min: %.2f ms, max: %.2f ms, avg: %.2f ms\n", size, min, max, sum / size);
    MPI_Finalize();
    return 0;
}
