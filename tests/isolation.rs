//! Isolation in one process (after snmalloc's
//! `two_alloc_types`): three instances — one of them the
//! `#[global_allocator]` — used concurrently from several threads
//! - never map overlapping memory, and every mapping they report is really
//!   in `/proc/self/maps`;
//! - keep independent statistics: hammering one leaves the others' `stats()`
//!   exactly as they were;
//! - each own their blocks and nobody else's: `owns` is true for exactly
//!   one instance, and false for null, stack, static, `usize::MAX`-ish and
//!   `System` pointers, for memory right next to a huge block, and for a
//!   huge block's range once it is unmapped;
//! - survive one another's teardown.
//!
//! Tests here compare statistics and walk mappings, so they run one at a
//! time (`SERIAL`); other test binaries are separate processes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::InstanceExt;
use std::alloc::System;
use std::sync::Mutex;

emma::emma_instance!(Global);
emma::emma_instance!(B);
emma::emma_instance!(C);
emma::emma_instance!(Doomed);

#[global_allocator]
static G: Global = Global::new();

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn insts() -> [Dyn; 3] {
    [
        dyn_of::<Global>("Global"),
        dyn_of::<B>("B"),
        dyn_of::<C>("C"),
    ]
}

/// Every mapping of each instance is in /proc/self/maps, and no two
/// mappings (of one instance or of two) overlap.
fn assert_mappings_disjoint_and_real() {
    let maps = proc_maps();
    let mut all: Vec<(usize, usize, &str)> = Vec::new();
    for (name, m) in [
        ("Global", mappings(G)),
        ("B", mappings(B)),
        ("C", mappings(C)),
    ] {
        for (b, l) in m {
            assert!(l > 0 && b % 4096 == 0, "{name}: odd mapping {b:#x}+{l:#x}");
            assert!(
                covered(&maps, b, l),
                "{name}: mapping {b:#x}+{l:#x} is not in /proc/self/maps"
            );
            all.push((b, l, name));
        }
    }
    all.sort_unstable();
    for w in all.windows(2) {
        let ((b0, l0, n0), (b1, l1, n1)) = (w[0], w[1]);
        assert!(
            b0 + l0 <= b1,
            "mapping {b0:#x}+{l0:#x} of {n0} overlaps {b1:#x}+{l1:#x} of {n1}"
        );
    }
}

/// A block in flight between threads: instance index and address.
type Owned = (usize, usize);

#[test]
fn instances_used_concurrently_stay_disjoint() {
    let _s = serial();
    let insts = insts();
    let handles: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                let mut kept: Vec<Owned> = Vec::new();
                let mut boxes: Vec<Box<[u8]>> = Vec::new();
                for n in 0..scaled(20_000) {
                    let k = rng.below(3);
                    let d = insts[k];
                    let size = if rng.chance(1, 2000) {
                        rng.range(2 << 20, 9 << 20)
                    } else {
                        rng.size().clamp(COOKIE_MIN, 128 << 10)
                    };
                    let align = 1 << rng.range(0, 7);
                    let p = unsafe { (d.alloc)(layout(size, align)) };
                    assert!(!p.is_null());
                    unsafe { stamp(p, size, align) };
                    if rng.chance(1, 4) {
                        kept.push((k, p as usize));
                    } else {
                        unsafe { (d.dealloc)(p, check_stamp(p)) };
                    }
                    // The global instance also through std.
                    if n % 8 == 0 {
                        boxes.push(vec![n as u8; rng.range(1, 3000)].into_boxed_slice());
                        if boxes.len() > 64 {
                            let b = boxes.swap_remove(rng.below(boxes.len()));
                            assert!(b.iter().all(|&x| x == b[0]));
                        }
                    }
                }
                for d in &insts {
                    d.assert_heap_ok("in a worker");
                }
                kept
            })
        })
        .collect();
    let kept: Vec<Owned> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(!kept.is_empty());
    assert_mappings_disjoint_and_real();
    for &(k, p) in &kept {
        let p = p as *mut u8;
        let l = unsafe { check_stamp(p) };
        for (j, d) in insts.iter().enumerate() {
            let owned = (d.owns)(p) && (d.owns)(unsafe { p.add(l.size() - 1) });
            assert_eq!(
                owned,
                j == k,
                "{p:?} of {} owned by {}: {owned}",
                insts[k].name,
                d.name
            );
        }
    }
    // Freed here, on another thread than the allocating one.
    for (k, p) in kept {
        let p = p as *mut u8;
        unsafe { (insts[k].dealloc)(p, check_stamp(p)) };
    }
    assert_mappings_disjoint_and_real();
}

