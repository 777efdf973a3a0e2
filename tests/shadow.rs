//! Seeded random programs checked against a shadow model (after rlsf's
//! `ShadowAllocator`).
//!
//! A xorshift PRNG drives `alloc`, `alloc_zeroed`, `realloc` and `dealloc`
//! with skewed random sizes (mostly small, sometimes huge) and alignments
//! over three instances at once, interleaved. The shadow model — a
//! `BTreeMap` of live blocks on the system allocator, which is this
//! binary's global allocator — panics when
//! - a block overlaps any live block of any instance (whole usable extent);
//! - a pointer is misaligned, or `usable_size` is below the request;
//! - a block is not owned by its instance, or is owned by another one;
//! - a block lost its contents (each block carries a pattern of its own,
//!   verified at every realloc and free), or `alloc_zeroed` is not zero;
//! - `check` finds a broken heap or instance (called periodically);
//! - freeing everything and trimming leaves anything mapped but the heap
//!   metadata (pages, segments, huge blocks).
//!
//! `shadow_tests!` stamps one test per seed; each test mints three fresh
//! instances, so the final accounting is exact. Run longer with
//! `EMMA_TEST_SCALE=100 cargo test --release --test shadow`.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use std::collections::BTreeMap;

/// Live-block count and byte caps: frees win once either is reached.
const MAX_LIVE: usize = 3000;
const MAX_BYTES: usize = 96 << 20;

#[derive(Clone, Copy)]
struct Block {
    size: usize,
    align: usize,
    usable: usize,
    seed: u64,
    inst: usize,
}

struct Shadow<'a> {
    insts: &'a [Dyn],
    live: BTreeMap<usize, Block>,
    /// Addresses of live blocks, for picking one at random.
    addrs: Vec<usize>,
    bytes: usize,
    rng: Rng,
    next_seed: u64,
}

impl Shadow<'_> {
    /// Checks a block just handed out and records it.
    fn admit(&mut self, p: *mut u8, b: Block, what: &str) {
        let d = &self.insts[b.inst];
        let (size, align) = (b.size, b.align);
        assert!(
            !p.is_null(),
            "{}: {what}({size}, {align}) returned null",
            d.name
        );
        assert_eq!(
            p as usize % align.max(emma::MIN_ALIGN),
            0,
            "{}: {what}({size}, {align}) = {p:?} misaligned",
            d.name
        );
        assert!(b.usable >= size, "{}: usable {} < {size}", d.name, b.usable);
        let (start, end) = (p as usize, p as usize + b.usable);
        if let Some((&q, other)) = self.live.range(..end).next_back() {
            assert!(
                q + other.usable <= start,
                "{}: {what}({size}, {align}) = {p:?}..{end:#x} overlaps live block \
                 {q:#x}..{:#x} of {}",
                d.name,
                q + other.usable,
                self.insts[other.inst].name
            );
        }
        for (k, o) in self.insts.iter().enumerate() {
            let owned = (o.owns)(p) && (o.owns)((end - 1) as *const u8);
            assert_eq!(
                owned,
                k == b.inst,
                "{}: owns({p:?}) by {} is {owned}",
                d.name,
                o.name
            );
        }
        self.live.insert(start, b);
        self.addrs.push(start);
        self.bytes += b.usable;
    }

    /// Forgets the block at index `k` of `addrs` and returns it.
    fn evict(&mut self, k: usize) -> (usize, Block) {
        let a = self.addrs.swap_remove(k);
        let b = self.live.remove(&a).expect("shadow out of sync");
        self.bytes -= b.usable;
        (a, b)
    }

    fn alloc(&mut self) {
        let inst = self.rng.below(self.insts.len());
        let d = self.insts[inst];
        let (size, align) = (self.rng.size(), self.rng.align());
        let zeroed = self.rng.chance(15, 100);
        let l = layout(size, align);
        let p = unsafe {
            if zeroed {
                (d.alloc_zeroed)(l)
            } else {
                (d.alloc)(l)
            }
        };
        if zeroed && !p.is_null() {
            unsafe { verify_zero(p, size, d.name) };
        }
        let usable = if p.is_null() {
            0
        } else {
            unsafe { (d.usable_size)(p) }
        };
        self.next_seed += 1;
        let b = Block {
            size,
            align,
            usable,
            seed: self.next_seed,
            inst,
        };
        self.admit(p, b, if zeroed { "alloc_zeroed" } else { "alloc" });
        unsafe { fill(p, usable, b.seed) };
    }

    fn free(&mut self) {
        let k = self.rng.below(self.addrs.len());
        let (a, b) = self.evict(k);
        let d = self.insts[b.inst];
        let p = a as *mut u8;
        unsafe {
            verify(p, b.usable, b.seed, d.name);
            (d.dealloc)(p, layout(b.size, b.align));
        }
    }

    fn realloc(&mut self) {
        let k = self.rng.below(self.addrs.len());
        let (a, b) = self.evict(k);
        let d = self.insts[b.inst];
        let new = self.rng.size();
        let p = unsafe { (d.realloc)(a as *mut u8, layout(b.size, b.align), new) };
        let keep = b.size.min(new);
        let usable = if p.is_null() {
            0
        } else {
            unsafe { (d.usable_size)(p) }
        };
        let nb = Block {
            size: new,
            usable,
            ..b
        };
        self.admit(p, nb, "realloc");
        unsafe {
            verify(
                p,
                keep,
                b.seed,
                &format!("{}: realloc {} -> {new}", d.name, b.size),
            );
            fill_range(p, keep, usable, b.seed);
        }
    }

    /// Re-verifies a few random live blocks and every instance's heap.
    fn audit(&mut self, when: usize) {
        for _ in 0..8.min(self.addrs.len()) {
            let a = self.addrs[self.rng.below(self.addrs.len())];
            let b = self.live[&a];
            unsafe { verify(a as *const u8, b.usable, b.seed, "audit") };
        }
        for d in self.insts {
            d.assert_heap_ok(&format!("at op {when}"));
        }
    }
}

