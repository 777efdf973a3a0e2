//! Thread exit and heap reuse: 2,000 short-lived threads, each allocating a
//! little and leaving a few blocks for the main thread to free after it has
//! exited (remote frees into a dead thread's heap), must not leave 2,000
//! heaps behind: heaps of exited threads are reused (by thread pointer, and
//! with `tls` by dead thread id), so `stats().heaps` stays small. Segments
//! stay bounded too: a dead thread's memory is not leaked for good.
//!
//! Threads are spawned one at a time and eight at a time, on a private
//! instance and on the global one (which std's thread machinery also uses).
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::InstanceExt;

emma::emma_instance!(Global);
emma::emma_instance!(OneByOne);
emma::emma_instance!(EightByEight);

#[global_allocator]
static G: Global = Global::new();

const THREADS: usize = 2000;
const HEAP_BOUND: usize = 64;
/// A heap keeps one emptied page per class it used (no page churn in
/// alloc/free loops), and without `tls` an exited thread's heap is only
/// trimmed by the next thread that inherits it. Pages of every class up to
/// 200 KiB fill about four segments; the store caches a few more. (Measured:
/// 32 segments for 8 heaps, whether 1,000 or 8,000 threads ran.)
const SEGMENTS_PER_HEAP: usize = 5;
const SEGMENT_CACHE: usize = 8;

/// Spawns `THREADS` threads, `batch` at a time; each allocates 48 stamped
/// blocks, frees most and hands 4 to the main thread, which checks and
/// frees them once the thread has exited.
fn churn<I: GlobalAlloc + InstanceExt + Copy + Send + 'static>(i: I, batch: usize) {
    let mut leftovers: Vec<usize> = Vec::new();
    for b in 0..THREADS / batch {
        let hs: Vec<_> = (0..batch)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new((b * batch + t) as u64);
                    let blocks: Vec<*mut u8> = (0..48)
                        .map(|_| {
                            let size = rng.size().clamp(COOKIE_MIN, 200 << 10);
                            let p = unsafe { i.alloc(layout(size, 16)) };
                            assert!(!p.is_null());
                            unsafe { stamp(p, size, 16) };
                            p
                        })
                        .collect();
                    let mut out = Vec::new();
                    for (n, p) in blocks.into_iter().enumerate() {
                        if n % 12 == 0 {
                            out.push(p as usize);
                        } else {
                            unsafe { i.dealloc(p, check_stamp(p)) };
                        }
                    }
                    assert_heap_ok(i, "in a short-lived thread");
                    out
                })
            })
            .collect();
        for h in hs {
            leftovers.extend(h.join().unwrap());
        }
        // Free the previous batches' leftovers: their threads are gone.
        if leftovers.len() > 256 {
            for p in leftovers.drain(..) {
                let p = p as *mut u8;
                unsafe { i.dealloc(p, check_stamp(p)) };
            }
        }
    }
    for p in leftovers {
        let p = p as *mut u8;
        unsafe { i.dealloc(p, check_stamp(p)) };
    }
}

fn assert_bounded(st: emma::Stats, what: &str) {
    assert!(
        st.heaps <= HEAP_BOUND,
        "{what}: {} heaps after {THREADS} threads (bound {HEAP_BOUND}): {st:?}",
        st.heaps
    );
    assert!(
        st.segments <= SEGMENTS_PER_HEAP * st.heaps + SEGMENT_CACHE,
        "{what}: {} segments for {} heaps: {st:?}",
        st.segments,
        st.heaps
    );
}

#[test]
fn one_thread_at_a_time_reuses_heaps() {
    churn(OneByOne, 1);
    assert_bounded(OneByOne.stats(), "one at a time");
}

#[test]
fn eight_threads_at_a_time_reuse_heaps() {
    churn(EightByEight, 8);
    assert_bounded(EightByEight.stats(), "eight at a time");
}

#[test]
fn threads_on_the_global_instance_reuse_heaps() {
    churn(G, 4);
    assert_bounded(G.stats(), "global instance");
}

/// With `tls`, a trim from the main thread collects the heaps of exited
/// threads: the blocks the main thread freed into them are applied and
/// their pages given back.
#[cfg(feature = "tls")]
#[test]
fn trim_collects_the_heaps_of_exited_threads() {
    emma::emma_instance!(Collected);
    churn(Collected, 8);
    let mut st = Collected.stats();
    // A joined thread may linger in the kernel for a moment after its tid
    // is cleared; give `trim` a few chances to see it gone.
    for _ in 0..200 {
        Collected.trim();
        st = Collected.stats();
        if st.pages == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(st.pages, 0, "pages of exited threads not reclaimed: {st:?}");
    assert_eq!(
        st.segments, 0,
        "segments of exited threads not reclaimed: {st:?}"
    );
}

/// With `tls`, `trim` collects a dead thread's heap while a new thread —
/// which inherited the dead thread's stack, hence its thread pointer — may
/// be claiming that same heap for itself (rule 1). Only one of them may
/// win: blocks handed out during and after the race must all be distinct
/// and intact.
///
/// Each round: a thread leaves 100,000 blocks that the main thread frees
/// remotely (so collecting its heap takes a while), then a trimmer and a
/// new thread start together, and a third thread allocates a little later.
/// Runs in a child process: a lost race may crash rather than panic.
#[cfg(feature = "tls")]
#[test]
fn trim_racing_a_thread_that_inherits_the_dead_threads_heap() {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;
    if !in_child("trim_racing_a_thread_that_inherits_the_dead_threads_heap") {
        return;
    }
    emma::emma_instance!(Raced);
    for round in 0..80u64 {
        let left = std::thread::spawn(move || stamped_blocks(Raced, round, 100_000))
            .join()
            .unwrap();
        for p in left {
            let p = p as *mut u8;
            unsafe { Raced.dealloc(p, check_stamp(p)) };
        }
        let go = Arc::new(Barrier::new(2));
        let go2 = go.clone();
        let trimmer = std::thread::spawn(move || {
            go2.wait();
            Raced.trim();
        });
        go.wait();
        let heir = std::thread::spawn(move || {
            let v = stamped_blocks(Raced, 1000 + round, 20_000);
            std::thread::sleep(Duration::from_millis(20));
            v
        });
        std::thread::sleep(Duration::from_millis(2));
        let other = std::thread::spawn(move || stamped_blocks(Raced, 2000 + round, 20_000));
        trimmer.join().unwrap();
        let blocks: Vec<usize> = heir
            .join()
            .unwrap()
            .into_iter()
            .chain(other.join().unwrap())
            .collect();
        for &p in &blocks {
            unsafe { check_stamp(p as *const u8) };
        }
        for p in blocks {
            let p = p as *mut u8;
            unsafe { Raced.dealloc(p, check_stamp(p)) };
        }
    }
}
