//! Size × alignment sweep: every request size that matters, at every
//! power-of-two alignment, gets a block that is aligned, as large as
//! `usable_size` says (every usable byte written and read back), of the
//! documented class size, owned by its instance and disjoint from its
//! neighbour; and `alloc_zeroed` returns zeroes even when the memory it
//! reuses was dirtied and freed just before (locally, remotely, or purged
//! lazily with `MADV_FREE`).
//!
//! Sizes: 1..=4096 densely, every class boundary ±1 up to 8 MiB, and huge
//! sizes (5 MiB, 65 MiB). Alignments: 1 ..= 64 KiB (served from pages) for
//! all of them, 128 KiB ..= 256 MiB (huge blocks) for a handful of sizes.
//!
//! The instance under test is this binary's global allocator, so the test
//! harness allocates from it concurrently; `Lazy` is a second instance set
//! to purge with `MADV_FREE`.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::{InstanceExt, Purge};

emma::emma_instance!(Under);
emma::emma_instance!(Lazy);

#[global_allocator]
static G: Under = Under::new();

/// Alignments served from size-classed pages: 1 ..= 64 KiB.
fn page_alignments() -> impl Iterator<Item = usize> {
    (0..=16).map(|s| 1usize << s)
}

/// Allocates two blocks of `size` at `align` from `i`, checks them, fills
/// every usable byte with an address-derived pattern, verifies, frees.
fn sweep_one<I: GlobalAlloc + InstanceExt>(i: I, size: usize, align: usize) {
    let l = layout(size, align);
    unsafe {
        let a = i.alloc(l);
        let b = i.alloc(l);
        for p in [a, b] {
            assert!(!p.is_null(), "alloc({size}, {align}) failed");
            assert_eq!(
                p as usize % align.max(emma::MIN_ALIGN),
                0,
                "alloc({size}, {align}) = {p:?} misaligned"
            );
            assert!(i.owns(p) && i.owns(p.add(size - 1)), "{p:?} not owned");
        }
        let (ua, ub) = (i.usable_size(a), i.usable_size(b));
        assert!(ua >= size && ub >= size, "usable {ua}/{ub} < size {size}");
        // (`hardened` reports the requested size instead of the class's.)
        if cfg!(not(feature = "hardened"))
            && size <= emma::MAX_CLASS_SIZE
            && align <= emma::MIN_ALIGN
        {
            assert_eq!(ua, class_of(size), "size {size} got the wrong class");
        }
        let (sa, sb) = (a as u64 ^ size as u64, b as u64 ^ (size as u64) << 1);
        fill(a, ua, sa);
        fill(b, ub, sb);
        // Each block checked after both are written: an overlap shows.
        verify(a, ua, sa, "sweep");
        verify(b, ub, sb, "sweep");
        // Alternate the free order so both list orders get exercised.
        if size.is_multiple_of(2) {
            i.dealloc(a, l);
            i.dealloc(b, l);
        } else {
            i.dealloc(b, l);
            i.dealloc(a, l);
        }
    }
}

#[test]
fn dense_small_sizes_at_page_alignments() {
    for align in (0..=12).map(|s| 1usize << s) {
        for size in 1..=4096 {
            sweep_one(G, size, align);
        }
        assert_heap_ok(G, &format!("after sizes 1..=4096 at align {align}"));
    }
}

#[test]
fn class_boundaries_at_page_alignments() {
    let sizes = boundary_sizes(8 << 20);
    for align in page_alignments() {
        for &size in &sizes {
            sweep_one(G, size, align);
        }
        assert_heap_ok(G, &format!("after boundary sizes at align {align}"));
    }
}

#[test]
fn huge_alignments() {
    let sizes = [
        1,
        16,
        100,
        4096,
        (64 << 10) + 1,
        emma::MAX_CLASS_SIZE,
        emma::MAX_CLASS_SIZE + 1,
        5 << 20,
    ];
    for align in (17..=28).map(|s| 1usize << s) {
        for size in sizes {
            sweep_one(G, size, align);
        }
    }
}

#[test]
fn huge_sizes() {
    for align in page_alignments().chain((17..=26).map(|s| 1usize << s)) {
        sweep_one(G, 5 << 20, align);
    }
    // 65 MiB is never cached: a fresh mapping every time.
    for align in [1, 16, 4096, 64 << 10, 4 << 20, 8 << 20, 64 << 20] {
        sweep_one(G, 65 << 20, align);
    }
}

/// `alloc_zeroed(size, align)` is zero over `size`; then the whole block is
/// dirtied and freed, so the next request of a nearby size reuses dirty
/// memory.
fn zeroed_one<I: GlobalAlloc + InstanceExt>(i: I, size: usize, align: usize) {
    let l = layout(size, align);
    unsafe {
        let p = i.alloc_zeroed(l);
        assert!(!p.is_null(), "alloc_zeroed({size}, {align}) failed");
        assert_eq!(p as usize % align.max(emma::MIN_ALIGN), 0);
        verify_zero(p, size, &format!("alloc_zeroed({size}, {align})"));
        let u = i.usable_size(p);
        p.write_bytes(0xAA, u);
        i.dealloc(p, l);
    }
}

