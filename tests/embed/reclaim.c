/* Memory of exited threads, seen from a C program (tests/reclaim.rs runs
 * it with and without emma preloaded).
 *
 *   reclaim exits    two threads do a malloc/realloc/free stress, keep
 *                    about 300 MiB, hand it to the main thread and exit;
 *                    the main thread frees it all, then allocates only
 *                    lightly for up to 2 s while RSS settles.
 *   reclaim larson [ROUNDS]
 *                    a larson-style server: 8 slot arrays, each worked on
 *                    by a thread that replaces random slots and then
 *                    starts its successor and exits (every round new
 *                    threads; about a fifth of the frees hit blocks an
 *                    earlier thread allocated).
 *
 * Prints "rss_kib START PEAK AFTER" (PEAK is VmHWM). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long rss_kib(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &rss) != 2) exit(2);
    fclose(f);
    return rss * 4;
}

static long hwm_kib(void) {
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) exit(2);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1) break;
    fclose(f);
    return v;
}

static uint64_t next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- exits ------------------------------------------------------------ */

#define KEEP (150u << 20) /* per thread */
#define SLOTS_MAX 400000

struct kept {
    void **p;
    size_t n;
};

static void *stress(void *arg) {
    uint64_t s = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    struct kept *k = malloc(sizeof *k);
    k->p = calloc(SLOTS_MAX, sizeof(void *));
    size_t *sz = calloc(SLOTS_MAX, sizeof(size_t));
    size_t held = 0, n = 0;
    while (held < KEEP && n < SLOTS_MAX) {
        size_t size = 16 + next(&s) % 4000;
        if (next(&s) % 50 == 0) size = 16384 + next(&s) % (200 << 10);
        switch (next(&s) % 4) {
        case 0: /* realloc a random held block */
            if (n) {
                size_t i = next(&s) % n;
                void *q = realloc(k->p[i], size);
                if (!q) exit(3);
                memset(q, 7, size);
                held += size - sz[i];
                k->p[i] = q, sz[i] = size;
                break;
            }
            /* fall through */
        case 1: /* free a random held block */
            if (n > 16) {
                size_t i = next(&s) % n;
                free(k->p[i]);
                held -= sz[i];
                k->p[i] = k->p[--n], sz[i] = sz[n];
                break;
            }
            /* fall through */
        default:
            k->p[n] = malloc(size);
            if (!k->p[n]) exit(3);
            memset(k->p[n], 5, size);
            sz[n++] = size, held += size;
        }
    }
    free(sz);
    k->n = n;
    return k;
}

static int exits(void) {
    long start = rss_kib();
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, stress, (void *)(i + 1));
    for (int i = 0; i < 2; i++) {
        struct kept *k;
        pthread_join(t[i], (void **)&k);
        for (size_t j = 0; j < k->n; j++) free(k->p[j]);
        free(k->p);
        free(k);
    }
    long after = rss_kib();
    double t0 = now_s();
    while (after > start + 16 * 1024 && now_s() - t0 < 2.0) {
        for (int i = 0; i < 16; i++) free(malloc(16 + i * 200));
        usleep(1000);
        after = rss_kib();
    }
    printf("rss_kib %ld %ld %ld\n", start, hwm_kib(), after);
    return 0;
}

/* ---- larson ------------------------------------------------------------ */

#define WORKERS 8
#define SLOTS 2000
#define STEPS (4 * SLOTS)

struct worker {
    void *slot[SLOTS];
    int round;
    uint64_t seed;
};

static atomic_int finished;
static int rounds = 300;

static void *larson_round(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < STEPS; i++) {
        size_t j = next(&w->seed) % SLOTS;
        free(w->slot[j]);
        size_t size = 8 + next(&w->seed) % 993;
        w->slot[j] = malloc(size);
        if (!w->slot[j]) exit(3);
        *(char *)w->slot[j] = (char)size;
    }
    if (++w->round < rounds) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &a, larson_round, w)) exit(4);
        pthread_attr_destroy(&a);
    } else {
        atomic_fetch_add(&finished, 1);
    }
    return NULL;
}

static int larson(void) {
    long start = rss_kib();
    static struct worker w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i].seed = 0x2545F4914F6CDD1Dull * (i + 1);
        pthread_t t;
        pthread_create(&t, NULL, larson_round, &w[i]);
        pthread_detach(t);
    }
    while (atomic_load(&finished) < WORKERS) usleep(1000);
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < SLOTS; j++) free(w[i].slot[j]);
    printf("rss_kib %ld %ld %ld\n", start, hwm_kib(), rss_kib());
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "exits")) return exits();
    if (argc >= 2 && !strcmp(argv[1], "larson")) {
        if (argc == 3) rounds = atoi(argv[2]);
        return larson();
    }
    fprintf(stderr, "usage: reclaim exits|larson\n");
    return 1;
}
