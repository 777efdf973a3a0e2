//! Multi-threaded workloads: scaling, cross-thread frees, false sharing, thread lifetimes.
//!
//! Each is arranged so its checksum is independent of scheduling: every thread draws from its
//! own seeded generator, and blocks change hands in a fixed pattern.

use super::{mix, scaled};
use crate::blob::Blob;
use crate::rng::Rng;
use std::sync::mpsc;
use std::thread;

/// Larson's server simulation: each thread replaces random slots of a slot array with new
/// random-size blocks; after every round it passes its array to the next thread of a ring and
/// takes the previous thread's, so the blocks it frees next were mostly allocated elsewhere.
/// More threads than cores, as on a busy server.
pub fn larson(scale: f64) -> u64 {
    const THREADS: usize = 4;
    const SLOTS: usize = 2000;
    const STEPS: usize = 10_000;
    let rounds = scaled(1200, scale);

    // Ring: thread i sends to i+1 and receives from i-1.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<Vec<Option<Blob>>>())
        .unzip();
    let mut rxs: Vec<Option<mpsc::Receiver<_>>> = rxs.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let to_next = txs[(t + 1) % THREADS].clone();
            let from_prev = rxs[t].take().unwrap();
            thread::spawn(move || {
                let mut rng = Rng::new(60 + t as u64);
                let mut slots: Vec<Option<Blob>> = (0..SLOTS).map(|_| None).collect();
                let mut sum = 0u64;
                for round in 0..rounds {
                    for _ in 0..STEPS {
                        let slot = &mut slots[rng.below(SLOTS)];
                        if let Some(old) = slot.take() {
                            sum = sum.wrapping_add(old.digest());
                        }
                        *slot = Some(Blob::new(rng.range(8, 1000), round as u8));
                    }
                    to_next.send(slots).unwrap();
                    slots = from_prev.recv().unwrap();
                }
                for b in slots.iter().flatten() {
                    sum = sum.wrapping_add(b.digest());
                }
                sum
            })
        })
        .collect();
    drop(txs);
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(0, u64::wrapping_add)
}

/// One producer allocates messages (`Box<[u8]>` of 16–256 bytes, filled) and sends them in
/// batches over a bounded channel; the consumer reads and frees them. Every block is freed by a
/// thread that did not allocate it, so this is all remote-free traffic.
pub fn producer_consumer(scale: f64) -> u64 {
    const BATCH: usize = 256;
    let batches = scaled(60_000, scale);
    let (tx, rx) = mpsc::sync_channel::<Vec<Box<[u8]>>>(32);
    let producer = thread::spawn(move || {
        let mut rng = Rng::new(7);
        for b in 0..batches {
            let batch: Vec<Box<[u8]>> = (0..BATCH)
                .map(|_| vec![b as u8; rng.range(16, 256)].into_boxed_slice())
                .collect();
            tx.send(batch).unwrap();
        }
    });
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for batch in rx {
            for msg in batch {
                sum = sum.wrapping_add(u64::from(msg[msg.len() - 1]) + msg.len() as u64);
            }
        }
        sum
    });
    producer.join().unwrap();
    consumer.join().unwrap()
}

