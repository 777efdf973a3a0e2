//! Whole-engine unit tests, small enough to run under Miri (`cargo miri
//! test --lib`, over the std-backed OS backend) as well as natively: a
//! seeded random program checked against a shadow model, cross-thread
//! frees, realloc across classes, trimming and the heap invariants.
//!
//! Under Miri (about 1000 times slower than native code, and slower still
//! per byte written) the sizes shrink so that the whole Miri step of
//! `tests/run_all.sh` takes about two minutes on a 2-core machine; the
//! ignored `random_program_long_run` is the longer Miri run (see there).

extern crate std;

use crate::InstanceExt;
use core::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::vec::Vec;

crate::emma_instance!(UnitHeap);
crate::emma_instance!(OtherHeap);

/// Fewer operations under Miri, which is ~1000x slower.
const SCALE: usize = if cfg!(miri) { 1 } else { 20 };

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The shape of a random program: how many operations, and the largest
/// "medium" and "large" request sizes.
#[derive(Clone, Copy)]
struct Program {
    steps: usize,
    medium: usize,
    large: usize,
}

/// The random program every test run executes. Under Miri it still covers
/// single-slice pages (blocks up to 8 KiB) and multi-slice ones (up to
/// 24 KiB), cross-class reallocs and the heap checks, in about a minute.
const QUICK: Program = if cfg!(miri) {
    Program {
        steps: 80,
        medium: 2_000,
        large: 20_000,
    }
} else {
    Program {
        steps: 6_000,
        medium: 20_000,
        large: 300_000,
    }
};

/// Mostly small sizes, some medium, a few large.
fn size_for(r: u64, prog: Program) -> usize {
    let (medium, large) = (prog.medium, prog.large);
    match r % 10 {
        0..=6 => 1 + (r >> 8) as usize % 256,
        7 | 8 => 1 + (r >> 8) as usize % medium,
        _ => 1 + (r >> 8) as usize % large,
    }
}

/// Writes `v` over `size` bytes at `p`.
///
/// # Safety
/// `p` is valid for writes of `size` bytes.
unsafe fn fill(p: *mut u8, size: usize, v: u8) {
    // SAFETY: the caller's block holds `size` bytes.
    unsafe { p.write_bytes(v, size) }
}

/// Checks that `size` bytes at `p` hold `v`.
///
/// # Safety
/// `p` is valid for reads of `size` bytes.
unsafe fn verify(p: *mut u8, size: usize, v: u8) {
    // SAFETY: the caller's block holds `size` bytes.
    let s = unsafe { core::slice::from_raw_parts(p, size) };
    assert!(s.iter().all(|&b| b == v), "block {p:?} lost its contents");
}

#[test]
fn random_program_matches_the_shadow_model() {
    run_random_program(QUICK);
}

/// The random program at sizes that take Miri about 20 minutes of real
/// time on a 2-core machine (150 operations, blocks up to 40 KiB), which is
/// too long for the everyday test command. Run it before changing the heap
/// or segment code:
/// `MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-permissive-provenance" cargo miri
/// test --lib -- --ignored random_program_long_run`. Natively it runs
/// 60,000 operations with blocks up to 1 MiB.
#[test]
#[ignore = "long: see the doc comment for the Miri command"]
fn random_program_long_run() {
    run_random_program(if cfg!(miri) {
        Program {
            steps: 150,
            medium: 4_000,
            large: 40_000,
        }
    } else {
        Program {
            steps: 60_000,
            medium: 100_000,
            large: 1 << 20,
        }
    });
}

/// Allocates, reallocates and frees at random, checking every block's
/// placement and contents against a shadow model of the live blocks.
fn run_random_program(prog: Program) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live: BTreeMap<usize, (usize, usize, u8)> = BTreeMap::new();
    for step in 0..prog.steps {
        let r = rng.next();
        // SAFETY: every pointer handed back was allocated with the
        // recorded layout and is freed once.
        unsafe {
            if live.len() < 64 && !r.is_multiple_of(3) || live.is_empty() {
                let size = size_for(r, prog);
                let align = 1usize << ((r >> 40) % 8);
                let l = Layout::from_size_align(size, align).unwrap();
                let p = UnitHeap.alloc(l);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                let a = p as usize;
                if let Some((&q, &(s, _, _))) = live.range(..a).next_back() {
                    assert!(q + s <= a, "overlap below");
                }
                if let Some((&q, _)) = live.range(a..).next() {
                    assert!(a + size <= q, "overlap above");
                }
                fill(p, size, step as u8);
                live.insert(a, (size, align, step as u8));
            } else {
                let k = *live.keys().nth((r >> 20) as usize % live.len()).unwrap();
                let (size, align, v) = live.remove(&k).unwrap();
                let p = k as *mut u8;
                verify(p, size, v);
                let l = Layout::from_size_align(size, align).unwrap();
                if r.is_multiple_of(2) {
                    UnitHeap.dealloc(p, l);
                } else {
                    let new = size_for(r >> 3, prog);
                    let q = UnitHeap.realloc(p, l, new);
                    verify(q, size.min(new), v);
                    fill(q, new, v);
                    live.insert(q as usize, (new, align, v));
                }
            }
        }
        if step % 50 == 0 {
            UnitHeap.check().unwrap();
        }
    }
    for (a, (size, align, v)) in live {
        // SAFETY: as above.
        unsafe {
            verify(a as *mut u8, size, v);
            UnitHeap.dealloc(a as *mut u8, Layout::from_size_align(size, align).unwrap());
        }
    }
    UnitHeap.check().unwrap();
}

#[test]
fn blocks_freed_on_other_threads_come_back() {
    let l = Layout::from_size_align(48, 8).unwrap();
    let n = 200 * SCALE;
    // SAFETY: each block is freed once, by the other thread.
    let blocks: Vec<usize> = (0..n)
        .map(|_| unsafe { OtherHeap.alloc(l) } as usize)
        .collect();
    std::thread::spawn(move || {
        for p in blocks {
            // SAFETY: as above.
            unsafe { OtherHeap.dealloc(p as *mut u8, l) };
        }
    })
    .join()
    .unwrap();
    // The owner collects the remote frees on its next slow path and reuses
    // the blocks.
    // SAFETY: fresh blocks, freed right away.
    let again: Vec<usize> = (0..n)
        .map(|_| unsafe { OtherHeap.alloc(l) } as usize)
        .collect();
    OtherHeap.check().unwrap();
    for p in again {
        // SAFETY: as above.
        unsafe { OtherHeap.dealloc(p as *mut u8, l) };
    }
    assert!(OtherHeap.stats().remote_frees >= n);
    OtherHeap.trim();
    OtherHeap.check().unwrap();
}

#[test]
fn zeroed_memory_is_zero_after_dirty_reuse() {
    let l = Layout::from_size_align(200, 8).unwrap();
    for _ in 0..10 * SCALE {
        // SAFETY: allocated, checked, dirtied and freed in place.
        unsafe {
            let p = UnitHeap.alloc_zeroed(l);
            assert!(core::slice::from_raw_parts(p, 200).iter().all(|&b| b == 0));
            p.write_bytes(0xAA, 200);
            UnitHeap.dealloc(p, l);
        }
    }
}
