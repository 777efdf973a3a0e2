/* glibc's malloc introspection under libemma.so: every function is
 * checked against what this program allocated. Prints "introspect: OK"
 * on success; on failure names the check and exits with status 1.
 *
 * Modes (argv[1]):
 *   all          every check below
 *   close-stderr allocates, closes fd 2 and exits (as coreutils do), so
 *                the exit statistics can only reach EMMA_STATS_FILE
 *   limit N      malloc of N MiB must fail with ENOMEM (EMMA_LIMIT set)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KIB 1024UL
#define MIB (1024UL * 1024UL)
/* The slack the checks allow for allocations of stdio and the C library
 * between two readings. */
#define SLACK (64 * KIB)

static int failures;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "introspect: FAILED %s:%d: %s: ", __FILE__,      \
                    __LINE__, #cond);                                        \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            failures++;                                                      \
        }                                                                    \
    } while (0)

/* The value of attribute `attr` of element `elem` in `xml`, or -1. */
static long xml_attr(const char *xml, const char *elem, const char *attr) {
    char key[64];
    snprintf(key, sizeof key, "<%s ", elem);
    const char *e = strstr(xml, key);
    if (!e)
        return -1;
    snprintf(key, sizeof key, "%s=\"", attr);
    const char *a = strstr(e, key);
    const char *end = strchr(e, '>');
    if (!a || (end && a > end))
        return -1;
    return strtol(a + strlen(key), NULL, 10);
}

static void check_mallinfo(void) {
    enum { N = 10240 };
    static void *blocks[N];
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(KIB);
        CHECK(blocks[i] != NULL, "malloc(1024) #%d", i);
        memset(blocks[i], i, KIB);
    }
    struct mallinfo2 m1 = mallinfo2();
    size_t grew = m1.uordblks - m0.uordblks;
    /* 1 KiB is a size class: exactly 10 MiB more, plus stray allocations.
       Live bytes count blocks at their size, which a build that pads
       requests (hardened) names in INTROSPECT_BLOCK. */
    const char *bs = getenv("INTROSPECT_BLOCK");
    size_t expect = (size_t)N * (bs ? strtoul(bs, NULL, 10) : KIB);
    CHECK(grew >= expect && grew <= expect + SLACK, "uordblks grew by %zu (expected %zu)",
          grew, expect);
    CHECK(m1.arena >= 10 * MIB, "arena %zu", m1.arena);
    CHECK(m1.fordblks + m1.uordblks >= 10 * MIB, "fordblks %zu", m1.fordblks);
    CHECK(m1.usmblks >= m1.arena, "usmblks %zu (the peak) < arena %zu", m1.usmblks,
          m1.arena);
    struct mallinfo old = mallinfo();
    CHECK((size_t)old.uordblks >= m1.uordblks - SLACK &&
              (size_t)old.uordblks <= m1.uordblks + SLACK,
          "mallinfo %d vs mallinfo2 %zu", old.uordblks, m1.uordblks);

    /* A huge block: one more mmapped block, at least its size in both. */
    void *huge = malloc(8 * MIB);
    CHECK(huge != NULL, "malloc(8 MiB)");
    struct mallinfo2 m2 = mallinfo2();
    CHECK(m2.hblks == m1.hblks + 1, "hblks %zu -> %zu", m1.hblks, m2.hblks);
    CHECK(m2.hblkhd >= m1.hblkhd + 8 * MIB, "hblkhd %zu -> %zu", m1.hblkhd, m2.hblkhd);
    CHECK(m2.uordblks >= m1.uordblks + 8 * MIB, "uordblks with huge %zu", m2.uordblks);
    free(huge);

    for (int i = 0; i < N; i++)
        free(blocks[i]);
    struct mallinfo2 m3 = mallinfo2();
    CHECK(m3.uordblks <= m0.uordblks + SLACK, "uordblks after frees %zu (before %zu)",
          m3.uordblks, m0.uordblks);
    CHECK(m3.hblks == m0.hblks, "hblks after free %zu", m3.hblks);

    /* Trimming gives the freed pages back (1), then has nothing left (0). */
    CHECK(malloc_trim(0) == 1, "first malloc_trim");
    CHECK(malloc_trim(0) == 0, "second malloc_trim");
    struct mallinfo2 m4 = mallinfo2();
    CHECK(m4.arena < m1.arena, "arena after trim %zu (full %zu)", m4.arena, m1.arena);
}

static void check_malloc_info(void) {
    void *keep = malloc(100 * KIB);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL, "open_memstream");
    CHECK(malloc_info(0, f) == 0, "malloc_info");
    fclose(f);
    CHECK(strstr(buf, "<malloc version=\"emma-1\">") != NULL, "%s", buf);
    long live = xml_attr(buf, "live", "bytes");
    long blocks = xml_attr(buf, "live", "blocks");
    long mapped = xml_attr(buf, "mapped", "current");
    CHECK(live >= (long)(100 * KIB) && live <= mapped, "live %ld mapped %ld", live,
          mapped);
    CHECK(blocks >= 1, "blocks %ld", blocks);
    struct mallinfo2 m = mallinfo2();
    CHECK((size_t)live <= m.uordblks + SLACK && (size_t)live + SLACK >= m.uordblks,
          "malloc_info live %ld vs uordblks %zu", live, m.uordblks);
    free(buf);
    free(keep);
    errno = 0;
    CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL, "malloc_info(1) errno %d",
          errno);
}

static void check_mallopt(void) {
    /* glibc tunables without an emma equivalent are refused. */
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 0, "M_MMAP_THRESHOLD");
    CHECK(mallopt(M_ARENA_MAX, 2) == 0, "M_ARENA_MAX");
    CHECK(mallopt(M_TRIM_THRESHOLD, 0) == 0, "M_TRIM_THRESHOLD");
    /* Android's purge options map to emma's purging. */
    CHECK(mallopt(-100 /* M_DECAY_TIME */, 0) == 1, "M_DECAY_TIME 0");
    CHECK(mallopt(-100 /* M_DECAY_TIME */, 1) == 1, "M_DECAY_TIME 1");
    void *p = malloc(300 * KIB);
    free(p);
    CHECK(mallopt(-101 /* M_PURGE */, 0) == 1, "M_PURGE");
    CHECK(mallopt(-104 /* M_PURGE_ALL */, 0) == 1, "M_PURGE_ALL");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    if (strcmp(mode, "close-stderr") == 0) {
        for (int i = 0; i < 1000; i++)
            (void)malloc(100); /* leaked on purpose: shows in live_blocks */
        close(2);
        return 0;
    }
    if (strcmp(mode, "limit") == 0 && argc > 2) {
        size_t n = strtoul(argv[2], NULL, 10) * MIB;
        errno = 0;
        void *p = malloc(n);
        CHECK(p == NULL && errno == ENOMEM, "malloc(%s MiB) past EMMA_LIMIT", argv[2]);
        p = malloc(100);
        CHECK(p != NULL, "a small block within the limit");
        free(p);
    } else {
        check_mallinfo();
        check_malloc_info();
        check_mallopt();
        malloc_stats();
    }
    if (failures)
        return 1;
    printf("introspect: OK\n");
    return 0;
}