/// Allocates and frees from `d` on several threads, with huge blocks and
/// trims: enough to change every counter an instance has.
fn hammer(d: Dyn) {
    let hs: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(77 + t);
                let mut live = Vec::new();
                for n in 0..scaled(5_000) {
                    let size = if n % 500 == 0 { 40 << 20 } else { rng.size() };
                    let l = layout(size, 16);
                    let p = unsafe { (d.alloc)(l) };
                    assert!(!p.is_null());
                    live.push((p as usize, l));
                    if live.len() > 100 {
                        let (p, l) = live.swap_remove(rng.below(live.len()));
                        unsafe { (d.dealloc)(p as *mut u8, l) };
                    }
                }
                (d.trim)();
                live
            })
        })
        .collect();
    // Freed by this thread: remote frees too.
    for h in hs {
        for (p, l) in h.join().unwrap() {
            unsafe { (d.dealloc)(p as *mut u8, l) };
        }
    }
    (d.trim)();
}

#[test]
fn activity_in_one_instance_leaves_the_others_stats_alone() {
    let _s = serial();
    // Each private instance holds a few live blocks during the test.
    let keep: Vec<(Dyn, *mut u8, usize)> = insts()[1..]
        .iter()
        .flat_map(|&d| {
            [64, 5000, 300_000, 3 << 20].map(move |s| (d, unsafe { (d.alloc)(layout(s, 16)) }, s))
        })
        .collect();
    let [g, b, c] = insts();

    let (b0, c0) = (B.stats(), C.stats());
    let g0 = G.stats();
    hammer(g);
    assert_ne!(
        G.stats(),
        g0,
        "hammering the global instance changed nothing?"
    );
    assert_eq!(B.stats(), b0, "B's stats moved while only Global was used");
    assert_eq!(C.stats(), c0, "C's stats moved while only Global was used");

    hammer(b);
    assert_ne!(B.stats(), b0);
    assert_eq!(C.stats(), c0, "C's stats moved while only B was used");

    let b1 = B.stats();
    hammer(c);
    assert_ne!(C.stats(), c0);
    assert_eq!(B.stats(), b1, "B's stats moved while only C was used");

    for (d, p, s) in keep {
        unsafe { (d.dealloc)(p, layout(s, 16)) };
    }
}

#[test]
fn owns_recognises_exactly_its_own_blocks() {
    let _s = serial();
    let insts = insts();
    for (k, d) in insts.iter().enumerate() {
        for (size, align) in [
            (1, 1),
            (100, 16),
            (5000, 4096),
            (100_000, 64 << 10),
            (emma::MAX_CLASS_SIZE, 16),
            (3 << 20, 16),
            (100, 8 << 20),
            (40 << 20, 16),
        ] {
            let l = layout(size, align);
            let p = unsafe { (d.alloc)(l) };
            let u = unsafe { (d.usable_size)(p) };
            for q in [p, unsafe { p.add(size / 2) }, unsafe { p.add(u - 1) }] {
                for (j, o) in insts.iter().enumerate() {
                    assert_eq!(
                        (o.owns)(q),
                        j == k,
                        "{q:?} in a {size}-byte block of {}: owns by {}",
                        d.name,
                        o.name
                    );
                }
            }
            unsafe { (d.dealloc)(p, l) };
        }
    }

    // Pointers no instance gave out.
    let on_stack = [0u8; 64];
    static IN_DATA: [u8; 64] = [0; 64];
    let sys_small = unsafe { System.alloc(layout(64, 16)) };
    let sys_large = unsafe { System.alloc(layout(8 << 20, 16)) };
    let foreign: Vec<(*const u8, &str)> = vec![
        (core::ptr::null(), "null"),
        (core::ptr::without_provenance(1), "1"),
        (core::ptr::without_provenance(4095), "4095"),
        (on_stack.as_ptr(), "stack"),
        (IN_DATA.as_ptr(), "static"),
        (owns_recognises_exactly_its_own_blocks as *const u8, "code"),
        (usize::MAX as *const u8, "usize::MAX"),
        ((usize::MAX - 15) as *const u8, "usize::MAX - 15"),
        ((usize::MAX << 22) as *const u8, "top segment"),
        ((1usize << 47) as *const u8, "2^47"),
        (((1usize << 47) - 1) as *const u8, "2^47 - 1"),
        ((1usize << 63) as *const u8, "2^63"),
        (sys_small, "System small"),
        (sys_large, "System large"),
        (unsafe { sys_large.add((8 << 20) - 1) }, "System large end"),
    ];
    for (p, what) in foreign {
        for d in &insts {
            assert!(!(d.owns)(p), "{} owns the {what} pointer {p:?}", d.name);
        }
    }
    unsafe {
        System.dealloc(sys_small, layout(64, 16));
        System.dealloc(sys_large, layout(8 << 20, 16));
    }

    // A huge block too large for the cache is unmapped on free.
    let l = layout(300 << 20, 16);
    let p = unsafe { B.alloc(l) };
    assert!(B.owns(p));
    unsafe { B.dealloc(p, l) };
    assert!(
        !B.owns(p),
        "B still owns {p:?} after its 300 MiB mapping was unmapped"
    );
    // A cached one is forgotten once the cache is trimmed.
    let l = layout(5 << 20, 16);
    let p = unsafe { B.alloc(l) };
    unsafe { B.dealloc(p, l) };
    B.trim();
    assert!(
        !B.owns(p),
        "B still owns {p:?} after trim unmapped the cached block"
    );
}

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
}
const PROT_READ: i32 = 1;
const PROT_WRITE: i32 = 2;
const MAP_PRIVATE: i32 = 2;
const MAP_ANONYMOUS: i32 = 0x20;
const MAP_FIXED_NOREPLACE: i32 = 0x10_0000;
const MAP_FAILED: *mut u8 = usize::MAX as *mut u8;

