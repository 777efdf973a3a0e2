//! Multithreaded stress (after mimalloc's
//! `test-stress.c`): more threads than cores allocate, hand blocks to each
//! other through shared slots and free them wherever they land; threads are
//! torn down and recreated in waves while the blocks they left in the slots
//! stay alive and are checked and freed by threads of later waves. Every
//! block carries a cookie derived from its address and layout and a
//! pattern, checked when it is freed or reallocated: a block handed out
//! twice, overwritten, or corrupted by a remote free shows up there.
//!
//! Then producer/consumer: every free is a remote free.
//!
//! Each scenario runs on this binary's `#[global_allocator]` (shared with
//! the test harness and std's own allocations) and on private instances.
//! `EMMA_TEST_SCALE=20` makes a soak run of it.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::InstanceExt;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{mpsc, Arc};

emma::emma_instance!(Global);
emma::emma_instance!(Private);
emma::emma_instance!(PcPrivate);

#[global_allocator]
static G: Global = Global::new();

const THREADS: usize = 8;
const SLOTS: usize = 2048;

/// Sizes for the stress loop: mostly small, some up to 256 KiB, one in
/// 2,000 huge (huge blocks cost a mapping each; keep the loop fast).
fn stress_size(rng: &mut Rng) -> usize {
    if rng.chance(1, 2000) {
        rng.range(emma::MAX_CLASS_SIZE + 1, 3 << 20)
    } else {
        rng.size().clamp(COOKIE_MIN, 256 << 10)
    }
}

fn stress_align(rng: &mut Rng) -> usize {
    if rng.chance(1, 10) {
        1 << rng.range(5, 12)
    } else {
        1 << rng.range(0, 4)
    }
}

unsafe fn new_block<I: GlobalAlloc>(i: I, rng: &mut Rng) -> *mut u8 {
    let (size, align) = (stress_size(rng), stress_align(rng));
    let p = unsafe { i.alloc(layout(size, align)) };
    assert!(!p.is_null(), "alloc({size}, {align}) failed");
    assert_eq!(p as usize % align.max(emma::MIN_ALIGN), 0);
    unsafe { stamp(p, size, align) };
    p
}

unsafe fn free_block<I: GlobalAlloc>(i: I, p: *mut u8) {
    unsafe {
        let l = check_stamp(p);
        i.dealloc(p, l);
    }
}

/// Reallocates a stamped block to a new random size (the kept prefix is
/// checked against the old stamp) and re-stamps it.
unsafe fn realloc_block<I: GlobalAlloc>(i: I, p: *mut u8, rng: &mut Rng) -> *mut u8 {
    unsafe {
        let l = check_stamp(p);
        let (meta, cookie) = (p.cast::<u64>().read(), p.add(8).cast::<u64>().read());
        let new = stress_size(rng);
        let q = i.realloc(p, l, new);
        assert!(!q.is_null(), "realloc({} -> {new}) failed", l.size());
        assert_eq!(q as usize % l.align().max(emma::MIN_ALIGN), 0);
        assert_eq!(
            (q.cast::<u64>().read(), q.add(8).cast::<u64>().read()),
            (meta, cookie)
        );
        verify_range(q, 16, l.size().min(new), cookie, "realloc");
        stamp(q, new, l.align());
        q
    }
}

type Slots = Arc<Vec<AtomicPtr<u8>>>;

/// One thread of a wave: a random mix of allocations kept locally or
/// published in a slot (freeing what the slot held), local frees, frees of
/// blocks taken from slots, reallocations, and a trim every 4,096
/// operations. On exit it frees half of
/// what it kept and leaves the other half in the slots for later waves.
fn worker<I: GlobalAlloc + InstanceExt + Copy>(i: I, slots: &Slots, seed: u64, iters: usize) {
    let mut rng = Rng::new(seed);
    let mut local: Vec<*mut u8> = Vec::with_capacity(256);
    unsafe {
        for n in 0..iters {
            // Now and then a trim: gives back empty pages while other
            // threads allocate (with `tls`, also collects the heaps of
            // threads of earlier waves).
            if n % 4096 == 4095 {
                i.trim();
            }
            match rng.below(100) {
                0..=44 => {
                    let p = new_block(i, &mut rng);
                    if local.len() < 256 && rng.chance(1, 2) {
                        local.push(p);
                    } else {
                        let old = slots[rng.below(SLOTS)].swap(p, Ordering::AcqRel);
                        if !old.is_null() {
                            free_block(i, old);
                        }
                    }
                }
                45..=69 => {
                    if !local.is_empty() {
                        let k = rng.below(local.len());
                        free_block(i, local.swap_remove(k));
                    }
                }
                70..=89 => {
                    let old = slots[rng.below(SLOTS)].swap(core::ptr::null_mut(), Ordering::AcqRel);
                    if !old.is_null() {
                        free_block(i, old);
                    }
                }
                _ => {
                    if !local.is_empty() {
                        let k = rng.below(local.len());
                        local[k] = realloc_block(i, local[k], &mut rng);
                    }
                }
            }
        }
        for (n, p) in local.into_iter().enumerate() {
            if n % 2 == 0 {
                free_block(i, p);
            } else {
                let old = slots[rng.below(SLOTS)].swap(p, Ordering::AcqRel);
                if !old.is_null() {
                    free_block(i, old);
                }
            }
        }
    }
    assert_heap_ok(i, "at the end of a worker");
}

