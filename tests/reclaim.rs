//! Memory of exited threads comes back by itself, and idle free memory is
//! purged after the purge delay, without `trim()`:
//! - 8 threads allocate 300 MiB and exit, the main thread frees it all:
//!   with only light allocation traffic after that, RSS returns near the
//!   start (the heaps of the exited threads are found and collected on the
//!   main thread's slow paths);
//! - the same in a C program with pthreads, through the `LD_PRELOAD`
//!   library, with realloc in the mix;
//! - one thread frees 100 MiB: committed memory drops after the purge
//!   delay, and stays (warm) while the delay has not passed;
//! - 20,000 short-lived threads, each leaving blocks for the next: RSS
//!   and the number of heaps stay bounded;
//! - collection racing a new thread that inherits the dead thread's
//!   stack, thread pointer and heap: every block stays intact;
//! - a larson-style server (worker threads replaced every round, about a
//!   fifth of the frees cross-thread), in Rust against the same work done
//!   by long-lived threads, and in C through both builds of the preload
//!   library (the thread-pointer build against the larger of the `tls`
//!   build's and glibc's): peaks within 1.5x of the reference.
//!
//! Every test uses its own instance (not the global allocator: the
//! harness's own allocations stay in glibc) and they run one at a time, as
//! RSS is the whole process's. Figures are printed (`--nocapture`).
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
#[path = "embed/util.rs"]
mod util;

use common::{check_stamp, layout, mib, rss, stamped_blocks, Rng};
use emma::InstanceExt;
use std::alloc::GlobalAlloc;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// RSS must come back to within this of the start.
const SLACK: usize = 16 * MIB;
/// ... within this long (the bound is on memory; the time is generous).
const WITHIN: Duration = Duration::from_secs(2);

/// One test at a time: RSS is the process's.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `LD_PRELOAD` library with `tls` on or off, built with this test's
/// profile.
fn preload_library(tls: bool) -> PathBuf {
    util::libemma_mode(tls)
}

/// Light traffic: a few blocks of several classes, allocated and freed.
fn light_traffic<A: GlobalAlloc>(a: &A) {
    for i in 0..16 {
        let l = layout(16 + i * 200, 16);
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        unsafe { a.dealloc(p, l) };
    }
}

/// Polls RSS under light traffic until it is within [`SLACK`] of `start`
/// or [`WITHIN`] passed; returns the last figure and the time it took.
fn settle<A: GlobalAlloc>(a: &A, start: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    loop {
        light_traffic(a);
        let now = rss();
        if now <= start + SLACK || t0.elapsed() > WITHIN {
            return (now, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn mode() -> &'static str {
    if cfg!(feature = "tls") {
        "tls"
    } else {
        "thread pointer"
    }
}

emma::emma_instance!(Exits);

/// (a) 8 threads allocate 300 MiB in total and exit; the main thread
/// frees everything and never calls `trim()`.
#[test]
fn exited_threads_memory_comes_back_without_trim() {
    const THREADS: usize = 8;
    const TOTAL: usize = 300 * MIB;
    let _g = serial();
    let start = rss();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64);
                let (mut done, mut blocks) = (0, Vec::new());
                while done < TOTAL / THREADS {
                    let size = if rng.chance(1, 50) {
                        rng.range(16 << 10, 256 << 10)
                    } else {
                        rng.range(16, 16 << 10)
                    };
                    let p = unsafe { Exits.alloc(layout(size, 16)) };
                    assert!(!p.is_null(), "out of memory");
                    unsafe { p.write_bytes(t as u8 + 1, size) };
                    blocks.push((p as usize, size));
                    done += size;
                }
                blocks
            })
        })
        .collect();
    let blocks: Vec<Vec<(usize, usize)>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let peak = rss();
    for (t, list) in blocks.into_iter().enumerate() {
        for (p, size) in list {
            let p = p as *mut u8;
            assert_eq!(unsafe { *p.add(size - 1) }, t as u8 + 1);
            unsafe { Exits.dealloc(p, layout(size, 16)) };
        }
    }
    let freed = rss();
    let (after, took) = settle(&Exits, start);
    let s = Exits.stats();
    eprintln!(
        "({}) RSS start {:.1} MiB, peak {:.1}, just after the frees {:.1}, \
         then {:.1} after {took:.0?} of light traffic, no trim\n{s}",
        mode(),
        mib(start),
        mib(peak),
        mib(freed),
        mib(after)
    );
    assert!(peak >= start + TOTAL, "RSS did not grow: {}", mib(peak));
    assert!(
        after <= start + SLACK,
        "memory of exited threads stayed: RSS {:.1} MiB, start {:.1} MiB\n{s}",
        mib(after),
        mib(start)
    );
}

