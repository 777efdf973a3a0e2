//! A tour of emma: several isolated allocators in one process, what each
//! owns, and a quick speed comparison with the system allocator.
//!
//! Run with `cargo run --release --example tour` (add `--features tls` on
//! nightly for thread-local heaps).

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

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
        "  {name:<8} {:>9.1} MiB mapped  {:>3} segments  {:>3} huge  {:>2} heaps  {:>5} pages",
        s.mapped as f64 / (1 << 20) as f64,
        s.segments,
        s.huge_blocks,
        s.heaps,
        s.pages
    );
}

/// Ops per second of `threads` threads each doing `rounds` rounds of
/// allocating 1000 small blocks of mixed sizes and freeing them.
fn throughput<A: GlobalAlloc + Sync>(a: &'static A, threads: usize, rounds: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut ptrs = [std::ptr::null_mut(); 1000];
                for r in 0..rounds {
                    for (i, p) in ptrs.iter_mut().enumerate() {
                        let size = 8 + ((i * 7 + r + t) % 64) * 8;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: the layout has a non-zero size.
                        *p = unsafe { a.alloc(layout) };
                        assert!(!p.is_null(), "out of memory");
                        // SAFETY: a live block of at least 8 bytes.
                        unsafe { p.write(i as u8) };
                    }
                    for (i, p) in ptrs.iter().enumerate() {
                        let size = 8 + ((i * 7 + r + t) % 64) * 8;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: allocated above with this very layout.
                        unsafe { a.dealloc(black_box(*p), layout) };
                    }
                }
            });
        }
    });
    (threads * rounds * 2000) as f64 / start.elapsed().as_secs_f64()
}

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
    let maps = [mappings(Global), mappings(Cache), mappings(Scratch)];
    let mut overlaps = 0;
    for a in 0..3 {
        for b in a + 1..3 {
            for &(x, xl) in &maps[a] {
                for &(y, yl) in &maps[b] {
                    if x < y + yl && y < x + xl {
                        overlaps += 1;
                    }
                }
            }
        }
    }
    println!("  overlapping mappings between instances: {overlaps}");

    // 3. Freeing one subsystem's memory leaves the others untouched.
    free_all(&Scratch, scratch, 64 * 1024);
    Scratch.trim();
    println!("\nafter Scratch freed everything and trimmed:");
    print_stats("Global", Global.stats());
    print_stats("Cache", Cache.stats());
    print_stats("Scratch", Scratch.stats());
    free_all(&Cache, cache, 48);
    drop((index, big));

    // 4. A quick speed comparison (the full suite is in bench/).
    println!("\nsmall alloc/free throughput (million ops/s, higher is better):");
    static CACHE: Cache = Cache::new();
    static SYSTEM: System = System;
    for threads in [1, 2] {
        let rounds = 2000;
        let _ = throughput(&CACHE, threads, 50);
        let _ = throughput(&SYSTEM, threads, 50);
        let e = throughput(&CACHE, threads, rounds);
        let g = throughput(&SYSTEM, threads, rounds);
        println!(
            "  {threads} thread(s): emma {:>7.1}   glibc {:>7.1}   emma/glibc {:.2}x",
            e / 1e6,
            g / 1e6,
            e / g
        );
    }
}
