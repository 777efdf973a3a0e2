/* The C fast path, counted by bench/fastpath.sh under callgrind with an
 * allocator preloaded (LD_PRELOAD):
 *
 *   fastpath_c pairs N      N malloc(size) + free pairs (size 32, read from
 *                           a volatile so the compiler cannot fold it)
 *   fastpath_c usable N     N malloc_usable_size(p) calls on one 32-byte block
 *   fastpath_c pairs-base N, usable-base N
 *                           the same loops without the allocator calls, for
 *                           subtracting the loops' own instructions
 *
 * Calls go through the PLT as in any program, so their cost is counted.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile size_t size = 32;
static void *volatile sink;

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fastpath_c <pairs|usable|pairs-base|usable-base> <N>\n");
        return 2;
    }
    long n = atol(argv[2]);
    /* One pair up front: lazy initialisation happens before the loop. */
    free(malloc(size));
    if (strcmp(argv[1], "pairs") == 0) {
        for (long i = 0; i < n; i++) {
            void *p = malloc(size);
            sink = p;
            free(sink);
        }
    } else if (strcmp(argv[1], "usable") == 0) {
        void *p = malloc(size);
        size_t total = 0;
        for (long i = 0; i < n; i++) {
            sink = p;
            total += malloc_usable_size(sink) + size;
        }
        sink = (void *)total;
        free(p);
    } else if (strcmp(argv[1], "pairs-base") == 0) {
        for (long i = 0; i < n; i++) {
            sink = (void *)size;
            (void)sink;
        }
    } else if (strcmp(argv[1], "usable-base") == 0) {
        void *p = malloc(size);
        size_t total = 0;
        for (long i = 0; i < n; i++) {
            sink = p;
            total += (size_t)sink + size;
        }
        sink = (void *)total;
        free(p);
    } else {
        return 2;
    }
    return 0;
}
