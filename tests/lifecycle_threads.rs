//! Thread exit at scale: 20,000 short-lived threads, eight at a time, each
//! allocating a few blocks and leaving some behind for the next batch and
//! for the main thread to free (remote frees into the heaps of threads
//! that have exited). The heaps of exited threads must be reused (with
//! `tls` through liveness checks, without through thread-pointer reuse),
//! so the number of heaps stays near the number of threads alive at once
//! and the process's memory stays bounded. The time per 1,000 threads is
//! printed for the first and the last thousand (not asserted: it must not
//! grow, but timing is for people to judge).
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const THREADS: usize = 20_000;
const BATCH: usize = 8;
const MAX_HEAPS: usize = 64;
const RSS_SLACK: usize = 64 * MIB;

emma::emma_instance!(Churn);

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A block left for someone else, with a stamp to check.
#[derive(Clone, Copy)]
struct Left {
    p: usize,
    size: usize,
}

impl Left {
    unsafe fn free(self) {
        let stamp = unsafe { *(self.p as *const usize) };
        assert_eq!(stamp, self.p ^ self.size, "block {:#x} corrupted", self.p);
        unsafe { Churn.dealloc(self.p as *mut u8, layout(self.size)) };
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// One short-lived thread's work: free what it was handed, allocate,
/// free half of its own, hand back the rest.
/// `together`: all threads of the batch wait for each other before leaving,
/// so that they are all alive at once.
fn worker(n: usize, inherited: Vec<Left>, together: &Barrier) -> Vec<Left> {
    for b in inherited {
        unsafe { b.free() };
    }
    let mut x = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut mine = Vec::with_capacity(24);
    for i in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = if i == 0 {
            64 * 1024
        } else {
            16 + (x % 4000) as usize
        };
        let p = unsafe { Churn.alloc(layout(size)) };
        assert!(!p.is_null());
        unsafe {
            p.write_bytes(i as u8, size);
            *(p as *mut usize) = p as usize ^ size;
        }
        mine.push(Left {
            p: p as usize,
            size,
        });
    }
    let keep = mine.split_off(12);
    for b in mine {
        unsafe { b.free() };
    }
    if n.is_multiple_of(100) {
        Churn.check().unwrap();
    }
    together.wait();
    keep
}

#[test]
fn twenty_thousand_threads() {
    // Warm up: the thread library's stack cache, the harness.
    for _ in 0..4 {
        let together = Arc::new(Barrier::new(BATCH));
        let batch: Vec<_> = (0..BATCH)
            .map(|i| {
                let together = together.clone();
                std::thread::spawn(move || worker(i, Vec::new(), &together))
            })
            .collect();
        for t in batch {
            for b in t.join().unwrap() {
                unsafe { b.free() };
            }
        }
    }
    let baseline = rss();
    let start = Instant::now();
    let mut per_thousand: Vec<Duration> = Vec::new();
    let mut last_mark = start;
    let (mut max_heaps, mut max_rss) = (0, 0);
    let mut leftovers: Vec<Left> = Vec::new();
    let mut n = 0;
    while n < THREADS {
        // Half of the last batch's leftovers go to this batch (freed by
        // new threads), the other half the main thread frees.
        let mut handed = leftovers.split_off(leftovers.len() / 2);
        for b in leftovers.drain(..) {
            unsafe { b.free() };
        }
        let share = handed.len().div_ceil(BATCH);
        let together = Arc::new(Barrier::new(BATCH));
        let batch: Vec<_> = (0..BATCH)
            .map(|i| {
                let take = handed.split_off(handed.len().saturating_sub(share));
                let together = together.clone();
                std::thread::spawn(move || worker(n + i, take, &together))
            })
            .collect();
        for t in batch {
            leftovers.extend(t.join().unwrap());
        }
        n += BATCH;

        let s = Churn.stats();
        max_heaps = max_heaps.max(s.heaps);
        assert!(
            s.heaps <= MAX_HEAPS,
            "after {n} threads: {} heaps, exited threads' heaps are not reused",
            s.heaps
        );
        if n % 1000 == 0 {
            let now = Instant::now();
            per_thousand.push(now - last_mark);
            last_mark = now;
            let r = rss();
            max_rss = max_rss.max(r);
            assert!(
                r <= baseline + RSS_SLACK,
                "after {n} threads RSS {} MiB, baseline {} MiB\n{s}",
                r / MIB,
                baseline / MIB
            );
        }
    }
    for b in leftovers {
        unsafe { b.free() };
    }
    Churn.trim();
    let s = Churn.stats();
    let mut sorted = per_thousand.clone();
    sorted.sort();
    eprintln!(
        "{THREADS} threads in {:.2?} (features: {}): per 1,000 threads first {:.1?}, last {:.1?}, \
         median {:.1?}, max {:.1?}; heaps at most {max_heaps}, now {}; \
         RSS baseline {:.1} MiB, at most {:.1} MiB, now {:.1} MiB",
        start.elapsed(),
        if cfg!(feature = "tls") {
            "tls"
        } else {
            "no tls"
        },
        per_thousand[0],
        per_thousand[per_thousand.len() - 1],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        s.heaps,
        baseline as f64 / MIB as f64,
        max_rss as f64 / MIB as f64,
        rss() as f64 / MIB as f64,
    );
    eprintln!("{s}");
    assert!(s.heaps <= MAX_HEAPS);
    assert!(
        max_heaps >= BATCH,
        "the threads of a batch were not alive at once"
    );
    // Every block is freed; what stays mapped is in the heaps of the last
    // threads (emptied pages are kept per heap, collected on reuse).
    assert!(s.mapped <= s.meta + MAX_HEAPS * 4 * MIB, "{s:?}");
}
