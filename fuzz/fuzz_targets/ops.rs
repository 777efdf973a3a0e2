//! Fuzz target: arbitrary sequences of alloc / alloc_zeroed / realloc /
//! free / trim on two emma instances at once, checked against a shadow
//! model that catches overlapping blocks, misalignment, lost contents and
//! non-zeroed `alloc_zeroed` memory.
//!
//! Run: `cargo fuzz run ops fuzz/corpus/ops` (nightly). `.ci/run` runs it
//! for a bounded time from the checked-in seed corpus.
#![no_main]

use emma::InstanceExt;
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

emma::emma_instance!(A);
emma::emma_instance!(B);

/// A live block in the model.
struct Live {
    size: usize,
    align: usize,
    fill: u8,
    in_b: bool,
}

/// Reads the op stream: each op is a tag byte and up to 4 argument bytes.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
}

/// A size spread over every class and into huge blocks.
fn size_of(sel: u8, raw: u16) -> usize {
    match sel % 16 {
        0..=7 => 1 + (raw as usize % 256),
        8..=11 => 1 + (raw as usize % 16_384),
        12..=14 => 1 + (raw as usize) * 16,   // up to 1 MiB
        _ => (1 << 20) + (raw as usize) * 16, // huge: 1–2 MiB
    }
}

/// The offsets whose bytes are written and checked: all of a small block,
/// the ends and a stride of a large one (keeps a run fast).
fn probes(size: usize) -> impl Iterator<Item = usize> {
    let step = if size <= 4096 { 1 } else { 509 };
    (0..size.min(256)).chain((256..size).step_by(step)).chain(size.saturating_sub(256)..size)
}

unsafe fn fill(p: *mut u8, size: usize, v: u8) {
    for i in probes(size) {
        p.add(i).write(v);
    }
}

unsafe fn alloc_in(in_b: bool, l: Layout, zeroed: bool) -> *mut u8 {
    match (in_b, zeroed) {
        (false, false) => A.alloc(l),
        (false, true) => A.alloc_zeroed(l),
        (true, false) => B.alloc(l),
        (true, true) => B.alloc_zeroed(l),
    }
}

/// Checks the probed bytes of `b` below `limit` (a realloc keeps only a prefix).
unsafe fn check_prefix(p: *mut u8, b: &Live, limit: usize) {
    for i in probes(b.size).filter(|&i| i < limit) {
        assert_eq!(*p.add(i), b.fill, "block {p:?} lost its contents at byte {i}");
    }
}

unsafe fn check(p: *mut u8, b: &Live) {
    check_prefix(p, b, b.size)
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops(data);
    // Address -> block; ordered, to detect overlap with the neighbours.
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut next_fill = 1u8;
    let mut budget = 512; // ops per input: keeps each run short
    while let Some(tag) = ops.byte() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        unsafe {
            match tag % 6 {
                0 | 1 => {
                    let (Some(sel), Some(raw), Some(al)) = (ops.byte(), ops.u16(), ops.byte()) else { break };
                    let size = size_of(sel, raw);
                    let align = 1usize << (al % 13); // up to 4 KiB
                    let in_b = sel & 0x80 != 0;
                    let zeroed = tag % 6 == 1;
                    let l = Layout::from_size_align(size, align).unwrap();
                    let p = alloc_in(in_b, l, zeroed);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "misaligned");
                    let (owner, other) = if in_b { (B.owns(p), A.owns(p)) } else { (A.owns(p), B.owns(p)) };
                    assert!(owner && !other, "ownership");
                    if zeroed {
                        assert!(probes(size).all(|i| *p.add(i) == 0), "not zeroed");
                    }
                    let a = p as usize;
                    if let Some((&q, b)) = live.range(..=a).next_back() {
                        assert!(q + b.size <= a, "overlaps the block below");
                    }
                    if let Some((&q, _)) = live.range(a..).next() {
                        assert!(a + size <= q, "overlaps the block above");
                    }
                    next_fill = next_fill.wrapping_add(1).max(1);
                    fill(p, size, next_fill);
                    live.insert(a, Live { size, align, fill: next_fill, in_b });
                }
                2 | 3 => {
                    let Some(k) = ops.u16() else { break };
                    if live.is_empty() {
                        continue;
                    }
                    let a = *live.keys().nth(k as usize % live.len()).unwrap();
                    let b = live.remove(&a).unwrap();
                    let p = a as *mut u8;
                    check(p, &b);
                    let l = Layout::from_size_align(b.size, b.align).unwrap();
                    if tag % 6 == 2 {
                        if b.in_b { B.dealloc(p, l) } else { A.dealloc(p, l) }
                    } else {
                        let (Some(sel), Some(raw)) = (ops.byte(), ops.u16()) else {
                            live.insert(a, b);
                            break;
                        };
                        let new = size_of(sel, raw);
                        let q = if b.in_b { B.realloc(p, l, new) } else { A.realloc(p, l, new) };
                        assert!(!q.is_null());
                        assert_eq!(q as usize % b.align, 0, "realloc lost alignment");
                        check_prefix(q, &b, new);
                        fill(q, new, b.fill);
                        live.insert(q as usize, Live { size: new, ..b });
                    }
                }
                4 => {
                    if tag & 0x80 != 0 { B.trim() } else { A.trim() }
                }
                _ => {
                    A.check_heap().unwrap();
                    B.check_heap().unwrap();
                }
            }
        }
    }
    for (a, b) in live {
        unsafe {
            check(a as *mut u8, &b);
            let l = Layout::from_size_align(b.size, b.align).unwrap();
            if b.in_b { B.dealloc(a as *mut u8, l) } else { A.dealloc(a as *mut u8, l) }
        }
    }
    A.check_heap().unwrap();
    B.check_heap().unwrap();
});
