// Every global operator new and delete, called explicitly, under
// libemma.so: each must resolve to the library itself (not to libstdc++'s
// forwarders), return emma's blocks with the requested alignment, and the
// nothrow forms must return null on failure. Prints "cxx_ops: OK".
//
// With the argument "oom" the program asks the throwing operator new for
// more than can exist: emma prints a message and aborts (documented).
#include <dlfcn.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

static int failures;

#define CHECK(cond, what)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            std::fprintf(stderr, "cxx_ops: FAILED line %d: %s (%s)\n",      \
                         __LINE__, #cond, what);                            \
            failures++;                                                     \
        }                                                                   \
    } while (0)

using owns_fn = int (*)(const void *);
static owns_fn owns;

// The file that defines `symbol` as this process resolves it.
static std::string defined_in(const char *symbol) {
    void *addr = dlsym(RTLD_DEFAULT, symbol);
    Dl_info info;
    if (!addr || !dladdr(addr, &info) || !info.dli_fname)
        return "?";
    return info.dli_fname;
}

static void check_block(void *p, std::size_t size, std::size_t align, const char *what) {
    CHECK(p != nullptr, what);
    if (!p)
        return;
    CHECK(owns(p) == 1, what);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % align == 0, what);
    std::memset(p, 0x5a, size);
}

int main(int argc, char **argv) {
    owns = reinterpret_cast<owns_fn>(dlsym(RTLD_DEFAULT, "emma_owns"));
    if (!owns) {
        std::fprintf(stderr, "cxx_ops: libemma.so is not loaded\n");
        return 2;
    }
    if (argc > 1 && std::strcmp(argv[1], "oom") == 0) {
        void *volatile p = ::operator new(SIZE_MAX / 2);
        std::printf("cxx_ops: operator new returned %p\n", p);
        return 0;
    }

    const char *symbols[] = {
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvm", "_ZdaPvm", "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
        "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    };
    for (const char *s : symbols) {
        std::string file = defined_in(s);
        CHECK(file.find("libemma") != std::string::npos, s);
    }

    for (std::size_t size : {1UL, 24UL, 1000UL, 70000UL, 3UL << 20}) {
        void *p = ::operator new(size);
        check_block(p, size, 16, "new");
        ::operator delete(p);
        p = ::operator new[](size);
        check_block(p, size, 16, "new[]");
        ::operator delete[](p);
        p = ::operator new(size, std::nothrow);
        check_block(p, size, 16, "new nothrow");
        ::operator delete(p, std::nothrow);
        p = ::operator new[](size, std::nothrow);
        check_block(p, size, 16, "new[] nothrow");
        ::operator delete[](p, std::nothrow);
        p = ::operator new(size);
        ::operator delete(p, size);
        p = ::operator new[](size);
        ::operator delete[](p, size);
        for (std::size_t align : {32UL, 4096UL, 1UL << 21}) {
            std::align_val_t a{align};
            p = ::operator new(size, a);
            check_block(p, size, align, "aligned new");
            ::operator delete(p, a);
            p = ::operator new[](size, a);
            check_block(p, size, align, "aligned new[]");
            ::operator delete[](p, a);
            p = ::operator new(size, a, std::nothrow);
            check_block(p, size, align, "aligned new nothrow");
            ::operator delete(p, a, std::nothrow);
            p = ::operator new[](size, a, std::nothrow);
            check_block(p, size, align, "aligned new[] nothrow");
            ::operator delete[](p, a, std::nothrow);
            p = ::operator new(size, a);
            ::operator delete(p, size, a);
            p = ::operator new[](size, a);
            ::operator delete[](p, size, a);
        }
    }

    // Out of memory: the nothrow forms return null.
    void *volatile none = ::operator new(SIZE_MAX / 2, std::nothrow);
    CHECK(none == nullptr, "nothrow new of SIZE_MAX/2");
    none = ::operator new[](SIZE_MAX / 2, std::align_val_t{64}, std::nothrow);
    CHECK(none == nullptr, "aligned nothrow new[] of SIZE_MAX/2");

    // Ordinary C++ on top: containers of over-aligned objects.
    struct alignas(128) Wide {
        char bytes[200];
    };
    std::vector<Wide> v(1000);
    CHECK(reinterpret_cast<std::uintptr_t>(v.data()) % 128 == 0, "vector<Wide>");
    CHECK(owns(v.data()) == 1, "vector<Wide>");
    std::vector<std::string> words;
    for (int i = 0; i < 10000; i++)
        words.push_back(std::string(20 + i % 50, 'a' + i % 26));
    CHECK(words[9999].size() == 20 + 9999 % 50, "strings");

    if (failures)
        return 1;
    std::printf("cxx_ops: OK\n");
    return 0;
}