#[test]
fn zeroed_sweep() {
    for align in [1, 16, 32, 256, 4096, 64 << 10] {
        for size in 1..=4096 {
            zeroed_one(G, size, align);
        }
        for size in boundary_sizes(8 << 20) {
            zeroed_one(G, size, align);
        }
    }
    for align in [128 << 10, 8 << 20] {
        for size in [1, 4096, 5 << 20] {
            zeroed_one(G, size, align);
        }
    }
    assert_heap_ok(G, "after the zeroed sweep");
}

/// The same size, over and over: each round reuses the block the previous
/// round dirtied. Then a batch at a time, freed in scrambled order.
fn dirty_reuse<I: GlobalAlloc + InstanceExt + Copy>(i: I, rounds: usize) {
    let mut sizes: Vec<usize> = class_sizes().iter().flat_map(|&c| [c - 1, c]).collect();
    sizes.retain(|&s| s > 0);
    sizes.extend([2 << 20, (5 << 20) + 3, 20 << 20]);
    let mut rng = Rng::new(7);
    for &size in &sizes {
        let n = if size > emma::MAX_CLASS_SIZE {
            rounds / 20
        } else {
            rounds
        };
        for r in 0..n.max(3) {
            let align = if r % 3 == 0 { 64 } else { 1 };
            zeroed_one(i, size, align);
        }
        // A batch: several blocks of the class live at once, dirtied, freed
        // in scrambled order, then asked for again zeroed.
        if size <= 64 << 10 {
            let l = layout(size, 8);
            for _ in 0..4 {
                let mut v: Vec<*mut u8> = (0..32).map(|_| unsafe { i.alloc_zeroed(l) }).collect();
                for &p in &v {
                    unsafe {
                        assert!(!p.is_null());
                        verify_zero(p, size, "batch alloc_zeroed");
                        p.write_bytes(0xAA, i.usable_size(p));
                    }
                }
                for k in (1..v.len()).rev() {
                    v.swap(k, rng.below(k + 1));
                }
                for p in v {
                    unsafe { i.dealloc(p, l) };
                }
            }
        }
    }
    assert_heap_ok(i, "after dirty reuse");
}

#[test]
fn zeroed_dirty_reuse() {
    dirty_reuse(G, 200);
}

#[test]
fn zeroed_dirty_reuse_with_lazy_purge() {
    Lazy.set_purge(Purge::Free);
    dirty_reuse(Lazy, 50);
    // Purged with MADV_FREE: the kernel may or may not have dropped the
    // pages, so emma must not assume they read as zero.
    Lazy.trim();
    dirty_reuse(Lazy, 20);
}

/// Blocks dirtied and freed by another thread come back zeroed.
#[test]
fn zeroed_after_remote_frees() {
    for size in [16, 48, 100, 1000, 5000, 70_000, 600_000] {
        let l = layout(size, 16);
        for _ in 0..8 {
            let blocks: Vec<usize> = (0..64)
                .map(|_| unsafe { G.alloc_zeroed(l) } as usize)
                .collect();
            std::thread::spawn(move || {
                for &p in &blocks {
                    let p = p as *mut u8;
                    unsafe {
                        verify_zero(p, size, "alloc_zeroed (other thread)");
                        p.write_bytes(0xAA, size);
                        G.dealloc(p, l);
                    }
                }
            })
            .join()
            .unwrap();
            // The owner now reuses them (after draining its remote list).
            let again: Vec<*mut u8> = (0..64).map(|_| unsafe { G.alloc_zeroed(l) }).collect();
            for &p in &again {
                unsafe {
                    verify_zero(p, size, "alloc_zeroed after remote frees");
                    p.write_bytes(0xAA, size);
                }
            }
            for p in again {
                unsafe { G.dealloc(p, l) };
            }
        }
    }
    assert_heap_ok(G, "after remote frees");
}

/// After a trim (free pages purged, segments released and cached), blocks
/// from the purged or cached memory are zero when asked zeroed, and hold
/// what is written into them.
#[test]
fn zeroed_after_trim() {
    for inst in [0, 1] {
        let i = dyn_of::<Lazy>("Lazy");
        let g = dyn_of::<Under>("Under");
        let d = if inst == 0 { g } else { i };
        for size in [32, 512, 3000, 40_000, 300_000] {
            let l = layout(size, 16);
            let v: Vec<*mut u8> = (0..200).map(|_| unsafe { (d.alloc)(l) }).collect();
            for &p in &v {
                unsafe { p.write_bytes(0xAA, (d.usable_size)(p)) };
            }
            for p in v {
                unsafe { (d.dealloc)(p, l) };
            }
            (d.trim)();
            let v: Vec<*mut u8> = (0..200).map(|_| unsafe { (d.alloc_zeroed)(l) }).collect();
            for &p in &v {
                unsafe {
                    verify_zero(p, size, &format!("{}: alloc_zeroed after trim", d.name));
                    fill(p, size, p as u64);
                }
            }
            for p in v {
                unsafe {
                    verify(p, size, p as u64, "after trim");
                    (d.dealloc)(p, l);
                }
            }
            d.assert_heap_ok("after trim");
        }
    }
}
