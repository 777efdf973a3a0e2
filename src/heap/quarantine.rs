//! The small-block quarantine (`hardened`): a freed block of up to
//! [`BLOCK_MAX`] bytes is not put back on its page's free list at once but
//! waits in a ring of [`SLOTS`] recently freed blocks of the freeing
//! thread's heap; each free releases the oldest. A dangling pointer so does
//! not alias the next object of its size, and a write through it lands in
//! junk that is checked when the block is handed out again.
//!
//! Double frees of quarantined blocks are caught by the live-block bitmap
//! (the bit is cleared when the block enters the quarantine). The ring is
//! owned by the heap's thread; [`flush`] empties it (trim). The hardened
//! allocation's pop that also returns the page is here too, with the rest
//! of what only `hardened` uses of the heap.

use super::Heap;
use crate::segment::Page;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

/// Blocks in the ring.
const SLOTS: usize = if crate::keys::ENABLED { 32 } else { 0 };
// The ring's index wraps with a mask.
const _: () = assert!(SLOTS == 0 || SLOTS.is_power_of_two());
/// Larger blocks skip the quarantine (32 of them would hold too much).
pub const BLOCK_MAX: usize = 16 << 10;

/// A heap's quarantine, and its zero-size region (see [`crate::harden::zero`]).
pub struct Quarantine {
    slots: [*mut u8; SLOTS],
    next: usize,
    /// Whether a block was admitted since the last [`flush`]: read by
    /// sweeps ([`Heap::has_work`]), since the blocks may be other heaps'.
    pub filled: AtomicBool,
    /// The heap's zero-size region (null until the first `malloc(0)`).
    pub zero: *mut u8,
    /// Where the next zero-size slot search starts (a bitmap word index).
    pub zero_cursor: usize,
}

impl Quarantine {
    /// An empty quarantine.
    pub const fn new() -> Quarantine {
        Quarantine {
            slots: [ptr::null_mut(); SLOTS],
            next: 0,
            filled: AtomicBool::new(false),
            zero: ptr::null_mut(),
            zero_cursor: 0,
        }
    }
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine::new()
    }
}

impl Heap {
    /// [`Heap::alloc_small`], also returning the page the block came from
    /// (the hardened allocation seals the block with the page's keys).
    ///
    /// # Safety
    /// As for [`Heap::alloc_small`].
    #[inline(always)]
    pub unsafe fn alloc_small_page(h: *mut Heap, size: usize) -> (*mut u8, *mut Page) {
        // SAFETY: per contract.
        unsafe {
            let page = Heap::small_page(h, size);
            (Heap::pop(page), page)
        }
    }
}

/// Puts freed block `p` in the calling thread's heap `h`'s ring and
/// returns the block to release now (the oldest one, or null).
///
/// # Safety
/// The calling thread owns `h`, a real heap; `p` is a small block freed by
/// the caller (checked and junk-filled).
#[inline]
pub unsafe fn admit(h: *mut Heap, p: *mut u8) -> *mut u8 {
    if SLOTS == 0 {
        return p;
    }
    // SAFETY: per contract the heap and its ring are ours. No `&mut` to
    // the whole quarantine: a sweep may read `filled` meanwhile.
    unsafe {
        let q = ptr::addr_of_mut!((*h).quarantine);
        let i = (*q).next;
        let old = *(*q).slots.get_unchecked(i);
        *(*q).slots.get_unchecked_mut(i) = p;
        (*q).next = (i + 1) & SLOTS.wrapping_sub(1);
        (*q).filled.store(true, Ordering::Relaxed);
        old
    }
}

/// Releases every quarantined block of `h` to its page.
///
/// # Safety
/// The calling thread owns `h`, a real heap.
pub unsafe fn flush(h: *mut Heap) {
    // SAFETY: per contract.
    let slots = unsafe { &mut (*h).quarantine.slots };
    // SAFETY: per contract.
    unsafe { (*h).quarantine.filled.store(false, Ordering::Relaxed) };
    for slot in slots.iter_mut() {
        let p = core::mem::replace(slot, ptr::null_mut());
        if !p.is_null() {
            // SAFETY: a quarantined block: freed, checked, unused.
            unsafe { Heap::free_block(h, p) };
        }
    }
}