emma::emma_instance!(Idle);
emma::emma_instance!(Warm);

/// One thread allocates 100 MiB and frees it: its free pages and the
/// cached segments are purged once idle for the purge delay, without
/// `trim()`; with a long delay they stay committed (warm) meanwhile.
fn free_and_wait<I: GlobalAlloc + InstanceExt + Copy>(i: I, wait: Duration) -> (usize, usize) {
    let mut rng = Rng::new(7);
    let mut blocks = Vec::new();
    let mut done = 0;
    while done < 100 * MIB {
        let size = rng.range(16, 64 << 10);
        let p = unsafe { i.alloc(layout(size, 16)) };
        assert!(!p.is_null());
        unsafe { p.write_bytes(1, size) };
        blocks.push((p as usize, size));
        done += size;
    }
    for (p, size) in blocks {
        unsafe { i.dealloc(p as *mut u8, layout(size, 16)) };
    }
    let freed = i.stats().committed;
    let t0 = Instant::now();
    while t0.elapsed() < wait {
        light_traffic(&i);
        if i.stats().committed <= SLACK {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (freed, i.stats().committed)
}

/// (e) Idle free memory of a live thread goes back after the delay, and
/// not before.
#[test]
fn idle_memory_is_purged_after_the_delay_and_not_before() {
    let _g = serial();
    Warm.set_purge_delay(Duration::from_secs(3600));
    let (warm_freed, warm_later) = free_and_wait(Warm, Duration::from_millis(300));
    let (freed, later) = free_and_wait(Idle, WITHIN);
    eprintln!(
        "({}) committed after freeing 100 MiB: delay 10 ms {:.1} MiB, then {:.1} MiB; \
         delay 1 h {:.1} MiB, 300 ms later {:.1} MiB",
        mode(),
        mib(freed),
        mib(later),
        mib(warm_freed),
        mib(warm_later)
    );
    // Give the warm memory back before asserting, for the next tests' RSS.
    let warm_stats = Warm.stats();
    Warm.trim();
    assert!(
        later <= SLACK,
        "idle memory stayed committed: {}",
        Idle.stats()
    );
    assert!(warm_freed >= 16 * MIB, "nothing stayed warm: {warm_stats}");
    assert!(
        warm_later + MIB >= warm_freed,
        "purged before the delay: {:.1} MiB of {:.1}\n{}",
        mib(warm_later),
        mib(warm_freed),
        warm_stats
    );
}

emma::emma_instance!(Churn);

/// (c) 20,000 short-lived threads, four at a time, each freeing what the
/// previous four left and leaving blocks for the next.
#[test]
fn thread_churn_stays_bounded() {
    const THREADS: usize = 20_000;
    const BATCH: usize = 4;
    const MAX_HEAPS: usize = 64;
    const RSS_BOUND: usize = 48 * MIB;
    let _g = serial();
    let start = rss();
    let mut left: Vec<Vec<(usize, usize)>> = vec![Vec::new(); BATCH];
    let mut max_rss = start;
    for round in 0..THREADS / BATCH {
        let handles: Vec<_> = left
            .drain(..)
            .enumerate()
            .map(|(i, inherited)| {
                std::thread::spawn(move || {
                    for (p, size) in inherited {
                        unsafe { Churn.dealloc(p as *mut u8, layout(size, 16)) };
                    }
                    let mut rng = Rng::new((round * BATCH + i) as u64);
                    let mut mine = Vec::new();
                    for k in 0..32 {
                        let size = if k == 0 {
                            48 << 10
                        } else {
                            rng.range(16, 4000)
                        };
                        let p = unsafe { Churn.alloc(layout(size, 16)) };
                        assert!(!p.is_null());
                        unsafe { p.write_bytes(k as u8, size) };
                        mine.push((p as usize, size));
                    }
                    // Free half, leave half for a thread of the next batch.
                    let keep = mine.split_off(16);
                    for (p, size) in mine {
                        unsafe { Churn.dealloc(p as *mut u8, layout(size, 16)) };
                    }
                    keep
                })
            })
            .collect();
        let mut next: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Hand each batch's leftovers to a different thread next round.
        next.rotate_left(1);
        left = next;
        if round % 250 == 0 {
            let r = rss();
            max_rss = max_rss.max(r);
            let s = Churn.stats();
            assert!(s.heaps <= MAX_HEAPS, "after {round} rounds: {s}");
            assert!(
                r <= start + RSS_BOUND,
                "after {round} rounds RSS {:.1} MiB, start {:.1} MiB\n{s}",
                mib(r),
                mib(start)
            );
        }
    }
    for (p, size) in left.into_iter().flatten() {
        unsafe { Churn.dealloc(p as *mut u8, layout(size, 16)) };
    }
    let (after, took) = settle(&Churn, start);
    let s = Churn.stats();
    eprintln!(
        "({}) {THREADS} threads: RSS start {:.1} MiB, at most {:.1}, after {:.1} \
         ({took:.0?} of light traffic)\n{s}",
        mode(),
        mib(start),
        mib(max_rss),
        mib(after)
    );
    assert!(s.heaps <= MAX_HEAPS);
    assert!(
        after <= start + SLACK,
        "RSS {:.1} MiB stayed\n{s}",
        mib(after)
    );
}

emma::emma_instance!(Raced);

/// A dead thread's heap is being collected (by `trim` on one thread and
/// by the slow paths of two others) while a new thread, started on the
/// dead thread's stack and so with its thread pointer, finds that heap
/// through the thread-pointer table (or, with `tls`, claims it by rule 3).
/// Only one of them may have it: every block handed out must stay intact.
/// In a child process: a lost race may crash rather than panic.
#[test]
fn collection_racing_a_thread_that_inherits_the_heap() {
    use std::sync::{Arc, Barrier};
    if !common::in_child("collection_racing_a_thread_that_inherits_the_heap") {
        return;
    }
    for round in 0..60u64 {
        let left = std::thread::spawn(move || stamped_blocks(Raced, round, 50_000))
            .join()
            .unwrap();
        for p in left {
            let p = p as *mut u8;
            unsafe { Raced.dealloc(p, check_stamp(p)) };
        }
        let go = Arc::new(Barrier::new(3));
        // Started first, so that the thread library gives it the stack
        // (and thread pointer) of the thread that just exited.
        let heir = {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                let v = stamped_blocks(Raced, 1000 + round, 20_000);
                std::thread::sleep(Duration::from_millis(5));
                v
            })
        };
        let trimmer = {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                Raced.trim();
            })
        };
        let sweeper = std::thread::spawn(move || {
            go.wait();
            for _ in 0..200 {
                light_traffic(&Raced);
            }
            stamped_blocks(Raced, 2000 + round, 5_000)
        });
        trimmer.join().unwrap();
        let blocks: Vec<usize> = heir
            .join()
            .unwrap()
            .into_iter()
            .chain(sweeper.join().unwrap())
            .collect();
        for p in blocks {
            let p = p as *mut u8;
            unsafe { Raced.dealloc(p, check_stamp(p)) };
        }
    }
}

