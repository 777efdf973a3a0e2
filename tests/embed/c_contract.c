/*
 * The C contract of malloc and friends, checked from C.
 *
 * Built two ways by the tests:
 *  - plain: calls malloc, free, ... and runs with emma preloaded
 *    (LD_PRELOAD=libemma.so), with -DCHECK_ERRNO;
 *  - -DPFX=first_ (or second_): calls first_malloc, first_free, ... of
 *    the plugin_cabi example library it is linked against.
 *
 * Where C leaves room, the expectations are glibc's: realloc(p, 0) frees
 * and returns NULL; every block is 16-byte aligned; memalign rounds a
 * non-power-of-two alignment up; aligned_alloc rejects it. With
 * -DCHECK_ERRNO also: ENOMEM/EINVAL in errno on failures, and free and
 * posix_memalign leave errno alone.
 *
 * Compile with -fno-builtin so the compiler does not fold calls away.
 * Prints "c_contract: OK" and exits 0, or prints the failed check and
 * exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PFX
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(name) CAT(PFX, name)
#define STR2(x) #x
#define STR(x) STR2(x)
#define NAME STR(PFX)
void *F(malloc)(size_t);
void *F(calloc)(size_t, size_t);
void *F(realloc)(void *, size_t);
void F(free)(void *);
void *F(aligned_alloc)(size_t, size_t);
int F(posix_memalign)(void **, size_t, size_t);
void *F(memalign)(size_t, size_t);
void *F(valloc)(size_t);
void *F(pvalloc)(size_t);
void *F(reallocarray)(void *, size_t, size_t);
size_t F(malloc_usable_size)(void *);
#else
#include <malloc.h>
#define F(name) name
#define NAME ""
#endif

static int checks;

#define CHECK(cond)                                                            \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            printf("c_contract(%s): FAILED at line %d: %s (errno %d)\n", NAME, \
                   __LINE__, #cond, errno);                                    \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#ifdef CHECK_ERRNO
#define CHECK_ERRNO_IS(e) CHECK(errno == (e))
#else
#define CHECK_ERRNO_IS(e) ((void)0)
#endif

#define ALIGNED(p, a) (((uintptr_t)(p) & ((a)-1)) == 0)

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131 + seed);
}

static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131 + seed))
            return 0;
    return 1;
}

int main(void) {
    /* malloc(0): a unique, freeable pointer. */
    void *z1 = F(malloc)(0), *z2 = F(malloc)(0);
    CHECK(z1 && z2 && z1 != z2);
    F(free)(z1);
    F(free)(z2);

    /* Every size: 16-byte aligned, usable size at least the request, the
     * whole block writable. */
    static void *blocks[5000];
    size_t nb = 0;
    for (size_t n = 1; n <= 70000; n += (n < 1024 ? 1 : n / 7)) {
        unsigned char *p = F(malloc)(n);
        CHECK(p != NULL);
        CHECK(ALIGNED(p, 16));
        CHECK(F(malloc_usable_size)(p) >= n);
        memset(p, 0xA5, F(malloc_usable_size)(p));
        blocks[nb++] = p;
    }
    for (size_t n = 8 << 20; n <= 64 << 20; n *= 2) {
        unsigned char *p = F(malloc)(n);
        CHECK(p != NULL && ALIGNED(p, 16) && F(malloc_usable_size)(p) >= n);
        p[0] = 1;
        p[n - 1] = 2;
        blocks[nb++] = p;
    }
    for (size_t i = 0; i < nb; i++)
        F(free)(blocks[i]);
    CHECK(F(malloc_usable_size)(NULL) == 0);

    /* Impossible sizes: NULL and ENOMEM. */
    errno = 0;
    CHECK(F(malloc)(SIZE_MAX) == NULL);
    CHECK_ERRNO_IS(ENOMEM);
    errno = 0;
    CHECK(F(malloc)((size_t)PTRDIFF_MAX + 1) == NULL);
    CHECK_ERRNO_IS(ENOMEM);

    /* calloc: zeroed, also where dirty memory was freed; overflow NULL. */
    for (int round = 0; round < 3; round++) {
        for (size_t n = 8; n <= (1 << 22); n *= 4) {
            unsigned char *d = F(malloc)(n);
            CHECK(d != NULL);
            memset(d, 0xFF, n);
            F(free)(d);
            unsigned char *c = F(calloc)(n / 8, 8);
            CHECK(c != NULL && ALIGNED(c, 16));
            for (size_t i = 0; i < n; i++)
                if (c[i]) {
                    CHECK(c[i] == 0);
                    break;
                }
            F(free)(c);
        }
    }
    errno = 0;
    CHECK(F(calloc)((size_t)1 << 33, (size_t)1 << 33) == NULL);
    CHECK_ERRNO_IS(ENOMEM);
    errno = 0;
    CHECK(F(calloc)(SIZE_MAX / 2, 3) == NULL);
    CHECK_ERRNO_IS(ENOMEM);
    void *c0 = F(calloc)(0, 0);
    CHECK(c0 != NULL);
    F(free)(c0);

    /* free(NULL) does nothing; free keeps errno. */
    F(free)(NULL);
    void *e = F(malloc)(100);
    errno = 1234;
    F(free)(e);
    F(free)(NULL);
