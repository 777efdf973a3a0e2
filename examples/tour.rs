//! A tour of emma: several isolated allocators in one process, what each
//! owns, and a quick speed comparison with the system allocator.
//!
//! Run with `cargo run --release --example tour` (per-thread heaps through
//! TLS, the default; `--no-default-features` for the thread-pointer mode).

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

// The process's global allocator: every Vec, String and Box below.
emma::emma_instance!(
    /// The program's own heap.
    pub Global
);
#[global_allocator]
static GLOBAL: Global = Global::new();

// Two more, for subsystems that want their own heap.
emma::emma_instance!(pub Cache);
emma::emma_instance!(pub Scratch);

/// Allocates `n` blocks of `size` bytes from `a`, fills them, returns them.
/// (Addresses are returned as `usize` so they can cross threads.)
fn fill<A: GlobalAlloc>(a: &A, n: usize, size: usize) -> Vec<usize> {
    let layout = Layout::from_size_align(size, 8).unwrap();
    (0..n)
        // SAFETY: the layout has a non-zero size; the block is written within it.
        .map(|i| unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(i as u8, size);
            p as usize
        })
        .collect()
}

fn free_all<A: GlobalAlloc>(a: &A, blocks: Vec<usize>, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for p in blocks {
        // SAFETY: `p` came from `a.alloc(layout)` in `fill`.
        unsafe { a.dealloc(p as *mut u8, layout) };
    }
}

/// The `(base, len)` of every mapping an instance holds.
fn mappings<I: InstanceExt>(i: I) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    i.for_each_mapping(|b, l| v.push((b, l)));
    v
}

fn print_stats(name: &str, s: emma::Stats) {
    println!(
        "  {name:<8} {:>7.1} MiB mapped {:>7.1} MiB committed  {:>3} segments  {:>3} huge  \
         {:>2} heaps  {:>5} pages",
        s.mapped as f64 / (1 << 20) as f64,
        s.committed as f64 / (1 << 20) as f64,
        s.segments,
        s.huge_blocks,
        s.heaps,
        s.pages
    );
}

/// One thread's work for the throughput figure: `rounds` times, allocate
/// 1000 blocks of 8 to 512 bytes (sizes cycling through 64 classes), write
/// a byte into each, then free them all.
fn churn<A: GlobalAlloc>(a: &A, t: usize, rounds: usize) {
    let mut ptrs = [std::ptr::null_mut(); 1000];
    for r in 0..rounds {
        for (i, p) in ptrs.iter_mut().enumerate() {
            let layout = Layout::from_size_align(8 + ((i * 7 + r + t) % 64) * 8, 8).unwrap();
            // SAFETY: the layout has a non-zero size.
            *p = unsafe { a.alloc(layout) };
            assert!(!p.is_null(), "out of memory");
            // SAFETY: a live block of at least 8 bytes.
            unsafe { p.write(i as u8) };
        }
        for (i, p) in ptrs.iter().enumerate() {
            let layout = Layout::from_size_align(8 + ((i * 7 + r + t) % 64) * 8, 8).unwrap();
            // SAFETY: allocated above with this very layout.
            unsafe { a.dealloc(black_box(*p), layout) };
        }
    }
}

/// Million operations (an allocation or a free) per second of `threads`
/// threads each doing [`churn`]: every run lasts at least [`RUN`], and the
/// best of [`RUNS`] runs is reported (the others lost time to the rest of
/// the machine).
fn throughput<A: GlobalAlloc + Sync>(a: &'static A, threads: usize) -> f64 {
    const ROUNDS_PER_CHECK: usize = 50;
    let mut best = 0f64;
    for _ in 0..RUNS {
        let start = Instant::now();
        let rounds = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut rounds = 0;
                        while start.elapsed() < RUN {
                            churn(a, t, ROUNDS_PER_CHECK);
                            rounds += ROUNDS_PER_CHECK;
                        }
                        rounds
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .sum::<usize>()
        });
        let ops = (rounds * 2000) as f64 / start.elapsed().as_secs_f64();
        best = best.max(ops / 1e6);
    }
    best
}

/// How long one throughput run lasts, at least.
const RUN: Duration = Duration::from_millis(400);
/// Runs per figure; the best counts.
const RUNS: usize = 3;