/// Memory right after a huge block's mapping is not the instance's: some
/// other mapping (another allocator's, a file's) may sit there, and `owns`
/// must say no to it. (`owns` answers per 4 MiB chunk, so huge mappings
/// cover whole chunks.) Blocks fresh and shrunk by `realloc` (tail
/// unmapped).
#[test]
fn owns_is_false_for_memory_right_after_a_huge_block() {
    let _s = serial();
    for (first, size) in [
        (emma::MAX_CLASS_SIZE + 1, emma::MAX_CLASS_SIZE + 1),
        ((2 << 20) + 1, (2 << 20) + 1),
        ((5 << 20) + 1, (5 << 20) + 1),
        ((33 << 20) + 5, (33 << 20) + 5),
        (48 << 20, (5 << 20) + 1),
        (48 << 20, (9 << 20) + 4096 * 3),
    ] {
        let l = layout(size, 16);
        let p = unsafe { B.alloc(layout(first, 16)) };
        let p = unsafe { B.realloc(p, layout(first, 16), size) };
        let (base, len) = mappings(B)
            .into_iter()
            .find(|&(b, l)| b <= p as usize && (p as usize) < b + l)
            .expect("the block's mapping is listed");
        let end = base + len;
        assert_eq!(
            end % (4 << 20),
            0,
            "a huge mapping must end on a chunk boundary"
        );
        let ours = mappings(B);
        let in_b = |a: usize| ours.iter().any(|&(b, l)| b <= a && a < b + l);
        assert!(B.owns(unsafe { p.add(B.usable_size(p) - 1) }));
        // Put a page of our own right after the block's mapping if the
        // space is free; whatever is there, unless it is another mapping of
        // B's, is not B's.
        let q = unsafe {
            mmap(
                end as *mut u8,
                4096,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let owned_after = !in_b(end) && B.owns(end as *const u8);
        let owned_before = !in_b(base - 1) && B.owns((base - 1) as *const u8);
        unsafe {
            if q != MAP_FAILED {
                munmap(q, 4096);
            }
            B.dealloc(p, l);
        }
        assert!(
            !owned_after,
            "B owns {end:#x}, just after its {size}-byte huge block's mapping"
        );
        assert!(
            !owned_before,
            "B owns {:#x}, just before its {size}-byte huge block's mapping",
            base - 1
        );
    }
}

/// One instance torn down while the others hold live blocks: theirs keep
/// their contents, mappings and statistics; the torn-down one maps nothing
/// but its heap metadata, and works again afterwards.
#[test]
fn teardown_leaves_the_other_instances_alone() {
    let _s = serial();
    let keep: Vec<(Dyn, *mut u8)> = insts()
        .into_iter()
        .flat_map(|d| {
            [48, 7000, 200_000, 6 << 20].map(move |s| {
                let p = unsafe { (d.alloc)(layout(s, 16)) };
                unsafe { stamp(p, s, 16) };
                (d, p)
            })
        })
        .collect();
    let (b0, c0) = (B.stats(), C.stats());
    let (bm, cm) = (mappings(B), mappings(C));

    let mut doomed = Vec::new();
    for n in 0..2000 {
        let s = if n % 100 == 0 {
            2 << 20
        } else {
            [16, 100, 3000, 90_000][n % 4]
        };
        let p = unsafe { Doomed.alloc(layout(s, 16)) };
        unsafe { stamp(p, s, 16) };
        doomed.push(p);
    }
    assert!(Doomed.stats().segments > 0);
    unsafe { Doomed.teardown() };
    drop(doomed); // the blocks are gone with the instance; only the Vec is freed
    let st = Doomed.stats();
    assert_eq!(
        st.mapped, st.meta,
        "Doomed still maps blocks after teardown: {st:?}"
    );
    assert!(mappings(Doomed).is_empty());

    assert_eq!((B.stats(), C.stats()), (b0, c0));
    for (m0, now) in [(bm, mappings(B)), (cm, mappings(C))] {
        assert_eq!(m0, now, "a private instance's mappings changed");
    }
    for &(d, p) in &keep {
        unsafe { check_stamp(p) };
        assert!((d.owns)(p) && !Doomed.owns(p));
    }
    assert_mappings_disjoint_and_real();

    // Usable again, from scratch.
    for s in [16, 5000, 3 << 20] {
        let l = layout(s, 16);
        let p = unsafe { Doomed.alloc(l) };
        assert!(Doomed.owns(p));
        unsafe {
            stamp(p, s, 16);
            check_stamp(p);
            Doomed.dealloc(p, l);
        }
    }
    assert_heap_ok(Doomed, "after teardown and reuse");
    for (d, p) in keep {
        unsafe { (d.dealloc)(p, check_stamp(p)) };
    }
}

/// What `smoke.rs` used to check: std's collections on the global instance.
#[test]
fn std_collections_on_the_global_instance() {
    let mut v = Vec::new();
    for i in 0..100_000u64 {
        v.push(Box::new(i));
    }
    assert_eq!(v.iter().map(|b| **b).sum::<u64>(), 99_999 * 100_000 / 2);
    assert!(v.iter().all(|b| G.owns(&**b as *const u64 as *const u8)));
    drop(v);
    let big = vec![7u8; 50 << 20];
    assert!(G.owns(big.as_ptr()) && !B.owns(big.as_ptr()));
    assert_eq!(big[(50 << 20) - 1], 7);
    let mut s = String::new();
    for i in 0..100_000 {
        s.push_str(&i.to_string());
    }
    assert_eq!(s.len(), 488_890);
    assert_heap_ok(G, "after std collections");
    let r = std::thread::spawn(|| (0..1000).map(|i| vec![i; i]).collect::<Vec<_>>())
        .join()
        .unwrap();
    assert!(r
        .iter()
        .enumerate()
        .all(|(i, v)| v.len() == i && v.iter().all(|&x| x == i)));
}

/// `for_each_mapping` is a safe function: calling it while other threads
/// map and unmap huge blocks must not crash. Run in a child process (this
/// binary re-executed), since the failure mode is a SIGSEGV: a reader
/// preempted between finding a header in the segment map and reading it,
/// while a writer unmaps that mapping. Three readers and three writers on
/// two cores race for `EMMA_TEST_RACE_MS` milliseconds (default 2000): a
/// bound on the search, not a timing assertion (it can miss the race, it
/// cannot invent one). `EMMA_TEST_RACE_MS=30000` to search harder.
#[test]
fn for_each_mapping_is_safe_while_other_threads_unmap() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::time::{Duration, Instant};
    let _s = serial();
    if in_child("for_each_mapping_is_safe_while_other_threads_unmap") {
        let ms = std::env::var("EMMA_TEST_RACE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000);
        let deadline = Instant::now() + Duration::from_millis(ms);
        static STOP: AtomicBool = AtomicBool::new(false);
        let writers: Vec<_> = (0..3)
            .map(|w| {
                std::thread::spawn(move || {
                    // Above the huge cache, so each block is mapped and
                    // unmapped (its header with it); the new one is mapped
                    // before the old one goes, so addresses differ.
                    let l = layout((40 + w) << 20, 16);
                    let mut prev = core::ptr::null_mut::<u8>();
                    while !STOP.load(Relaxed) {
                        unsafe {
                            let next = C.alloc(l);
                            if !prev.is_null() {
                                C.dealloc(prev, l);
                            }
                            prev = next;
                        }
                    }
                    unsafe { C.dealloc(prev, l) };
                })
            })
            .collect();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    // The lengths are used, so the header reads stay.
                    let mut seen = 0usize;
                    while Instant::now() < deadline {
                        for _ in 0..100 {
                            C.for_each_mapping(|_, len| seen = seen.wrapping_add(len));
                        }
                    }
                    seen
                })
            })
            .collect();
        let seen: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        STOP.store(true, Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert!(seen > 0);
    }
}
