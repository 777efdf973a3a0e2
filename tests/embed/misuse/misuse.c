/* Heap misuse a hardened malloc must catch: `misuse CASE` performs one
 * misuse and, if it was not caught, prints so and exits with status 0.
 * Built with -O0 -fno-builtin so the compiler keeps every access. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile char sink;

/* Frees `n` blocks of `size` bytes: pushes a quarantined block out. */
static void churn(size_t size, int n) {
    for (int i = 0; i < n; i++) {
        free(malloc(size));
    }
}

static void overflow(size_t n) {
    char *p = malloc(n);
    memset(p, 'a', n);
    p[n] = 'b'; /* one byte past the end */
    free(p);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: misuse CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "overflow-small")) {
        overflow(24);
    } else if (!strcmp(c, "overflow-exact")) {
        overflow(32); /* fills its size class exactly */
    } else if (!strcmp(c, "overflow-medium")) {
        overflow(50000);
    } else if (!strcmp(c, "overflow-large")) {
        overflow(3 << 20);
    } else if (!strcmp(c, "overflow-realloc")) {
        char *p = malloc(40);
        p[40] = 1;
        p = realloc(p, 4000);
        free(p);
    } else if (!strcmp(c, "use-after-free")) {
        char *p = malloc(64);
        free(p);
        p[40] = 1; /* well past the first 16 bytes */
        churn(64, 200);
        for (int i = 0; i < 2000; i++) {
            sink = *(char *)malloc(64);
        }
    } else if (!strcmp(c, "zero-read")) {
        char *p = malloc(0);
        sink = p[0];
    } else if (!strcmp(c, "zero-write")) {
        char *p = malloc(0);
        p[0] = 1;
    } else if (!strcmp(c, "double-free")) {
        char *p = malloc(64);
        free(p);
        free(p);
    } else if (!strcmp(c, "double-free-quarantined")) {
        char *p = malloc(64);
        free(p);
        churn(64, 200); /* p left the quarantine */
        free(p);
    } else if (!strcmp(c, "double-free-medium")) {
        char *p = malloc(100000);
        free(p);
        free(p);
    } else if (!strcmp(c, "double-free-large")) {
        char *p = malloc(8 << 20);
        free(p);
        free(p);
    } else if (!strcmp(c, "double-free-zero")) {
        char *p = malloc(0);
        free(p);
        free(p);
    } else if (!strcmp(c, "free-interior")) {
        char *p = malloc(64);
        free(p + 16);
    } else if (!strcmp(c, "free-misaligned")) {
        char *p = malloc(64);
        free(p + 1);
    } else if (!strcmp(c, "free-foreign")) {
        char buf[64];
        free(buf + 16);
    } else if (!strcmp(c, "realloc-interior")) {
        char *p = malloc(64);
        p = realloc(p + 32, 100);
    } else if (!strcmp(c, "realloc-freed")) {
        char *p = malloc(64);
        free(p);
        p = realloc(p, 100);
    } else if (!strcmp(c, "usable-size-interior")) {
        char *p = malloc(64);
        sink = (char)malloc_usable_size(p + 16);
    } else if (!strcmp(c, "usable-size-freed")) {
        char *p = malloc(64);
        free(p);
        sink = (char)malloc_usable_size(p);
    } else if (!strcmp(c, "usable-size-foreign")) {
        char buf[64];
        sink = (char)malloc_usable_size(buf);
    } else if (!strcmp(c, "correct")) {
        /* What a correct program may rely on: nothing here must abort. */
        char *p = malloc(100);
        size_t u = malloc_usable_size(p);
        memset(p, 1, u);
        p = realloc(p, 1000);
        free(p);
        char *z = malloc(0), *z2 = malloc(0);
        if (z == z2) {
            return 3;
        }
        free(z);
        z2 = realloc(z2, 10);
        free(z2);
        char *q = calloc(10, 10);
        for (int i = 0; i < 100; i++) {
            if (q[i] != 0) {
                return 4;
            }
        }
        free(q);
        printf("ok\n");
        return 0;
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    printf("misuse `%s` was not caught\n", c);
    return 0;
}
