//! Instance statistics: independent per instance, moving with small and
//! huge allocations and back after frees and `trim`, shown by `Display`,
//! and written by `print_stats` without allocating (checked in a child
//! process whose stderr is captured). Live blocks and bytes: exact for
//! blocks of known sizes on several threads, within the stated bound while
//! remote frees are in flight, and safe to read while other threads churn.
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::{InstanceExt, Stats};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;
use std::sync::{mpsc, Arc, Barrier};

const MIB: usize = 1 << 20;
const SEGMENT: usize = 4 * MIB;
/// One heap-metadata arena chunk (see `instance.rs`).
const META_CHUNK: usize = 64 * 1024;

// ---- a counting global allocator --------------------------------------------
//
// The test harness allocates with `System`; counting per thread lets a test
// check that a call made no allocation at all on its thread.

thread_local! {
    static SYSTEM_ALLOCS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = SYSTEM_ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = SYSTEM_ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn system_allocs() -> usize {
    SYSTEM_ALLOCS.with(|c| c.get())
}

// ---- helpers ---------------------------------------------------------------

/// The MiB figure as `Display` writes it (one decimal, rounded), unpadded.
fn mib(bytes: usize) -> String {
    let tenths = (bytes as u128 * 10 + (1 << 19)) >> 20;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

/// `s` without whitespace (the table pads its columns).
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect()
}

/// The whitespace-separated words of the table line starting with `key`.
fn line_words<'a>(table: &'a str, key: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}` line in\n{table}"));
    line.split_whitespace().collect()
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    unsafe { std::ptr::write_bytes(p, seed, len) }
}

fn check(p: *const u8, len: usize, seed: u8) {
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    assert!(s.iter().all(|&b| b == seed), "block {p:p} corrupted");
}

// ---- instances ---------------------------------------------------------------

emma::emma_instance!(Counted);
emma::emma_instance!(Bystander);
emma::emma_instance!(Remote);
emma::emma_instance!(Sent);
emma::emma_instance!(Stranded);
emma::emma_instance!(Stranded2);
emma::emma_instance!(Heaped);
emma::emma_instance!(Shown);
emma::emma_instance!(Child);

// ---- tests -----------------------------------------------------------------

/// Small blocks map a segment, huge blocks a mapping each; frees and `trim`
/// bring every figure back to the heap metadata, and another instance's
/// figures never move.
#[test]
fn stats_follow_small_and_huge_allocations() {
    assert_eq!(
        Counted.stats(),
        Stats::default(),
        "nothing mapped before use"
    );
    assert_eq!(Bystander.stats(), Stats::default());

    // Small blocks: one heap, a segment or two, 64 KiB of heap metadata.
    let small = Layout::from_size_align(48, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..20_000)
        .map(|i| {
            let p = unsafe { Counted.alloc(small) };
            assert!(!p.is_null());
            fill(p, 48, i as u8);
            p
        })
        .collect();
    let s = Counted.stats();
    assert_eq!(s.heaps, 1);
    assert_eq!(s.meta, META_CHUNK);
    assert!(s.segments >= 1 && s.segments <= 2, "{s:?}");
    assert_eq!(s.mapped, s.segments * SEGMENT + s.meta, "{s:?}");
    assert!(
        s.committed >= 20_000 * 48 && s.committed <= s.mapped,
        "{s:?}"
    );
    assert!(s.pages >= 1);
    assert_eq!((s.huge_blocks, s.huge_bytes, s.failures), (0, 0, 0));
    assert!(s.peak_mapped >= s.mapped);
    let small_mapped = s.mapped;

    // A huge block: its own mapping, counted in `mapped` and `committed`.
    let huge = Layout::from_size_align(8 * MIB, 8).unwrap();
    let h = unsafe { Counted.alloc(huge) };
    assert!(!h.is_null());
    fill(h, 8 * MIB, 0xA5);
    let s = Counted.stats();
    assert_eq!(s.huge_blocks, 1);
    assert!(
        s.huge_bytes >= 8 * MIB && s.huge_bytes <= 8 * MIB + SEGMENT,
        "{s:?}"
    );
    assert_eq!(s.mapped, small_mapped + s.huge_bytes, "{s:?}");
    assert!(s.committed >= 20_000 * 48 + 8 * MIB);

    // Aligned beyond a segment: a second kind of huge mapping.
    let over = Layout::from_size_align(6 * MIB, 16 * MIB).unwrap();
    let o = unsafe { Counted.alloc(over) };
    assert!(!o.is_null());
    assert_eq!(o as usize % (16 * MIB), 0);
    fill(o, 6 * MIB, 0x5A);
    let s = Counted.stats();
    assert_eq!(s.huge_blocks, 2);
    assert!(s.mapped >= small_mapped + 14 * MIB);
    let peak = s.mapped;
    assert!(s.peak_mapped >= peak);

    // Nothing of this reached the other instance.
    assert_eq!(Bystander.stats(), Stats::default());

    // Free the huge blocks: no longer live (a freed one may stay cached,
    // i.e. mapped, until trim; with `hardened` twice: its addresses in
    // quarantine, its pages cached at new ones).
    check(h, 8 * MIB, 0xA5);
    check(o, 6 * MIB, 0x5A);
    unsafe {
        Counted.dealloc(h, huge);
        Counted.dealloc(o, over);
    }
    let s = Counted.stats();
    assert_eq!((s.huge_blocks, s.huge_bytes), (0, 0), "{s:?}");
    let cached = if cfg!(feature = "hardened") { 2 } else { 1 } * (8 * MIB + SEGMENT);
    assert!(s.mapped <= small_mapped + cached, "{s:?}");

    // Free the small blocks and trim: only the heap metadata stays.
    for (i, &p) in blocks.iter().enumerate() {
        check(p, 48, i as u8);
        unsafe { Counted.dealloc(p, small) };
    }
    Counted.trim();
    let s = Counted.stats();
    assert_eq!(s.segments, 0, "{s:?}");
    assert_eq!(s.pages, 0, "{s:?}");
    assert_eq!(s.mapped, s.meta, "{s:?}");
    assert_eq!(s.committed, s.meta, "{s:?}");
    // (Cached segments are unmapped outright, so `purged` may stay 0.)
    assert!(s.peak_mapped >= peak);
    assert_eq!(s.failures, 0);
    let mut mappings = 0;
    Counted.for_each_mapping(|_, _| mappings += 1);
    assert_eq!(mappings, 0);
    Counted.check().unwrap();

    // The bystander starts from zero and moves on its own.
    let p = unsafe { Bystander.alloc(small) };
    let b = Bystander.stats();
    assert_eq!((b.heaps, b.segments), (1, 1));
    assert_eq!(
        Counted.stats(),
        s,
        "the other instance's use moved our figures"
    );
    unsafe { Bystander.dealloc(p, small) };
}

/// `heaps` counts one heap per thread alive at once; `remote_frees` counts
/// blocks freed by another thread once their owner collects them.
#[test]
fn heaps_and_remote_frees_are_counted() {
    const THREADS: usize = 3;
    const BLOCKS: usize = 1000;
    let layout = Layout::from_size_align(100, 8).unwrap();
    let all_allocated = Arc::new(Barrier::new(THREADS + 1));
    let all_freed = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (all_allocated, all_freed, tx) =
                (all_allocated.clone(), all_freed.clone(), tx.clone());
            std::thread::spawn(move || {
                let v: Vec<usize> = (0..BLOCKS)
                    .map(|_| unsafe { Remote.alloc(layout) } as usize)
                    .collect();
                assert!(v.iter().all(|&p| p != 0));
                tx.send(v).unwrap();
                all_allocated.wait();
                all_freed.wait();
                // Collect what the main thread freed into our heap.
                Remote.trim();
                Remote.check().unwrap();
            })
        })
        .collect();
    all_allocated.wait();
    assert_eq!(Remote.stats().heaps, THREADS, "one heap per live thread");
    for _ in 0..THREADS {
        for p in rx.recv().unwrap() {
            unsafe { Remote.dealloc(p as *mut u8, layout) };
        }
    }
    all_freed.wait();
    for w in workers {
        w.join().unwrap();
    }
    let s = Remote.stats();
    assert_eq!(s.remote_frees, THREADS * BLOCKS, "{s:?}");
    assert_eq!(s.heaps, THREADS, "the main thread never allocated");
    assert_eq!(
        s.segments, 0,
        "each thread trimmed after its blocks came back: {s:?}"
    );
}

/// A thread's remote frees reach their owner without a `trim`: the chain
/// the freeing thread keeps goes out on one of its own slow paths once a
/// tick passed, while the thread lives and keeps allocating.
#[test]
fn remote_frees_go_out_on_the_freeing_threads_slow_paths() {
    // Ten blocks of one page: one chain, short of full.
    const BLOCKS: usize = 10;
    let layout = Layout::from_size_align(100, 8).unwrap();
    let s = freed_by_another_thread(Sent, BLOCKS, layout, |_| {
        // Slow paths for 20 ms (every refill of a page's free list is
        // one), and nothing else that would send the chain.
        let sizes: Vec<Layout> = (4..12)
            .map(|s| Layout::from_size_align(1 << s, 8).unwrap())
            .collect();
        let churn = || {
            let v: Vec<(usize, Layout)> = sizes
                .iter()
                .flat_map(|&l| (0..8).map(move |_| (unsafe { Sent.alloc(l) } as usize, l)))
                .collect();
            for (p, l) in v {
                unsafe { Sent.dealloc(p as *mut u8, l) };
            }
        };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(20) {
            churn();
        }
        // Slow paths at least 20 ms after the first: a tick is due,
        // however the thread was scheduled.
        churn();
        Vec::new()
    });
    assert_eq!(s.remote_frees, BLOCKS, "{s:?}");
}

/// Once a thread holds more than 64 KiB of other heaps' blocks, its next
/// slow path sends them, without waiting for a tick.
#[test]
fn remote_frees_past_64_kib_go_out_on_the_next_slow_path() {
    // 120 KiB, larger than `hardened`'s quarantine takes.
    const BLOCKS: usize = 6;
    let layout = Layout::from_size_align(20 << 10, 8).unwrap();
    let s = freed_by_another_thread(Heaped, BLOCKS, layout, |first_tick| {
        // One slow path, microseconds later: a class never used.
        let other = Layout::from_size_align(48, 8).unwrap();
        let q = unsafe { Heaped.alloc(other) } as usize;
        if first_tick.elapsed() > std::time::Duration::from_micros(200) {
            // Then a tick may have sent them, and this run does not tell
            // the bound from the tick.
            eprintln!("remote_frees_past_64_kib: descheduled, the bound went untested");
        }
        vec![(q, other)]
    });
    assert_eq!(s.remote_frees, BLOCKS, "{s:?}");
}

/// Allocates `n` blocks of `layout` here and has another thread, with a
/// heap of its own, free them and then run `then`, given the time of that
/// heap's first slow path (and first tick). While that thread still
/// lives (its heap is not collected), takes this thread's inbox and
/// returns the statistics; the blocks `then` returns are freed after.
fn freed_by_another_thread<I: InstanceExt + GlobalAlloc + Copy + Send + 'static>(
    i: I,
    n: usize,
    layout: Layout,
    then: impl FnOnce(std::time::Instant) -> Vec<(usize, Layout)> + Send + 'static,
) -> Stats {
    let blocks: Vec<usize> = (0..n)
        .map(|_| unsafe { i.alloc(layout) } as usize)
        .collect();
    assert!(blocks.iter().all(|&p| p != 0));
    let freed = Arc::new(Barrier::new(2));
    let checked = Arc::new(Barrier::new(2));
    let freer = {
        let (freed, checked) = (freed.clone(), checked.clone());
        std::thread::spawn(move || {
            // A heap of its own first: a thread without one sends each
            // block at once.
            let mine = unsafe { i.alloc(layout) };
            let first_tick = std::time::Instant::now();
            for p in blocks {
                unsafe { i.dealloc(p as *mut u8, layout) };
            }
            let later = then(first_tick);
            freed.wait();
            checked.wait();
            for (p, l) in later {
                unsafe { i.dealloc(p as *mut u8, l) };
            }
            unsafe { i.dealloc(mine, layout) };
        })
    };
    freed.wait();
    // The owner takes its inbox (trim drains it; it sends nothing of the
    // other thread's).
    i.trim();
    let s = i.stats();
    checked.wait();
    freer.join().unwrap();
    s
}

/// The remote frees an exited thread still held reach their owner when its
/// heap is collected, even when that heap had given back every segment.
#[test]
fn remote_frees_of_an_exited_thread_without_segments_are_collected() {
    const BLOCKS: usize = 10;
    let layout = Layout::from_size_align(100, 8).unwrap();
    let blocks: Vec<usize> = (0..BLOCKS)
        .map(|_| unsafe { Stranded.alloc(layout) } as usize)
        .collect();
    std::thread::spawn(move || {
        // A heap of its own, then no segment left in it.
        unsafe { Stranded.dealloc(Stranded.alloc(layout), layout) };
        Stranded.trim();
        for p in blocks {
            unsafe { Stranded.dealloc(p as *mut u8, layout) };
        }
    })
    .join()
    .unwrap();
    // Collects the exited thread's heap, then takes our inbox.
    let s = trim_until(Stranded, |s| s.remote_frees == BLOCKS);
    if cfg!(feature = "tls") {
        assert_eq!(s.remote_frees, BLOCKS, "{s:?}");
    }
}

/// Blocks a thread frees into the heap of a thread that has exited reach
/// that heap in the same `trim` that collects it: the trimming thread sends
/// its own first.
#[test]
fn own_frees_into_an_exited_threads_heap_are_collected_in_one_trim() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    let (tx, rx) = mpsc::channel();
    let go = Arc::new(Barrier::new(2));
    let other = {
        let go = go.clone();
        std::thread::spawn(move || {
            tx.send(unsafe { Stranded2.alloc(layout) } as usize)
                .unwrap();
            go.wait();
        })
    };
    let p = rx.recv().unwrap();
    // A heap of our own (the other thread still holds its own), then one
    // remote free into the other thread's.
    let mine = unsafe { Stranded2.alloc(layout) };
    unsafe { Stranded2.dealloc(p as *mut u8, layout) };
    go.wait();
    other.join().unwrap();
    // The kernel may report a joined thread alive for a moment.
    std::thread::sleep(std::time::Duration::from_millis(20));
    Stranded2.trim();
    let s = Stranded2.stats();
    assert_eq!(s.heaps, 2, "{s:?}");
    if cfg!(feature = "tls") {
        // (Without `tls` the exited thread's stack may have gone to
        // another test's thread, and its heap with it.)
        assert_eq!(s.live.blocks, 1, "only ours is live: {s:?}");
    }
    unsafe { Stranded2.dealloc(mine, layout) };
}

/// `trim()`s until `done` holds for the statistics (at most a second: the
/// kernel may report a joined thread alive for a moment), and returns them.
/// In thread-pointer mode an exited thread's heap is collected only when
/// its stack is provably unused, which a stack reused by another test's
/// thread can delay: one trim then, and the callers check nothing.
fn trim_until<I: InstanceExt>(i: I, done: impl Fn(&Stats) -> bool) -> Stats {
    let start = std::time::Instant::now();
    loop {
        i.trim();
        let s = i.stats();
        if done(&s) || start.elapsed() > std::time::Duration::from_secs(1) {
            return s;
        }
        if !cfg!(feature = "tls") {
            // Only with `tls` is an exited thread proven gone.
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `Display` writes every figure of the snapshot.
#[test]
fn display_shows_the_figures() {
    let layout = Layout::from_size_align(3000, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..500).map(|_| unsafe { Shown.alloc(layout) }).collect();
    let huge = Layout::from_size_align(3 * MIB, 8).unwrap();
    let h = unsafe { Shown.alloc(huge) };
    let s = Shown.stats();
    let text = s.to_string();
    eprintln!("{text}");

    assert_eq!(s.live.blocks, 501, "{s:?}");
    let expect = [
        format!("live {} ({} blocks)", mib(s.live.bytes), s.live.blocks),
        format!("mapped {} (peak {})", mib(s.mapped), mib(s.peak_mapped)),
        format!("committed {}", mib(s.committed)),
        format!("segments {} ({} pages in use)", s.segments, s.pages),
        format!("huge blocks 1 ({})", mib(s.huge_bytes)),
        format!("heaps 1 (metadata {})", mib(s.meta)),
        "remote frees 0".to_string(),
        format!("purged {}", mib(s.purged)),
        "failures 0".to_string(),
    ];
    for (line, want) in text.lines().zip(&expect) {
        assert_eq!(squeeze(line), squeeze(want), "in\n{text}");
    }
    assert_eq!(text.lines().count(), 9);

    unsafe {
        Shown.dealloc(h, huge);
        for p in blocks {
            Shown.dealloc(p, layout);
        }
    }
}

const CHILD_ENV: &str = "EMMA_LIFECYCLE_STATS_CHILD";

fn child_hook(_requested: usize, _limit: usize) {
    // Inside the failing allocation: must not allocate from `Child`.
    Child.print_stats("from-limit-hook");
}

/// The child half of `print_stats_writes_the_table_without_allocating`.
fn print_stats_child() {
    let layout = Layout::from_size_align(200, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..5000).map(|_| unsafe { Child.alloc(layout) }).collect();

    // print_stats makes no allocation on this thread (through the global
    // allocator; emma's own allocations would show in `Child.stats()`).
    let probe = system_allocs();
    drop(std::hint::black_box(String::from("the counter counts")));
    assert!(
        system_allocs() > probe,
        "the counting allocator is not in use"
    );
    let before = (system_allocs(), Child.stats());
    Child.print_stats("child");
    let after = (system_allocs(), Child.stats());
    if before != after {
        eprintln!("ALLOCATED in print_stats: {before:?} -> {after:?}");
        std::process::exit(3);
    }
    eprintln!("---display---\n{}---end---", Child.stats());

    // From inside a failing allocation, through the limit hook.
    Child.set_limit(Some(Child.stats().mapped));
    Child.set_limit_hook(Some(child_hook));
    let count = system_allocs();
    let p = unsafe { Child.alloc(Layout::from_size_align(2 * MIB, 8).unwrap()) };
    if !p.is_null() || system_allocs() != count {
        eprintln!("UNEXPECTED: huge allocation past the limit gave {p:p}");
        std::process::exit(4);
    }
    eprintln!("---display-after-failure---\n{}---end---", Child.stats());
    for p in blocks {
        unsafe { Child.dealloc(p, layout) };
    }
}

/// `print_stats` writes the `Display` table, headed by the name, straight
/// to fd 2, allocates nothing, and works from inside a limit hook.
#[test]
fn print_stats_writes_the_table_without_allocating() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return print_stats_child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "print_stats_writes_the_table_without_allocating",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("ALLOCATED") && !stderr.contains("UNEXPECTED"),
        "{stderr}"
    );

    let section = |start: &str| -> String {
        let from = stderr
            .find(start)
            .unwrap_or_else(|| panic!("no {start} in\n{stderr}"));
        let rest = &stderr[from + start.len()..];
        rest[..rest.find("---end---").unwrap()].to_string()
    };
    // The printed table is exactly the Display text, after the header line.
    let display = section("---display---\n");
    assert!(
        stderr.contains(&format!("emma instance child\n{display}")),
        "print_stats output differs from Display:\n{stderr}"
    );
    let figures = line_words(&display, "segments");
    assert_ne!(
        figures[1], "0",
        "the child's blocks are not shown:\n{display}"
    );
    // The hook's table shows the refused allocation.
    let after = section("---display-after-failure---\n");
    assert!(
        stderr.contains(&format!("emma instance from-limit-hook\n{after}")),
        "no table from the limit hook, or a different one:\n{stderr}"
    );
    assert_eq!(line_words(&after, "failures")[1], "1", "{after}");
}

// ---- live blocks and bytes ---------------------------------------------------

emma::emma_instance!(Tallied);
emma::emma_instance!(Churned);

/// Small sizes of every kind: exact classes, sizes between classes, a
/// multi-slice page class. Every 100th block is huge instead.
const LIVE_SIZES: [usize; 6] = [16, 24, 100, 1024, 3000, 200_000];
const LIVE_HUGE: usize = 3 * MIB / 2;

/// `n` blocks of the sizes above, allocated by the calling thread.
fn live_blocks(t: usize, n: usize) -> Vec<(usize, Layout)> {
    (0..n)
        .map(|i| {
            let size = if i % 100 == 99 {
                LIVE_HUGE
            } else {
                LIVE_SIZES[(i + t) % LIVE_SIZES.len()]
            };
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = unsafe { Tallied.alloc(l) };
            assert!(!p.is_null());
            fill(p, size.min(64), t as u8);
            (p as usize, l)
        })
        .collect()
}

/// The usable bytes of `blocks` (what `Live` counts per block).
fn usable(blocks: &[(usize, Layout)]) -> usize {
    blocks
        .iter()
        .map(|&(p, _)| unsafe { Tallied.usable_size(p as *mut u8) })
        .sum()
}

/// Four threads allocate blocks of known sizes and keep them: live figures
/// are exact. The main thread then frees half of each thread's blocks (remote
/// frees): until the owners collect them, those still count (the stated
/// bound: live is at least the truth and at most the truth plus the blocks
/// freed remotely). After each owner trims, the figures are exact again.
#[test]
#[cfg_attr(
    feature = "hardened",
    ignore = "hardened's usable_size is the requested size, live bytes count whole blocks"
)]
fn live_bytes_and_blocks_are_exact_then_bounded_by_remote_frees() {
    const THREADS: usize = 4;
    const N: usize = 700;
    let allocated = Arc::new(Barrier::new(THREADS + 1));
    let freed = Arc::new(Barrier::new(THREADS + 1));
    let trimmed = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (allocated, freed, trimmed, tx) = (
                allocated.clone(),
                freed.clone(),
                trimmed.clone(),
                tx.clone(),
            );
            std::thread::spawn(move || {
                tx.send(live_blocks(t, N)).unwrap();
                allocated.wait();
                freed.wait();
                Tallied.trim(); // collects what the main thread freed
                trimmed.wait();
            })
        })
        .collect();
    let mut all: Vec<Vec<(usize, Layout)>> = (0..THREADS).map(|_| rx.recv().unwrap()).collect();
    allocated.wait();

    let count = |v: &[Vec<(usize, Layout)>]| -> (usize, usize) {
        (
            v.iter().map(Vec::len).sum(),
            v.iter().map(|b| usable(b)).sum(),
        )
    };
    let (blocks, bytes) = count(&all);
    let requested: usize = all.iter().flatten().map(|(_, l)| l.size()).sum();
    let s = Tallied.stats();
    assert_eq!((s.live.blocks, s.live.bytes), (blocks, bytes), "{s:?}");
    assert!(bytes >= requested, "usable sizes are at least the requests");

    // Free every other block of each thread from here: remote frees.
    let mut remote = (0, 0);
    for v in &mut all {
        let mut keep = Vec::new();
        for (i, (p, l)) in v.drain(..).enumerate() {
            if i % 2 == 0 {
                remote.0 += 1;
                remote.1 += unsafe { Tallied.usable_size(p as *mut u8) };
                unsafe { Tallied.dealloc(p as *mut u8, l) };
            } else {
                keep.push((p, l));
            }
        }
        *v = keep;
    }
    let (blocks, bytes) = count(&all);
    let s = Tallied.stats();
    assert!(
        s.live.blocks >= blocks && s.live.blocks <= blocks + remote.0,
        "{s:?}: {blocks} live + at most {} in flight",
        remote.0
    );
    assert!(
        s.live.bytes >= bytes && s.live.bytes <= bytes + remote.1,
        "{s:?}: {bytes} live + at most {} in flight",
        remote.1
    );
    // The main thread's partial batch of remote frees goes out with its
    // trim; then each owner collects its inbox.
    Tallied.trim();
    freed.wait();
    trimmed.wait();
    for w in workers {
        w.join().unwrap();
    }
    let s = Tallied.stats();
    assert_eq!((s.live.blocks, s.live.bytes), (blocks, bytes), "{s:?}");

    for (p, l) in all.into_iter().flatten() {
        unsafe { Tallied.dealloc(p as *mut u8, l) };
    }
    Tallied.trim();
    let s = Tallied.stats();
    if cfg!(feature = "tls") {
        // `trim` also collects the heaps of exited threads.
        assert_eq!(s.live, emma::Live::default(), "{s:?}");
    } else {
        // Blocks freed into exited threads' heaps wait for a new thread to
        // inherit those heaps.
        assert!(s.live.blocks <= blocks, "{s:?}");
    }
}

/// Reading live figures while other threads allocate and free never
/// faults, and every snapshot stays within what is mapped.
#[test]
fn live_figures_can_be_read_during_churn() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut i = 0usize;
                while !stop.load(Relaxed) {
                    let size = if i.is_multiple_of(50) {
                        2 * MIB
                    } else {
                        [32, 500, 5000, 70_000][(i + t) % 4]
                    };
                    let l = Layout::from_size_align(size, 16).unwrap();
                    let p = unsafe { Churned.alloc(l) };
                    assert!(!p.is_null());
                    held.push_back((p, l));
                    if held.len() > 300 {
                        let (p, l) = held.pop_front().unwrap();
                        unsafe { Churned.dealloc(p, l) };
                    }
                    i += 1;
                }
                for (p, l) in held {
                    unsafe { Churned.dealloc(p, l) };
                }
                Churned.trim();
            })
        })
        .collect();
    for _ in 0..2000 {
        let s = Churned.stats();
        // The snapshot reads `mapped` before walking; the peak afterwards
        // bounds what the walk saw.
        let peak = Churned.stats().peak_mapped;
        assert!(s.live.bytes <= peak, "{s:?}, peak {peak}");
        assert!(s.live.blocks <= s.live.bytes / 16 + 1, "{s:?}");
    }
    stop.store(true, Relaxed);
    for c in churners {
        c.join().unwrap();
    }
}

// ---- statistics from a limit hook, whatever the refused mapping ------------

emma::emma_instance!(HookedFirst);

fn hooked_first_hook(_requested: usize, _limit: usize) {
    HookedFirst.print_stats("refused-first-heap");
}

const HOOK_CHILD_ENV: &str = "EMMA_LIFECYCLE_STATS_HOOK_CHILD";

/// The first allocation of an instance maps its heap metadata; when the
/// limit refuses that mapping, the limit hook may still read statistics
/// (which walk the instance's segments under its lock). Run in a child
/// with a deadline: a hang is the failure this guards against.
#[test]
fn limit_hook_can_read_stats_when_heap_metadata_is_refused() {
    if std::env::var_os(HOOK_CHILD_ENV).is_some() {
        HookedFirst.set_limit(Some(0));
        HookedFirst.set_limit_hook(Some(hooked_first_hook));
        let p = unsafe { HookedFirst.alloc(Layout::from_size_align(64, 8).unwrap()) };
        assert!(p.is_null());
        eprintln!("child: allocation refused");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "limit_hook_can_read_stats_when_heap_metadata_is_refused",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOOK_CHILD_ENV, "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the limit hook hung reading statistics");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{status:?}\n{err}");
    assert!(
        err.contains("emma instance refused-first-heap") && err.contains("allocation refused"),
        "{err}"
    );
}
