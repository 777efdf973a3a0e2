//! The workloads, modelled on classic allocator benchmarks.
//!
//! Each is a function `fn(scale) -> checksum`: `scale` multiplies its amount of work (1.0 is the
//! full suite, sized for about 0.5–3 s with the fastest allocator on a 2-core machine), and the
//! checksum is computed from the data the workload wrote and read back, so the work cannot be
//! optimised away and must come out identical under every allocator. Multi-threaded workloads are
//! arranged so that their checksum does not depend on scheduling.

mod collections;
mod cstyle;
mod growth;
mod large;
mod single;
mod threaded;

/// One benchmark workload.
pub struct Workload {
    /// Name on the command line and in the report.
    pub name: &'static str,
    /// One line for the report: what it exercises.
    pub what: &'static str,
    /// Runs the workload at `scale` and returns its checksum.
    pub run: fn(f64) -> u64,
}

/// Every workload, in report order.
pub const ALL: &[Workload] = &[
    Workload {
        name: "small-lifo",
        what: "one thread: batches of 1000 small blocks (16–128 B) allocated, then freed in reverse order",
        run: single::small_lifo,
    },
    Workload {
        name: "small-random",
        what: "one thread: 20k slots of 8–256 B blocks, a random slot freed and refilled each step",
        run: single::small_random,
    },
    Workload {
        name: "mixed-sizes",
        what: "one thread: random replacement of 1000 blocks of 16 B–1 MiB (log-distributed, mostly small), one byte written per page",
        run: single::mixed_sizes,
    },
    Workload {
        name: "malloc-large",
        what: "one thread: 6 live buffers of 1–32 MiB, a random one replaced each step, every page of a new buffer touched",
        run: large::malloc_large,
    },
    Workload {
        name: "collections",
        what: "one thread: a word-count-like program heavy in String, Vec, HashMap and BTreeMap",
        run: collections::collections,
    },
    Workload {
        name: "realloc-growth",
        what: "one thread: thousands of interleaved Vecs growing from bytes to 32 KiB, then 4 interleaved Vecs growing to 64 MiB each",
        run: growth::realloc_growth,
    },
    Workload {
        name: "larson",
        what: "4 threads (server churn): random replacement in per-thread slot arrays that are passed round a ring every round, so most frees are cross-thread",
        run: threaded::larson,
    },
    Workload {
        name: "prod-cons",
        what: "2 threads: a producer sends batches of Box<[u8]> through a channel, the consumer frees them: every free is remote",
        run: threaded::producer_consumer,
    },
    Workload {
        name: "churn-1t",
        what: "1 thread of independent random-replacement churn (16 B–2 KiB, some up to 32 KiB)",
        run: threaded::churn_1t,
    },
    Workload {
        name: "churn-2t",
        what: "2 threads each doing the full churn-1t work: equal time to churn-1t means perfect scaling",
        run: threaded::churn_2t,
    },
    Workload {
        name: "cache-scratch",
        what: "2 threads: small objects allocated by the main thread, freed by workers that then allocate, write heavily and free their own (passive false sharing)",
        run: threaded::cache_scratch,
    },
    Workload {
        name: "thread-churn",
        what: "thousands of short-lived threads, 2 at a time, each allocating and freeing, and leaving 10% of its blocks for a later thread to free",
        run: threaded::thread_churn,
    },
    Workload {
        name: "bignum",
        what: "one thread, C-style: 4000 big numbers of 1–48 limbs in heap buffers, each step a sum or product into a new buffer replacing a random one",
        run: cstyle::bignum,
    },
    Workload {
        name: "trees",
        what: "one thread, C-style: binary trees of nodes with 8–120 byte payloads built, walked twice and dropped beside a long-lived tree",
        run: cstyle::trees,
    },
    Workload {
        name: "exchange",
        what: "2 threads, C-style: each allocates batches of 16–512 byte blocks, sends them to the other and frees what it receives",
        run: cstyle::exchange,
    },
];

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.name == name)
}

/// `base` scaled by `scale`, at least 1 (so `--quick` never reduces a loop to nothing).
pub(crate) fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

/// Folds `x` into a running checksum (order-dependent, unlike a plain sum).
#[inline]
pub(crate) fn mix(acc: u64, x: u64) -> u64 {
    (acc ^ x).wrapping_mul(0x100_0000_01B3).rotate_left(5)
}