emma::emma_instance!(ServerReplaced);
emma::emma_instance!(ServerKept);

/// One slot array of the larson-style work: (address, size), 0 if empty.
type Slots = Mutex<Vec<(usize, usize)>>;

/// Larson-style work: `WORKERS` slot arrays; in each round every array is
/// worked on by another thread than in the round before, which replaces
/// `STEPS` random slots (about a fifth of the frees hit blocks an earlier
/// thread allocated). With `replace`, each round's threads are new;
/// otherwise the same threads do every round, passing the arrays on.
/// Returns the peak RSS growth over the run.
fn larson<A: GlobalAlloc + Copy + Send + Sync + 'static>(a: A, replace: bool) -> usize {
    use std::sync::{Arc, Barrier};
    const WORKERS: usize = 8;
    const SLOTS: usize = 2000;
    const STEPS: usize = 4 * SLOTS;
    const ROUNDS: usize = 60;
    let start = rss();
    let mut peak = start;
    let arrays: Arc<[Slots]> = (0..WORKERS)
        .map(|_| Mutex::new(vec![(0, 0); SLOTS]))
        .collect();
    // Worker `w` of round `r` works on array `(w + r) % WORKERS`.
    let work = move |arrays: &[Slots], w: usize, round: usize| {
        let mut slots = arrays[(w + round) % WORKERS].lock().unwrap();
        let mut rng = Rng::new((round * WORKERS + w) as u64);
        for _ in 0..STEPS {
            let i = rng.below(SLOTS);
            let (p, size) = slots[i];
            if p != 0 {
                unsafe { a.dealloc(p as *mut u8, layout(size, 8)) };
            }
            let size = rng.range(8, 1000);
            let p = unsafe { a.alloc(layout(size, 8)) };
            assert!(!p.is_null());
            unsafe { p.write(size as u8) };
            slots[i] = (p as usize, size);
        }
    };
    if replace {
        for round in 0..ROUNDS {
            let handles: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let arrays = arrays.clone();
                    std::thread::spawn(move || work(&arrays, w, round))
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            peak = peak.max(rss());
        }
    } else {
        let barrier = Arc::new(Barrier::new(WORKERS + 1));
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (arrays, barrier) = (arrays.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        work(&arrays, w, round);
                        barrier.wait();
                        barrier.wait();
                    }
                })
            })
            .collect();
        for _ in 0..ROUNDS {
            barrier.wait();
            peak = peak.max(rss());
            barrier.wait();
        }
        for h in handles {
            h.join().unwrap();
        }
    }
    for slots in arrays.iter() {
        for &(p, size) in slots.lock().unwrap().iter() {
            if p != 0 {
                unsafe { a.dealloc(p as *mut u8, layout(size, 8)) };
            }
        }
    }
    peak - start
}

