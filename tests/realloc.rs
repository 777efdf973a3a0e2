//! `realloc` keeps contents across every class boundary in both directions:
//! walking a block up through every class size ±1 and back down, jumping
//! between small and huge, growing a huge block to hundreds of MiB (pages
//! moved with `mremap`, the address may change) and shrinking it back; at
//! every step the block is aligned as first requested, `usable_size` covers
//! the new size, and the first `min(old, new)` bytes are the old ones.
//! Also: a block reallocated by a thread that does not own it, and the
//! mapping statistics balancing out once every huge block is gone.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::InstanceExt;

emma::emma_instance!(Under);
emma::emma_instance!(Acct);

#[global_allocator]
static G: Under = Under::new();

/// A block under test: its pointer, layout, and how much of it holds the
/// pattern `seed`.
struct Tracked<I: GlobalAlloc + InstanceExt + Copy> {
    i: I,
    p: *mut u8,
    size: usize,
    align: usize,
    seed: u64,
}

impl<I: GlobalAlloc + InstanceExt + Copy> Tracked<I> {
    fn new(i: I, size: usize, align: usize, seed: u64) -> Self {
        let p = unsafe { i.alloc(layout(size, align)) };
        assert!(!p.is_null(), "alloc({size}, {align})");
        let t = Tracked {
            i,
            p,
            size,
            align,
            seed,
        };
        t.check_shape();
        unsafe { fill(p, i.usable_size(p), seed) };
        t
    }

    fn check_shape(&self) {
        let (p, size, align) = (self.p, self.size, self.align);
        assert_eq!(
            p as usize % align.max(emma::MIN_ALIGN),
            0,
            "{p:?} lost alignment {align}"
        );
        let u = unsafe { self.i.usable_size(p) };
        assert!(u >= size, "usable {u} < {size}");
        assert!(self.i.owns(p) && self.i.owns(unsafe { p.add(size - 1) }));
    }

    /// Reallocates to `new`, checks the kept prefix and refills the rest.
    fn resize(&mut self, new: usize) {
        let old = self.size;
        let q = unsafe { self.i.realloc(self.p, layout(old, self.align), new) };
        assert!(
            !q.is_null(),
            "realloc({old} -> {new}, align {}) failed",
            self.align
        );
        self.p = q;
        self.size = new;
        self.check_shape();
        let keep = old.min(new);
        unsafe {
            verify(q, keep, self.seed, &format!("realloc {old} -> {new}"));
            fill_range(q, keep, self.i.usable_size(q), self.seed);
        }
    }

    fn free(self) {
        unsafe {
            verify(self.p, self.size, self.seed, "before free");
            self.i.dealloc(self.p, layout(self.size, self.align));
        }
    }
}

#[test]
fn walk_every_boundary_up_and_down() {
    let sizes = boundary_sizes(6 << 20);
    for (k, align) in [1, 16, 64, 4096, 64 << 10].into_iter().enumerate() {
        let mut t = Tracked::new(G, sizes[0], align, 100 + k as u64);
        for &s in &sizes[1..] {
            t.resize(s);
        }
        for &s in sizes.iter().rev().skip(1) {
            t.resize(s);
        }
        t.free();
        assert_heap_ok(G, &format!("after the walk at align {align}"));
    }
}

#[test]
fn jumps_between_small_and_huge() {
    let path = [
        100,
        10 << 20,
        100,
        3 << 20,
        emma::MAX_CLASS_SIZE + 1,
        emma::MAX_CLASS_SIZE,
        5000,
        1,
        40 << 20, // beyond the huge cache
        17,
        emma::MAX_CLASS_SIZE - 1,
        (8 << 20) + 1,
        (2 << 20) - 1,
        48,
    ];
    for (k, align) in [1, 16, 256, 64 << 10, 128 << 10, 8 << 20]
        .into_iter()
        .enumerate()
    {
        let mut t = Tracked::new(G, path[0], align, 200 + k as u64);
        for &s in &path[1..] {
            t.resize(s);
        }
        t.free();
    }
    assert_heap_ok(G, "after the jumps");
}

#[test]
fn huge_block_grows_to_hundreds_of_mib_and_back() {
    for (k, (align, top)) in [(16, 320 << 20), (4 << 20, 100 << 20)]
        .into_iter()
        .enumerate()
    {
        let mut t = Tracked::new(G, emma::MAX_CLASS_SIZE + 1, align, 300 + k as u64);
        let mut s = t.size;
        while s < top {
            s = s * 3 / 2 + 4097;
            t.resize(s);
        }
        while s > 8 << 20 {
            s = s / 3 + 1;
            t.resize(s);
        }
        t.resize(4096);
        t.free();
    }
}

/// Over-aligned huge blocks (alignment above a segment) cannot be moved
/// with `mremap`; they must still keep contents and alignment.
#[test]
fn over_aligned_huge_blocks() {
    for (k, align) in [8 << 20, 32 << 20].into_iter().enumerate() {
        let mut t = Tracked::new(G, 100, align, 400 + k as u64);
        for s in [3 << 20, 20 << 20, 50, 70 << 20, 1 << 20, 9 << 20] {
            t.resize(s);
        }
        t.free();
    }
}