fn run(insts: &[Dyn], seed: u64, ops: usize) {
    let mut s = Shadow {
        insts,
        live: BTreeMap::new(),
        addrs: Vec::new(),
        bytes: 0,
        rng: Rng::new(seed),
        next_seed: seed << 40,
    };
    for op in 0..ops {
        let r = s.rng.below(100);
        let full = s.addrs.len() >= MAX_LIVE || s.bytes >= MAX_BYTES;
        if s.addrs.len() < 16 || (r < 50 && !full) {
            s.alloc();
        } else if r < 80 || full {
            s.free();
        } else {
            s.realloc();
        }
        if op % 1000 == 999 {
            s.audit(op);
        }
        // Now and then the live set drains almost completely, so pages and
        // segments empty out and come back.
        if op % 20_000 == 19_999 {
            while s.addrs.len() > 10 {
                s.free();
            }
        }
    }
    while !s.addrs.is_empty() {
        s.free();
    }
    for d in insts {
        d.assert_heap_ok("after freeing everything");
        (d.trim)();
        d.assert_heap_ok("after trim");
        let st = (d.stats)();
        assert_eq!(st.huge_blocks, 0, "{}: huge blocks left: {st:?}", d.name);
        assert_eq!(st.huge_bytes, 0, "{}: huge bytes left: {st:?}", d.name);
        assert_eq!(st.pages, 0, "{}: pages left after trim: {st:?}", d.name);
        assert_eq!(
            st.segments, 0,
            "{}: segments left after trim: {st:?}",
            d.name
        );
        assert_eq!(
            st.mapped, st.meta,
            "{}: more than metadata mapped: {st:?}",
            d.name
        );
    }
}

/// One test per seed, each over three fresh instances.
macro_rules! shadow_tests {
    ($($name:ident: seed = $seed:expr, ops = $ops:expr;)*) => {$(
        #[test]
        fn $name() {
            emma::emma_instance!(A);
            emma::emma_instance!(B);
            emma::emma_instance!(C);
            let insts = [dyn_of::<A>("A"), dyn_of::<B>("B"), dyn_of::<C>("C")];
            run(&insts, $seed, scaled($ops));
        }
    )*};
}

shadow_tests! {
    seed_1: seed = 1, ops = 40_000;
    seed_2: seed = 2, ops = 40_000;
    seed_3: seed = 3, ops = 40_000;
    seed_0xdeadbeef: seed = 0xdead_beef, ops = 40_000;
    seed_long: seed = 42, ops = 120_000;
}

/// The model itself must catch what it claims to: a corrupted byte, and
/// overlapping blocks (fed by hand).
#[test]
fn the_shadow_model_catches_corruption_and_overlap() {
    emma::emma_instance!(M);
    let insts = [dyn_of::<M>("M")];
    let mut s = Shadow {
        insts: &insts,
        live: BTreeMap::new(),
        addrs: Vec::new(),
        bytes: 0,
        rng: Rng::new(9),
        next_seed: 0,
    };
    s.alloc();
    let a = s.addrs[0];
    let b = s.live[&a];
    unsafe { *(a as *mut u8).add(b.usable - 1) ^= 1 };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.free()));
    assert!(caught.is_err(), "a flipped byte went unnoticed");

    let mut s = Shadow {
        insts: &insts,
        live: BTreeMap::new(),
        addrs: Vec::new(),
        bytes: 0,
        rng: Rng::new(9),
        next_seed: 0,
    };
    let l = layout(64, 16);
    let p = unsafe { (insts[0].alloc)(l) };
    let blk = Block {
        size: 64,
        align: 16,
        usable: 64,
        seed: 1,
        inst: 0,
    };
    s.admit(p, blk, "alloc");
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.admit(unsafe { p.add(16) }, blk, "alloc")
    }));
    assert!(again.is_err(), "an overlap went unnoticed");
    unsafe { (insts[0].dealloc)(p, l) };
}
