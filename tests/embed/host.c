/*
 * A C host for emma plugins (tests/embed_plugins.rs builds and runs it).
 *
 *     host local|global PLUGIN.so [PLUGIN.so ...]
 *
 * The host is an ordinary glibc program: its own allocations come from
 * glibc's malloc. It dlopens every plugin with RTLD_LOCAL or RTLD_GLOBAL,
 * then checks that each plugin allocates from its own emma instance:
 *
 *  - from several host threads at once, every plugin's results are right,
 *    and every block a plugin hands out is owned by that plugin and by no
 *    other (nor are the host's malloc blocks, stack or statics);
 *  - the plugins' mappings are pairwise disjoint, and each block lies in
 *    its own plugin's mappings;
 *  - each plugin made one heap per thread that called it;
 *  - after dlclose the library is gone from /proc/self/maps, and so is
 *    every mapping its allocator had (the plugin's .fini_array releases
 *    them); the other plugins keep working; a plugin can be loaded again.
 *
 * Prints one line per check group and "host: OK" at the end; exits 1 with
 * a "FAIL:" line on the first failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PLUGINS 4
#define THREADS 4
#define ROUNDS 3
#define KEEP 24
#define MAX_MAPS 4096

typedef struct {
    const char *path;
    void *handle;
    const char *(*name)(void);
    uint64_t (*work)(uint64_t);
    size_t (*keep)(size_t, uintptr_t *);
    void (*release)(void);
    int (*owns)(uintptr_t);
    size_t (*mappings)(uintptr_t *, size_t);
    size_t (*heaps)(void);
    void (*stats)(char *, size_t);
    uint64_t expected[THREADS];
} plugin;

static plugin plugins[MAX_PLUGINS];
static int nplugins;
static int dl_mode;
static pthread_barrier_t barrier;
/* Addresses each thread got from each plugin (kept alive until release). */
static uintptr_t kept[THREADS][MAX_PLUGINS][ROUNDS * KEEP];
static uintptr_t host_blocks[THREADS];
static uintptr_t maps[MAX_PLUGINS][2 * MAX_MAPS];
static size_t nmaps[MAX_PLUGINS];
static int host_static;

#define FAIL(...)                                                              \
    do {                                                                       \
        printf("FAIL: " __VA_ARGS__);                                          \
        printf("\n");                                                          \
        fflush(stdout);                                                        \
        exit(1);                                                               \
    } while (0)

static void *sym(plugin *p, const char *name) {
    void *f = dlsym(p->handle, name);
    if (!f)
        FAIL("dlsym %s in %s: %s", name, p->path, dlerror());
    return f;
}

static void load(plugin *p) {
    p->handle = dlopen(p->path, RTLD_NOW | dl_mode);
    if (!p->handle)
        FAIL("dlopen %s: %s", p->path, dlerror());
    p->name = (const char *(*)(void))sym(p, "plugin_name");
    p->work = (uint64_t(*)(uint64_t))sym(p, "plugin_work");
    p->keep = (size_t(*)(size_t, uintptr_t *))sym(p, "plugin_keep");
    p->release = (void (*)(void))sym(p, "plugin_release");
    p->owns = (int (*)(uintptr_t))sym(p, "plugin_owns");
    p->mappings = (size_t(*)(uintptr_t *, size_t))sym(p, "plugin_mappings");
    p->heaps = (size_t(*)(void))sym(p, "plugin_heaps");
    p->stats = (void (*)(char *, size_t))sym(p, "plugin_stats");
}

static uint64_t seed_of(int t) { return 1000 + 7 * (uint64_t)t; }

static void *thread_main(void *arg) {
    int t = (int)(intptr_t)arg;
    /* All threads are alive together: each needs its own heap in each
     * plugin. */
    pthread_barrier_wait(&barrier);
    void *mine = malloc(100 + t); /* the host's own malloc, on this thread */
    host_blocks[t] = (uintptr_t)mine;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < nplugins; i++) {
            /* Interleave plugins: A, B, A, B... on the same thread. */
            plugin *p = &plugins[(i + t + r) % nplugins];
            int pi = (int)(p - plugins);
            uint64_t got = p->work(seed_of(t));
            if (got != p->expected[t])
                FAIL("thread %d: %s work(%llu) = %llu, expected %llu", t,
                     p->name(), (unsigned long long)seed_of(t),
                     (unsigned long long)got,
                     (unsigned long long)p->expected[t]);
            uintptr_t *out = &kept[t][pi][r * KEEP];
            if (p->keep(KEEP, out) != KEEP)
                FAIL("keep");
            for (int k = 0; k < KEEP; k++) {
                for (int j = 0; j < nplugins; j++) {
                    int o = plugins[j].owns(out[k]);
                    if (o != (j == pi))
                        FAIL("thread %d: %s owns(%#lx from %s) = %d", t,
                             plugins[j].name(), (unsigned long)out[k],
                             p->name(), o);
                }
            }
        }
    }
    for (int j = 0; j < nplugins; j++)
        if (plugins[j].owns((uintptr_t)mine))
            FAIL("%s owns the host's malloc block %p", plugins[j].name(),
                 mine);
    return NULL;
}

