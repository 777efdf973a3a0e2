//! Zero-size blocks (`hardened`): `malloc(0)` returns a unique address in a
//! region where any access faults, so a program that reads or writes
//! through a pointer to a zero-size object is stopped at once.
//!
//! The region is one segment per heap, mapped on the heap's first
//! zero-size request: its metadata slice holds a [`SegmentHeader`] of kind
//! [`Kind::Zero`] and one bit per 16-byte slot; the other slices are
//! `PROT_NONE` (address space, no memory; two mappings). Slots are taken by
//! the heap's owner and freed by any thread with one atomic operation; the
//! bit catches double frees. If the region cannot be made, or is full,
//! `malloc(0)` falls back to an ordinary block.

use crate::heap::Quarantine;
use crate::instance::InstanceState;
use crate::segment::{segment_of, slow_tag, Kind, SegmentHeader, SEGMENT_SIZE, SLICE_SIZE};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Distance between zero-size slots (the minimum alignment).
const SLOT: usize = 16;
/// Slots of a region: every granule past the metadata slice.
const SLOTS: usize = (SEGMENT_SIZE - SLICE_SIZE) / SLOT;
/// Bitmap words.
const WORDS: usize = SLOTS / 64;
/// Offset of the bitmap in the metadata slice.
const BITMAP: usize = 64;

const _: () = assert!(core::mem::size_of::<SegmentHeader>() <= BITMAP);
const _: () = assert!(BITMAP + WORDS * 8 <= SLICE_SIZE);

fn word(base: usize, i: usize) -> &'static AtomicU64 {
    // SAFETY: the bitmap lies in the region's metadata slice, mapped for as
    // long as the instance is (callers hold a pointer of the region).
    unsafe { &*((base + BITMAP + i * 8) as *const AtomicU64) }
}

/// A fresh zero-size block from `q`'s region (mapped on first use), or
/// null if there is none to be had.
pub fn alloc(st: &InstanceState, q: &mut Quarantine) -> *mut u8 {
    if q.zero.is_null() {
        q.zero = map(st);
        if q.zero.is_null() {
            return ptr::null_mut();
        }
    }
    let base = q.zero as usize;
    for k in 0..WORDS {
        let i = (q.zero_cursor + k) % WORDS;
        let w = word(base, i);
        let v = w.load(Ordering::Relaxed);
        if v != u64::MAX {
            // Only the owner sets bits; others only clear them.
            let bit = (!v).trailing_zeros() as usize;
            w.fetch_or(1 << bit, Ordering::Relaxed);
            q.zero_cursor = i;
            return (base + SLICE_SIZE + (i * 64 + bit) * SLOT) as *mut u8;
        }
    }
    ptr::null_mut()
}

/// Maps and sets up a region; null on failure.
fn map(st: &InstanceState) -> *mut u8 {
    let Some(base) = st.store.map(SEGMENT_SIZE) else {
        return ptr::null_mut();
    };
    let b = base.as_ptr();
    // SAFETY: the mapping is ours and fresh; slices past the first hold
    // nothing.
    unsafe {
        if crate::sys::mprotect_none(b.add(SLICE_SIZE), SEGMENT_SIZE - SLICE_SIZE).is_err() {
            st.store.unmap(base, SEGMENT_SIZE);
            return ptr::null_mut();
        }
        b.cast::<SegmentHeader>().write(SegmentHeader {
            kind: Kind::Zero as u32,
            instance: st.id(),
            owner: AtomicPtr::new(slow_tag()),
        });
    }
    b
}

/// Whether block `p` of a zero-size region is live: aborts on a pointer
/// that is not a slot, or (with `free`) on a slot that is not live; with
/// `free`, frees it.
pub fn check(p: *mut u8, free: bool) {
    let base = segment_of(p) as usize;
    let off = (p as usize).wrapping_sub(base);
    if off < SLICE_SIZE {
        crate::keys::corrupted("pointer into segment metadata: not a block", p);
    }
    if !off.is_multiple_of(SLOT) {
        crate::keys::corrupted("misaligned pointer into the zero-size region", p);
    }
    let slot = (off - SLICE_SIZE) / SLOT;
    let (w, m) = (word(base, slot / 64), 1u64 << (slot % 64));
    let live = if free {
        w.fetch_and(!m, Ordering::Relaxed)
    } else {
        w.load(Ordering::Relaxed)
    };
    if live & m == 0 {
        crate::keys::corrupted(
            if free {
                "double free of a zero-size block"
            } else {
                "freed zero-size block used (realloc or usable size)"
            },
            p,
        );
    }
}