#ifdef CHECK_ERRNO
    CHECK(errno == 1234);
#endif

    /* realloc(NULL, n) is malloc(n); realloc(p, 0) frees and returns NULL. */
    unsigned char *r = F(realloc)(NULL, 100);
    CHECK(r != NULL && ALIGNED(r, 16) && F(malloc_usable_size)(r) >= 100);
    CHECK(F(realloc)(r, 0) == NULL);

    /* realloc keeps the contents through every size range, both ways. */
    size_t steps[] = {1,    24,      100,     1000,     5000,    70000,
                      300000, 5 << 20, 40 << 20, 3 << 20, 200000, 2000,
                      50,   7};
    r = NULL;
    size_t have = 0;
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        size_t n = steps[s];
        r = F(realloc)(r, n);
        CHECK(r != NULL && ALIGNED(r, 16));
        size_t keep = have < n ? have : n;
        CHECK(same(r, keep, 7));
        fill(r, n, 7);
        have = n;
    }
    F(free)(r);

    /* reallocarray: overflow gives NULL and leaves the block alone. */
    unsigned char *ra = F(reallocarray)(NULL, 10, 10);
    CHECK(ra != NULL);
    fill(ra, 100, 3);
    errno = 0;
    CHECK(F(reallocarray)(ra, SIZE_MAX / 2, 3) == NULL);
    CHECK_ERRNO_IS(ENOMEM);
    CHECK(same(ra, 100, 3));
    ra = F(reallocarray)(ra, 100, 10);
    CHECK(ra != NULL && same(ra, 100, 3));
    F(free)(ra);

    /* posix_memalign: EINVAL for bad alignments, output untouched, errno
     * untouched; good alignments honoured. */
    size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 1000, (size_t)1 << 63 | 8};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *out = (void *)0x1234;
        errno = 77;
        CHECK(F(posix_memalign)(&out, bad[i], 64) == EINVAL);
        CHECK(out == (void *)0x1234);
#ifdef CHECK_ERRNO
        CHECK(errno == 77);
#endif
    }
    size_t good[] = {8, 16, 32, 64, 256, 4096, 65536, 1 << 21, 1 << 23};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        for (size_t n = 0; n < 200000; n = n * 3 + 1) {
            void *out = NULL;
            CHECK(F(posix_memalign)(&out, good[i], n) == 0);
            CHECK(out != NULL && ALIGNED(out, good[i]) && ALIGNED(out, 16));
            CHECK(F(malloc_usable_size)(out) >= n);
            memset(out, 1, n);
            F(free)(out);
        }
    }
    {
        void *out = (void *)0x1234;
        CHECK(F(posix_memalign)(&out, 64, SIZE_MAX) == ENOMEM);
        CHECK(out == (void *)0x1234);
    }

    /* aligned_alloc: a non-power-of-two alignment is refused (EINVAL). */
    size_t npot[] = {0, 3, 24, 48, 100};
    for (size_t i = 0; i < sizeof npot / sizeof *npot; i++) {
        errno = 0;
        CHECK(F(aligned_alloc)(npot[i], 64) == NULL);
        CHECK_ERRNO_IS(EINVAL);
    }
    for (size_t a = 1; a <= (1 << 22); a *= 4) {
        void *p = F(aligned_alloc)(a, 100);
        CHECK(p != NULL && ALIGNED(p, a) && ALIGNED(p, 16));
        F(free)(p);
    }

    /* memalign rounds up to a power of two; valloc and pvalloc give
     * pages (pvalloc whole pages). */
    void *m = F(memalign)(48, 10);
    CHECK(m != NULL && ALIGNED(m, 64));
    F(free)(m);
    void *v = F(valloc)(10);
    CHECK(v != NULL && ALIGNED(v, 4096) && F(malloc_usable_size)(v) >= 10);
    F(free)(v);
    void *pv = F(pvalloc)(1);
    CHECK(pv != NULL && ALIGNED(pv, 4096) && F(malloc_usable_size)(pv) >= 4096);
    memset(pv, 3, 4096);
    F(free)(pv);
    errno = 0;
    CHECK(F(pvalloc)(SIZE_MAX - 10) == NULL);
    CHECK_ERRNO_IS(ENOMEM);

    printf("c_contract%s%s: OK (%d checks)\n", *NAME ? " " : "", NAME, checks);
    return 0;
}