#[test]
fn random_pairs() {
    let sizes = boundary_sizes(12 << 20);
    let mut rng = Rng::new(5);
    for n in 0..scaled(2000) {
        let align = 1 << rng.below(17);
        let a = sizes[rng.below(sizes.len())];
        let b = sizes[rng.below(sizes.len())];
        let mut t = Tracked::new(G, a, align, n as u64);
        t.resize(b);
        t.resize(a);
        t.free();
    }
    assert_heap_ok(G, "after random pairs");
}

/// A thread that does not own a block reallocates it (in place, or by
/// copying and freeing remotely); the owner gets it back and frees it.
#[test]
fn realloc_on_another_thread() {
    let sizes = boundary_sizes(3 << 20);
    for (k, &s) in sizes.iter().enumerate().step_by(3) {
        let t = Tracked::new(G, s, 16, 500 + k as u64);
        // Raw pointers are not `Send`: the block crosses as an address.
        let (p, seed) = (t.p as usize, t.seed);
        let (p, size) = std::thread::spawn(move || {
            let mut t = Tracked {
                i: G,
                p: p as *mut u8,
                size: s,
                align: 16,
                seed,
            };
            t.resize(s * 2 + 1);
            t.resize(s.div_ceil(2));
            (t.p as usize, t.size)
        })
        .join()
        .unwrap();
        Tracked {
            i: G,
            p: p as *mut u8,
            size,
            align: 16,
            seed,
        }
        .free();
    }
    assert_heap_ok(G, "after foreign reallocs");
}

/// Once every huge block of an instance is freed and the instance trimmed,
/// its mapping statistics are back where they started: nothing counted
/// twice or forgotten by growing (`mremap`), shrinking (tail unmapped),
/// caching or freeing.
#[test]
fn mapping_stats_balance_after_huge_reallocs() {
    let i = Acct;
    // Set up the heap and its metadata first, so they are in the baseline.
    let warm = Tracked::new(i, 64, 16, 1);
    let base = i.stats();
    let mut blocks = Vec::new();
    for (k, path) in [
        &[8 << 20, 64 << 20, 100 << 20][..], // grown with mremap
        &[100 << 20, 40 << 20, 20 << 20],    // shrunk, tail unmapped
        &[5 << 20, 30 << 20, 6 << 20],       // grown, shrunk, then cached on free
        &[3 << 20, 3 << 20],
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = Tracked::new(i, path[0], 16, 600 + k as u64);
        for &s in &path[1..] {
            t.resize(s);
        }
        blocks.push(t);
    }
    let live = i.stats();
    assert_eq!(live.huge_blocks, base.huge_blocks + 4, "{live:?}");
    assert!(
        live.committed <= live.mapped,
        "committed > mapped while live: {live:?}"
    );
    for t in blocks {
        t.free();
    }
    i.trim();
    let end = i.stats();
    assert_eq!(end.huge_blocks, base.huge_blocks, "{end:?}");
    assert_eq!(end.huge_bytes, base.huge_bytes, "{end:?}");
    assert_eq!(
        end.mapped, base.mapped,
        "mapped bytes leaked: {base:?} -> {end:?}"
    );
    assert!(
        end.committed <= end.mapped,
        "committed ({}) exceeds mapped ({}) after every huge block was freed: {end:?}",
        end.committed,
        end.mapped
    );
    assert!(
        end.committed <= base.committed,
        "committed grew from {} to {} with no huge block left: {end:?}",
        base.committed,
        end.committed
    );
    warm.free();
}

/// Requests no system can satisfy return null, and a failed `realloc`
/// leaves the old block alive and intact.
#[test]
fn impossible_requests_return_null() {
    let too_big = [
        isize::MAX as usize - (16 << 20),
        isize::MAX as usize / 2,
        1 << 62,
    ];
    for &size in &too_big {
        for align in [16, 4096, 8 << 20] {
            let l = layout(size, align);
            assert!(unsafe { G.alloc(l) }.is_null(), "alloc({size:#x}, {align})");
            assert!(
                unsafe { G.alloc_zeroed(l) }.is_null(),
                "alloc_zeroed({size:#x}, {align})"
            );
        }
    }
    for (k, (start, align)) in [(100, 16), (70_000, 64), (5 << 20, 16), (3 << 20, 8 << 20)]
        .into_iter()
        .enumerate()
    {
        let t = Tracked::new(G, start, align, 700 + k as u64);
        for &size in &too_big {
            let q = unsafe { G.realloc(t.p, layout(t.size, align), size) };
            assert!(q.is_null(), "realloc({start} -> {size:#x}) succeeded");
            unsafe { verify(t.p, t.size, t.seed, "after a failed realloc") };
        }
        t.free();
    }
    assert_heap_ok(G, "after impossible requests");
}