/// (d) in Rust: replacing the threads every round costs at most 1.5x the
/// peak memory of the same work (the same cross-thread frees) on
/// long-lived threads.
#[test]
fn larson_with_replaced_threads_stays_near_long_lived_threads() {
    let _g = serial();
    let kept = larson(ServerKept, false);
    let replaced = larson(ServerReplaced, true);
    eprintln!(
        "({}) larson peak RSS growth: long-lived threads {:.1} MiB, replaced every round {:.1} MiB\n{}",
        mode(),
        mib(kept),
        mib(replaced),
        ServerReplaced.stats()
    );
    // A floor for the reference, so that a tiny one does not make noise
    // (thread stacks, the harness) decide.
    let bound = kept.max(16 * MIB) * 3 / 2;
    assert!(
        replaced <= bound,
        "replaced threads peaked {:.1} MiB above the start, long-lived {:.1} MiB",
        mib(replaced),
        mib(kept)
    );
}

/// Runs `prog` (built from `tests/embed/`) with `library` preloaded (or
/// none) and `args`; returns its `start peak after` line, in KiB.
fn run_c(prog: &PathBuf, library: Option<&PathBuf>, args: &[&str]) -> [usize; 3] {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(lib) = library {
        cmd.env("LD_PRELOAD", lib);
    }
    let out = util::run_ok(&mut cmd);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("rss_kib "))
        .unwrap_or_else(|| panic!("{cmd:?}: no figures in {out:?}"));
    let v: Vec<usize> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    [v[0], v[1], v[2]]
}

fn c_program() -> PathBuf {
    util::compile("gcc", &["reclaim.c"], "reclaim", &["-O2", "-pthread"])
}

/// (b) A C program: two threads do a malloc/realloc/free stress, keep
/// about 300 MiB, hand it to the main thread and exit; the main thread
/// frees it all and then only allocates lightly.
#[test]
fn c_program_gets_exited_threads_memory_back() {
    let _g = serial();
    let prog = c_program();
    let lib = preload_library(cfg!(feature = "tls"));
    let glibc = run_c(&prog, None, &["exits"]);
    let emma = run_c(&prog, Some(&lib), &["exits"]);
    eprintln!(
        "({}) C, threads exit: RSS KiB start/peak/after: glibc {glibc:?}, emma {emma:?}",
        mode()
    );
    assert!(
        emma[1] >= emma[0] + 256 * 1024,
        "the stress did not run: {emma:?}"
    );
    assert!(
        emma[2] <= emma[0] + SLACK / 1024,
        "exited threads' memory stayed: {emma:?} KiB"
    );
}

/// (d) through the preload library: the larson-style server in C, with
/// the library built without `tls` (thread-pointer mode) and with it. The
/// thread-pointer build's peak is held to the larger of the `tls` build's
/// and glibc's (it used to reach 1.1 GiB). Each figure is the median of
/// three runs: how many threads have exited but not yet been reaped when
/// their successors start decides how many heaps either build makes
/// (10–31), and so its peak. On this machine the `tls` build peaked at
/// 19–43 MiB and glibc at 26–33 in 20 runs; the thread-pointer build at
/// 22–42 in 40 (26–44 in 20 before its new threads took exited threads'
/// heaps at once).
#[test]
fn c_larson_peaks_alike_in_both_modes() {
    let _g = serial();
    let prog = c_program();
    let (with_tls, without) = (preload_library(true), preload_library(false));
    // Interleaved, so that a slow stretch of the machine hits all three.
    let runs: Vec<[usize; 3]> = (0..3)
        .map(|_| {
            [Some(&with_tls), Some(&without), None].map(|lib| run_c(&prog, lib, &["larson"])[1])
        })
        .collect();
    eprintln!("C larson, peak RSS KiB per run (emma tls, emma thread-pointer, glibc): {runs:?}");
    let median = |i: usize| {
        let mut p: Vec<usize> = runs.iter().map(|r| r[i]).collect();
        p.sort_unstable();
        p[1]
    };
    let (tls, tp, glibc) = (median(0), median(1), median(2));
    let reference = tls.max(glibc);
    assert!(
        tp <= reference * 3 / 2,
        "thread-pointer mode peaked at {tp} KiB, tls mode at {tls} KiB, glibc at {glibc} KiB \
         (medians)"
    );
}
