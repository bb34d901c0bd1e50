/* An ordinary MPI program, built with mpicc by the tests and the demo and run unmodified in a
 * virtual cluster: a token goes round the ring of ranks LAPS times, every rank adding its rank
 * to it; then an allreduce and a gather of processor names. Rank 0 checks both sums and prints
 * one line; any mismatch aborts the job with a non-zero status. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LAPS = 10, TAG = 7 };

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int next = (rank + 1) % size;
    const int prev = (rank + size - 1) % size;

    long token = 0;
    for (int lap = 0; lap < LAPS; ++lap) {
        if (rank == 0) {
            if (size > 1) {
                MPI_Send(&token, 1, MPI_LONG, next, TAG, MPI_COMM_WORLD);
                MPI_Recv(&token, 1, MPI_LONG, prev, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
        } else {
            MPI_Recv(&token, 1, MPI_LONG, prev, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token += rank;
            MPI_Send(&token, 1, MPI_LONG, next, TAG, MPI_COMM_WORLD);
        }
    }

    long ranks_sum = 0;
    const long mine = rank;
    MPI_Allreduce(&mine, &ranks_sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int name_len = 0;
    MPI_Get_processor_name(name, &name_len);
    char *names = rank == 0 ? calloc((size_t)size, MPI_MAX_PROCESSOR_NAME) : NULL;
    MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
               MPI_COMM_WORLD);

    if (rank == 0) {
        const long expected = (long)size * (size - 1) / 2;
        if (token != LAPS * expected || ranks_sum != expected) {
            fprintf(stderr, "mpi_ring: wrong sums: token %ld (expected %ld), allreduce %ld (expected %ld)\n",
                    token, LAPS * expected, ranks_sum, expected);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("mpi_ring: %d ranks on", size);
        for (int i = 0; i < size; ++i)
            printf(" %s", names + (size_t)i * MPI_MAX_PROCESSOR_NAME);
        printf(": %d laps, token %ld, allreduce %ld: ok\n", LAPS, token, ranks_sum);
        free(names);
    }
    MPI_Finalize();
    return 0;
}