static void get_mappings(int i) {
    nmaps[i] = plugins[i].mappings(maps[i], MAX_MAPS);
    if (nmaps[i] > MAX_MAPS)
        FAIL("too many mappings");
}

static int in_maps(int i, uintptr_t a) {
    for (size_t m = 0; m < nmaps[i]; m++)
        if (a >= maps[i][2 * m] && a < maps[i][2 * m] + maps[i][2 * m + 1])
            return 1;
    return 0;
}

/* /proc/self/maps, read with open/read into a static buffer (no malloc, so
 * reading it does not change it). */
static char procmaps[1 << 20];

static void read_procmaps(void) {
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0)
        FAIL("open /proc/self/maps");
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, procmaps + n, sizeof procmaps - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    procmaps[n] = 0;
}

/* Whether any line of /proc/self/maps overlaps [lo, hi). */
static int procmaps_overlap(uintptr_t lo, uintptr_t hi) {
    for (char *l = procmaps; *l;) {
        unsigned long a, b;
        if (sscanf(l, "%lx-%lx", &a, &b) == 2 && a < hi && lo < b)
            return 1;
        char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return 0;
}

/* Bytes in anonymous mappings (lines of /proc/self/maps without a name). */
static unsigned long anon_bytes(void) {
    unsigned long total = 0;
    for (char *l = procmaps; *l;) {
        unsigned long a, b;
        int end = 0;
        /* address perms offset dev inode [name] */
        if (sscanf(l, "%lx-%lx %*s %*s %*s %*[0-9]%n", &a, &b, &end) == 2 &&
            end > 0) {
            char *c = l + end;
            while (*c == ' ')
                c++;
            if (*c == '\n' || *c == 0)
                total += b - a;
        }
        char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return total;
}

/* Unloads plugin i and checks that nothing of it is left. */
static void unload(int i) {
    plugin *p = &plugins[i];
    char name[64];
    snprintf(name, sizeof name, "%s", p->name());
    get_mappings(i);
    read_procmaps();
    if (!strstr(procmaps, p->path))
        FAIL("%s is not in /proc/self/maps before dlclose", p->path);
    for (size_t m = 0; m < nmaps[i]; m++)
        if (!procmaps_overlap(maps[i][2 * m], maps[i][2 * m] + 1))
            FAIL("mapping %#lx of %s not in /proc/self/maps",
                 (unsigned long)maps[i][2 * m], name);
    size_t before = nmaps[i];
    char st[256];
    unsigned long mapped = 0;
    p->stats(st, sizeof st);
    if (sscanf(st, "mapped=%lu", &mapped) != 1 || mapped == 0)
        FAIL("%s: no mapped bytes in stats '%s'", name, st);
    unsigned long anon_before = anon_bytes();
    if (dlclose(p->handle))
        FAIL("dlclose %s: %s", p->path, dlerror());
    read_procmaps();
    if (strstr(procmaps, p->path))
        FAIL("%s still mapped after dlclose (not unloadable?)", p->path);
    for (size_t m = 0; m < nmaps[i]; m++) {
        uintptr_t lo = maps[i][2 * m], hi = lo + maps[i][2 * m + 1];
        if (procmaps_overlap(lo, hi))
            FAIL("%s: mapping %#lx-%#lx survived dlclose", name,
                 (unsigned long)lo, (unsigned long)hi);
    }
    /* Segments and huge blocks are checked one by one above; the heap
     * metadata and segment map are not listed by the plugin, but all of
     * the allocator's mapped bytes (metadata included) must have left the
     * process's anonymous memory. */
    unsigned long anon_after = anon_bytes();
    if (anon_after > anon_before || anon_before - anon_after < mapped)
        FAIL("%s: anonymous memory went from %lu to %lu bytes, but the "
             "allocator had %lu mapped",
             name, anon_before, anon_after, mapped);
    printf("unload %s: library, its %zu mappings and all %lu mapped bytes "
           "gone\n",
           name, before, mapped);
    p->handle = NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc - 2 > MAX_PLUGINS) {
        fprintf(stderr, "usage: host local|global PLUGIN.so...\n");
        return 2;
    }
    dl_mode = strcmp(argv[1], "global") == 0 ? RTLD_GLOBAL : RTLD_LOCAL;
    nplugins = argc - 2;
    for (int i = 0; i < nplugins; i++) {
        plugins[i].path = argv[i + 2];
        load(&plugins[i]);
        printf("loaded %s (%s)\n", plugins[i].name(), argv[1]);
    }
    for (int i = 0; i < nplugins; i++) {
        for (int t = 0; t < THREADS; t++)
            plugins[i].expected[t] = plugins[i].work(seed_of(t));
        printf("work %s %llu\n", plugins[i].name(),
               (unsigned long long)plugins[i].expected[0]);
    }

    /* The host's own blocks: a small one, a large (mmapped) one. */
    void *small = malloc(64);
    void *big = malloc(8 << 20);
    int local = 0;

    pthread_t th[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    printf("threads: %d threads x %d plugins, every block owned by its "
           "plugin only\n",
           THREADS, nplugins);

    /* Mappings: disjoint, and each plugin's blocks inside its own. */
    for (int i = 0; i < nplugins; i++)
        get_mappings(i);
    for (int i = 0; i < nplugins; i++)
        for (int j = i + 1; j < nplugins; j++)
            for (size_t a = 0; a < nmaps[i]; a++)
                for (size_t b = 0; b < nmaps[j]; b++) {
                    uintptr_t a0 = maps[i][2 * a], a1 = a0 + maps[i][2 * a + 1];
                    uintptr_t b0 = maps[j][2 * b], b1 = b0 + maps[j][2 * b + 1];
                    if (a0 < b1 && b0 < a1)
                        FAIL("mappings of %s and %s overlap", plugins[i].name(),
                             plugins[j].name());
                }
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < nplugins; i++)
            for (int k = 0; k < ROUNDS * KEEP; k++)
                for (int j = 0; j < nplugins; j++)
                    if (in_maps(j, kept[t][i][k]) != (i == j))
                        FAIL("block %#lx of %s: in mappings of %s = %d",
                             (unsigned long)kept[t][i][k], plugins[i].name(),
                             plugins[j].name(), !(i == j));
    uintptr_t foreign[] = {(uintptr_t)small, (uintptr_t)big,
                           (uintptr_t)&local, (uintptr_t)&host_static,
                           (uintptr_t)host_blocks[0], 0};
    for (int i = 0; i < nplugins; i++)
        for (size_t f = 0; f < sizeof foreign / sizeof *foreign; f++)
            if (plugins[i].owns(foreign[f]) || in_maps(i, foreign[f]))
                FAIL("%s owns host address %#lx", plugins[i].name(),
                     (unsigned long)foreign[f]);
    for (int i = 0; i < nplugins; i++) {
        char line[256];
        plugins[i].stats(line, sizeof line);
        printf("mappings %s: %zu, disjoint from the others; stats %s\n",
               plugins[i].name(), nmaps[i], line);
        /* main + THREADS threads were alive together in every plugin. */
        if (plugins[i].heaps() < THREADS + 1)
            FAIL("%s made %zu heaps for %d threads", plugins[i].name(),
                 plugins[i].heaps(), THREADS + 1);
    }
    for (int i = 0; i < nplugins; i++)
        plugins[i].release();
    free(small);
    free(big);
    for (int t = 0; t < THREADS; t++)
        free((void *)host_blocks[t]);

    /* Unload the first plugin: the others keep working. */
    unload(0);
    for (int i = 1; i < nplugins; i++) {
        uintptr_t a[KEEP];
        if (plugins[i].work(seed_of(0)) != plugins[i].expected[0])
            FAIL("%s broken after unloading another plugin",
                 plugins[i].name());
        plugins[i].keep(KEEP, a);
        for (int k = 0; k < KEEP; k++)
            if (!plugins[i].owns(a[k]))
                FAIL("%s does not own its block after an unload",
                     plugins[i].name());
        plugins[i].release();
    }
    printf("others still work after the unload\n");

    /* Load the first plugin again, a few times: each time a fresh
     * allocator, and each unload leaves nothing behind. */
    for (int cycle = 0; cycle < 5; cycle++) {
        load(&plugins[0]);
        if (plugins[0].work(seed_of(1)) != plugins[0].expected[1])
            FAIL("reloaded %s computes wrong results", plugins[0].name());
        if (cycle == 0)
            printf("reloaded %s: works\n", plugins[0].name());
        if (cycle < 4)
            unload(0);
    }

    for (int i = 0; i < nplugins; i++)
        unload(i);
    /* The mode took effect: with RTLD_GLOBAL the plugins' (identically
     * named) symbols are visible process-wide; with RTLD_LOCAL they are not
     * visible at all. Checked last, on a fresh load: a symbol found through
     * RTLD_DEFAULT makes the main program depend on its library, which can
     * then no longer be unloaded. */
    load(&plugins[0]);
    void *global_name = dlsym(RTLD_DEFAULT, "plugin_name");
    if (dl_mode == RTLD_GLOBAL ? global_name != (void *)plugins[0].name
                               : global_name != NULL)
        FAIL("dlsym(RTLD_DEFAULT, \"plugin_name\") = %p", global_name);
    printf("global scope: plugin_name %s\n",
           global_name ? "visible" : "not visible");
    printf("host: OK\n");
    return 0;
}