/// The churn one thread does: random replacement over 5000 slots, sizes 16 B–2 KiB with one in
/// 64 up to 32 KiB. Nothing is shared, so it should scale perfectly with threads.
fn churn(seed: u64, scale: f64) -> u64 {
    const SLOTS: usize = 5000;
    let steps = scaled(30_000_000, scale);
    let mut rng = Rng::new(seed);
    let mut slots: Vec<Option<Blob>> = (0..SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for step in 0..steps {
        let size = if rng.one_in(64) {
            rng.range(2048, 32 << 10)
        } else {
            rng.range(16, 2048)
        };
        let slot = &mut slots[rng.below(SLOTS)];
        if let Some(old) = slot.take() {
            sum = mix(sum, old.digest());
        }
        *slot = Some(Blob::new(size, step as u8));
    }
    sum
}

fn churn_threads(threads: usize, scale: f64) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|t| thread::spawn(move || churn(80 + t as u64, scale)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(0, u64::wrapping_add)
}

/// Independent churn on one thread (the baseline for churn-2t). Runs on a spawned thread, as
/// churn-2t does, so the two differ only in the number of threads.
pub fn churn_1t(scale: f64) -> u64 {
    churn_threads(1, scale)
}

/// The same churn on two threads at once, each doing the full churn-1t work: on 2 cores, a
/// time equal to churn-1t's is perfect scaling.
pub fn churn_2t(scale: f64) -> u64 {
    churn_threads(2, scale)
}

/// Berger et al.'s cache-scratch (passive false sharing): the main thread allocates one small
/// object per worker, contiguously; each worker frees the object it was handed, then repeatedly
/// allocates an object of the same size, writes it heavily and frees it. An allocator that
/// gives the worker back the freed object (which shares a cache line with the other worker's)
/// makes the cores fight over that line on every write.
pub fn cache_scratch(scale: f64) -> u64 {
    const THREADS: usize = 2;
    const SIZE: usize = 8;
    const WRITES: usize = 200;
    let rounds = scaled(2_000_000, scale);
    let seeds: Vec<Blob> = (0..THREADS).map(|t| Blob::new(SIZE, t as u8)).collect();
    let handles: Vec<_> = seeds
        .into_iter()
        .enumerate()
        .map(|(t, seed)| {
            thread::spawn(move || {
                let mut sum = seed.digest();
                drop(seed);
                for r in 0..rounds {
                    let b = Blob::new(SIZE, t as u8);
                    let p = b.as_ptr();
                    for w in 0..WRITES {
                        for i in 0..SIZE {
                            // SAFETY: i < SIZE, inside the block. Volatile, so every write
                            // really reaches the cache line.
                            unsafe { p.add(i).write_volatile((w + i + r) as u8) };
                        }
                    }
                    sum = sum.wrapping_add(b.digest());
                }
                sum
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(0, u64::wrapping_add)
}

/// Thousands of short-lived threads, two at a time: each frees the blocks a thread of the
/// previous wave left behind (their owner is gone by then), allocates 2000 blocks, frees 90% of
/// them in random order, and leaves the rest to the next wave. Heaps of dead threads must be
/// reclaimed and reused, neither leaked nor slow.
pub fn thread_churn(scale: f64) -> u64 {
    const PER_WAVE: usize = 2;
    const BLOCKS: usize = 2000;
    let waves = scaled(6000, scale);
    let mut leftovers: Vec<Vec<Blob>> = (0..PER_WAVE).map(|_| Vec::new()).collect();
    let mut sum = 0u64;
    for wave in 0..waves {
        let handles: Vec<_> = leftovers
            .drain(..)
            .enumerate()
            .map(|(t, inherited)| {
                let seed = (wave * PER_WAVE + t) as u64;
                thread::spawn(move || {
                    let mut rng = Rng::new(seed);
                    let mut sum = 0u64;
                    for b in inherited {
                        sum = sum.wrapping_add(b.digest());
                    }
                    let mut mine: Vec<Blob> = (0..BLOCKS)
                        .map(|i| Blob::new(rng.range(16, 512), i as u8))
                        .collect();
                    // Free 90% in random order (swap_remove of random indices), keep the rest.
                    while mine.len() > BLOCKS / 10 {
                        let victim = mine.swap_remove(rng.below(mine.len()));
                        sum = sum.wrapping_add(victim.digest());
                    }
                    (sum, mine)
                })
            })
            .collect();
        for h in handles {
            let (s, left) = h.join().unwrap();
            sum = sum.wrapping_add(s);
            leftovers.push(left);
        }
    }
    for b in leftovers.iter().flatten() {
        sum = sum.wrapping_add(b.digest());
    }
    sum
}