fn main() {
    println!("emma tour: three isolated allocators in one process\n");

    // 1. Everyday Rust code runs on the global instance.
    let mut index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..50_000usize {
        index.entry(format!("key{}", i % 5000)).or_default().push(i);
    }
    let big = vec![0u64; 4 << 20]; // 32 MiB: a huge block with its own mapping

    // 2. Subsystems use their own instances, from several threads.
    let (cache, scratch) = std::thread::scope(|s| {
        let c = s.spawn(|| fill(&Cache, 20_000, 48));
        let d = s.spawn(|| fill(&Scratch, 300, 64 * 1024));
        (c.join().unwrap(), d.join().unwrap())
    });

    println!("what each instance holds:");
    print_stats("Global", Global.stats());
    print_stats("Cache", Cache.stats());
    print_stats("Scratch", Scratch.stats());

    println!("\nwho owns what (owns() answers for any pointer, without touching it):");
    let probes: [(&str, *const u8); 4] = [
        ("a BTreeMap key", index.keys().next().unwrap().as_ptr()),
        ("the 32 MiB vec", big.as_ptr().cast()),
        ("a Cache block", cache[0] as *const u8),
        ("a Scratch block", scratch[0] as *const u8),
    ];
    for (what, p) in probes {
        println!(
            "  {what:<16} Global: {:<5}  Cache: {:<5}  Scratch: {:<5}",
            Global.owns(p),
            Cache.owns(p),
            Scratch.owns(p)
        );
    }
    println!(
        "  overlapping mappings between instances: {}",
        overlaps(&[mappings(Global), mappings(Cache), mappings(Scratch)])
    );

    // 3. Freeing one subsystem's memory leaves the others untouched, and
    // comes back to the kernel without a `trim()`: Scratch's blocks were
    // allocated by a thread that has exited, and are freed here, by
    // another; emma's slow paths find the exited thread's heap, collect it
    // and purge what it held once idle for the purge delay (10 ms; empty
    // segments kept for reuse wait ten delays, then half a second more
    // before they are unmapped).
    free_all(&Scratch, scratch, 64 * 1024);
    println!("\njust after Scratch freed everything (no trim):");
    print_stats("Scratch", Scratch.stats());
    for _ in 0..250 {
        // Light use of Scratch: its slow paths do the collecting.
        free_all(&Scratch, fill(&Scratch, 4, 100), 100);
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("250 ms later, after a few small allocations (still no trim):");
    print_stats("Global", Global.stats());
    print_stats("Cache", Cache.stats());
    print_stats("Scratch", Scratch.stats());
    for _ in 0..600 {
        free_all(&Scratch, fill(&Scratch, 4, 100), 100);
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("and 600 ms later (empty segments stay mapped, purged, for reuse until then):");
    print_stats("Scratch", Scratch.stats());
    free_all(&Cache, cache, 48);
    drop((index, big));

    // 4. A quick speed comparison (the full suite is in bench/).
    compare_speed();
}

/// How many mappings of one instance overlap a mapping of another.
fn overlaps(maps: &[Vec<(usize, usize)>]) -> usize {
    let mut n = 0;
    for (a, ma) in maps.iter().enumerate() {
        for mb in &maps[a + 1..] {
            for &(x, xl) in ma {
                n += mb
                    .iter()
                    .filter(|&&(y, yl)| x < y + yl && y < x + xl)
                    .count();
            }
        }
    }
    n
}

/// Small-block throughput of an emma instance against glibc's malloc.
fn compare_speed() {
    println!(
        "\nsmall-block throughput: each thread allocates 1000 blocks of 8-512 bytes, \
         then frees them, over and over\n(million allocations + frees per second, best of \
         {RUNS} runs of {RUN:?}; higher is better):"
    );
    static CACHE: Cache = Cache::new();
    static SYSTEM: System = System;
    for threads in [1, 2] {
        let e = throughput(&CACHE, threads);
        let g = throughput(&SYSTEM, threads);
        println!(
            "  {threads} thread(s): emma {e:>7.1}   glibc {g:>7.1}   emma/glibc {:.2}x",
            e / g
        );
    }
}