fn stress<I: GlobalAlloc + InstanceExt + Copy + Send + 'static>(i: I, waves: usize, iters: usize) {
    let slots: Slots = Arc::new(
        (0..SLOTS)
            .map(|_| AtomicPtr::new(core::ptr::null_mut()))
            .collect(),
    );
    for wave in 0..waves {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let slots = slots.clone();
                std::thread::spawn(move || worker(i, &slots, (wave * THREADS + t) as u64, iters))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Between waves: everything that survived is intact.
        let survivors = slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .filter(|p| !p.is_null())
            .inspect(|&p| unsafe {
                check_stamp(p);
                assert!(i.owns(p), "survivor {p:?} not owned");
            })
            .count();
        assert!(
            survivors > 0,
            "no block survived wave {wave}: the test lost its point"
        );
    }
    for s in slots.iter() {
        let p = s.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            unsafe { free_block(i, p) };
        }
    }
    assert_heap_ok(i, "after the last wave");
}

#[test]
fn waves_on_the_global_instance() {
    stress(G, 4, scaled(20_000));
}

#[test]
fn waves_on_a_private_instance() {
    stress(Private, 4, scaled(20_000));
    let st = Private.stats();
    // Waves run one after another: exited threads' heaps are reused.
    assert!(
        st.heaps <= 4 * THREADS,
        "heaps not reused across waves: {st:?}"
    );
}

/// Producers allocate and stamp, consumers check and free: every free is
/// remote. Returns after all threads are joined.
fn producer_consumer<I: GlobalAlloc + InstanceExt + Copy + Send + 'static>(
    i: I,
    per_producer: usize,
) {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..CONSUMERS)
        .map(|_| mpsc::sync_channel::<usize>(256))
        .unzip();
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            std::thread::spawn(move || {
                let mut n = 0;
                for p in rx {
                    let p = p as *mut u8;
                    unsafe { free_block(i, p) };
                    n += 1;
                }
                assert_heap_ok(i, "consumer");
                n
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let txs = txs.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(1000 + t as u64);
                for n in 0..per_producer {
                    let p = unsafe { new_block(i, &mut rng) };
                    txs[(n + t) % CONSUMERS].send(p as usize).unwrap();
                }
                assert_heap_ok(i, "producer");
            })
        })
        .collect();
    drop(txs);
    for p in producers {
        p.join().unwrap();
    }
    let freed: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(freed, PRODUCERS * per_producer);
}

#[test]
fn producer_consumer_on_the_global_instance() {
    producer_consumer(G, scaled(30_000));
}

#[test]
fn producer_consumer_on_a_private_instance() {
    let before = PcPrivate.stats();
    producer_consumer(PcPrivate, scaled(30_000));
    let st = PcPrivate.stats();
    assert!(
        st.remote_frees > before.remote_frees,
        "producers never collected a remote free: {st:?}"
    );
    // With `tls`, `trim` collects the heaps of the exited producers: their
    // remote frees are applied and their pages given back. (Without `tls`
    // that waits for a new thread to inherit an exited thread's stack.)
    #[cfg(feature = "tls")]
    {
        // A joined thread may linger in the kernel for a moment after its
        // tid is cleared; give `trim` a few chances to see it gone.
        let mut st = PcPrivate.stats();
        for _ in 0..200 {
            PcPrivate.trim();
            st = PcPrivate.stats();
            if st.pages == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            st.pages, 0,
            "pages of exited producers not reclaimed: {st:?}"
        );
        assert_eq!(
            st.segments, 0,
            "segments of exited producers not reclaimed: {st:?}"
        );
    }
}
