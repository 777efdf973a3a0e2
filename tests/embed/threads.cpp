// A C++ program that allocates the ordinary C++ way - new/delete,
// std::string, std::vector, std::map, std::unordered_map, shared_ptr - on
// several threads, and hands objects from thread to thread so that most
// are deleted by a thread other than the one that created them.
// tests/embed_preload.rs runs it with and without emma preloaded (C++'s
// operator new calls malloc) and compares the output.
//
//     threads [THREADS] [ROUNDS]
//
// Prints a checksum per phase; the output depends only on the arguments.
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

struct Node {
    std::string name;
    std::vector<uint64_t> values;
    std::map<std::string, std::shared_ptr<Node>> children;
};

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

// A blocking queue of owned objects between threads.
template <class T> class Queue {
    std::mutex m;
    std::condition_variable cv;
    std::deque<T> q;

  public:
    void push(T v) {
        {
            std::lock_guard<std::mutex> g(m);
            q.push_back(std::move(v));
        }
        cv.notify_one();
    }
    T pop() {
        std::unique_lock<std::mutex> g(m);
        cv.wait(g, [&] { return !q.empty(); });
        T v = std::move(q.front());
        q.pop_front();
        return v;
    }
};

static std::unique_ptr<Node> build(uint64_t seed, int depth) {
    auto n = std::make_unique<Node>();
    n->name = "node-" + std::to_string(seed % 100000) + std::string(seed % 200, 'x');
    for (uint64_t i = 0; i < 1 + seed % 50; i++)
        n->values.push_back(mix(seed + i));
    if (depth > 0)
        for (int c = 0; c < 3; c++) {
            uint64_t s = mix(seed * 3 + c);
            n->children[std::to_string(s % 1000)] = std::shared_ptr<Node>(build(s, depth - 1));
        }
    return n;
}

static uint64_t digest(const Node &n) {
    uint64_t h = n.name.size();
    for (char c : n.name)
        h = h * 131 + (unsigned char)c;
    for (uint64_t v : n.values)
        h = mix(h ^ v);
    for (auto &kv : n.children)
        h = mix(h + digest(*kv.second) + kv.first.size());
    return h;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    int rounds = argc > 2 ? atoi(argv[2]) : 2000;

    // Phase 1: a pipeline. Thread t builds trees and passes them to thread
    // t+1, which digests and deletes them.
    std::vector<Queue<std::unique_ptr<Node>>> queues(threads);
    std::vector<uint64_t> sums(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++)
        ts.emplace_back([&, t] {
            uint64_t sum = 0;
            for (int r = 0; r < rounds; r++) {
                queues[(t + 1) % threads].push(build(mix(t * 1000003 + r), 3));
                std::unique_ptr<Node> got = queues[t].pop();
                sum += digest(*got);
                // `got` is deleted here: built by another thread.
            }
            sums[t] = sum;
        });
    for (auto &th : ts)
        th.join();
    uint64_t total = 0;
    for (uint64_t s : sums)
        total += s;
    printf("pipeline: %d threads x %d trees, digest %016llx\n", threads, rounds,
           (unsigned long long)total);

    // Phase 2: per-thread hash maps of strings, grown and shrunk; then
    // merged into one map on the main thread and freed there.
    std::vector<std::unordered_map<std::string, std::vector<int>>> maps(threads);
    ts.clear();
    for (int t = 0; t < threads; t++)
        ts.emplace_back([&, t] {
            auto &m = maps[t];
            for (int i = 0; i < rounds * 20; i++) {
                std::string k = "key" + std::to_string(mix(t + i * 7) % 5000);
                auto &v = m[k];
                v.push_back(i);
                if (v.size() > 40)
                    m.erase(k);
            }
        });
    for (auto &th : ts)
        th.join();
    std::map<std::string, size_t> merged;
    for (auto &m : maps)
        for (auto &kv : m)
            merged[kv.first] += kv.second.size();
    maps.clear();
    uint64_t h = 0;
    for (auto &kv : merged)
        h = mix(h + kv.second + kv.first.size());
    printf("maps: %zu keys, digest %016llx\n", merged.size(), (unsigned long long)h);

    // Phase 3: big buffers (page-sized and huge) through new[]/delete[].
    uint64_t big = 0;
    for (int i = 0; i < 50; i++) {
        size_t n = (size_t)(1 + i % 7) << (12 + i % 12);
        char *p = new char[n];
        for (size_t j = 0; j < n; j += 4096)
            p[j] = (char)(i + j);
        big += (unsigned char)p[n / 4096 / 2 * 4096] + n;
        delete[] p;
    }
    printf("buffers: %llu\n", (unsigned long long)big);
    return 0;
}
