//! The `hardened` entry points' own paths: allocation with the canary
//! and junk, and the free that checks the canary, junk-fills the block and
//! puts it in the quarantine (see [`crate::harden`]).

use super::{alloc_huge, alloc_plain, block_meta, free_unchecked, heap_for_slow, Instance};
use crate::check;
use crate::harden;
use crate::heap::{quarantine, Heap, SMALL_SIZE_MAX};
use crate::keys;
use crate::segment::{checks, is_small, segment_of, Kind, Segment, SLICE_SIZE};
use crate::size_class::{MAX_CLASS_SIZE, MIN_ALIGN};
use crate::thread;
use core::ptr;
use core::sync::atomic::Ordering;

/// Whether `h` (the calling thread's slot) is a real heap the calling
/// thread owns: only then may a hardened path use its quarantine.
///
/// # Safety
/// `h` is the empty heap or a heap of an instance (what a slot holds).
#[inline]
unsafe fn own_heap(h: *mut Heap) -> bool {
    // The empty heap needs no test of its own: its owner is never set, and
    // a thread pointer is never 0.
    // SAFETY: per contract; heaps outlive their instance's blocks.
    let tp = unsafe { (*h).owner.tp.load(Ordering::Relaxed) };
    tp == thread::thread_pointer()
}

/// `hardened` allocation: [`harden::SLACK`] more bytes for the canary and
/// size trailer; junk in what the caller gets.
///
/// Small requests are served here from the current page, which also gives
/// the canary its keys and block size (no second lookup); the rest, and a
/// page with no free block, go to [`alloc_hardened_slow`] (as do zeroed
/// requests, from `alloc_zeroed`). Inlined into `alloc_not_fast`, so the
/// call is the caller's only one.
#[inline(always)]
pub(super) fn alloc_hardened<I: Instance>(size: usize, align: usize) -> *mut u8 {
    // `size` in 1..=SMALL_SIZE_MAX - SLACK, in one compare.
    if size.wrapping_sub(1) < SMALL_SIZE_MAX - harden::SLACK && align <= MIN_ALIGN {
        // SAFETY: `I::heap()` is the calling thread's heap or the empty
        // one; the padded size is at most `SMALL_SIZE_MAX`.
        unsafe {
            let (p, page) = Heap::alloc_small_page(I::heap(), size + harden::SLACK);
            if !p.is_null() {
                harden::canary::seal(p, size, (*page).block_size as usize, (*page).keys);
                check::on_alloc_small(p);
                return p;
            }
        }
    }
    alloc_hardened_slow::<I>(size, align, false)
}

/// [`alloc_hardened`] for what its fast path does not serve, and zeroed
/// allocations (`zero`).
#[inline(never)]
pub(super) fn alloc_hardened_slow<I: Instance>(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size == 0 && align <= MIN_ALIGN {
        let mut h = I::heap();
        // SAFETY: the calling thread's slot.
        if !unsafe { own_heap(h) } {
            h = heap_for_slow::<I>();
        }
        if !h.is_null() {
            // SAFETY: the calling thread's own heap.
            let p = harden::zero::alloc(I::state(), unsafe { &mut (*h).quarantine });
            if !p.is_null() {
                return p;
            }
        }
    }
    let padded = size.saturating_add(harden::SLACK);
    let (p, clean) = if padded > MAX_CLASS_SIZE || align > SLICE_SIZE {
        alloc_huge::<I>(padded, align)
    } else {
        (alloc_plain::<I>(padded, align), false)
    };
    if p.is_null() {
        return p;
    }
    // SAFETY: a fresh block of at least `padded` bytes. Blocks come
    // junk-filled (their first `JUNK_SPAN` bytes) from their page; a huge
    // block gets the same, fresh (zeros are not junk) or reused.
    unsafe {
        let (raw, keys) = block_meta(p);
        if zero && !clean {
            ptr::write_bytes(p, 0, size);
        } else if !zero && !is_small(segment_of(p)) {
            ptr::write_bytes(p, keys::JUNK, size.min(keys::JUNK_SPAN));
        }
        harden::canary::seal(p, size, raw, keys);
    }
    p
}

/// `hardened` `free` and `dealloc`: the pointer checks of
/// [`crate::check`], then [`free_checked`]'s work. One function for both,
/// so the segment's kind is loaded once and the checks' verdict picks the
/// path; a small block's is inline.
///
/// # Safety
/// `p` is a pointer the caller no longer uses (checked: anything else
/// aborts); `layout` as for [`check::on_dealloc_kind`].
#[inline(never)]
pub(super) unsafe fn free_hardened<I: Instance>(p: *mut u8, layout: Option<(usize, usize)>) {
    let kind = check::on_dealloc_kind(I::state(), p, layout);
    // SAFETY: the checks found a live block of ours, now marked free; a
    // zero-size block is freed already.
    unsafe {
        if kind == Kind::Small {
            free_small::<I>(p);
        } else if kind == Kind::Huge {
            free_huge::<I>(p);
        }
    }
}

/// `hardened` free of a checked block: the end canary is checked, a small
/// block is filled with junk and waits in the calling thread's quarantine.
///
/// # Safety
/// As for [`super::release`].
#[inline(never)]
pub(super) unsafe fn free_checked<I: Instance>(p: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe {
        if is_small(segment_of(p)) {
            free_small::<I>(p)
        } else {
            free_huge::<I>(p)
        }
    }
}

/// [`free_checked`] of a huge block: its canary, then the free.
///
/// # Safety
/// As for [`super::release`], and `p` is huge.
#[inline(always)]
unsafe fn free_huge<I: Instance>(p: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe {
        let (raw, keys) = block_meta(p);
        harden::canary::requested(p, raw, keys);
        free_unchecked::<I>(p);
    }
}

/// [`free_checked`] of a small block: canary, junk, quarantine. Blocks
/// whose junk takes a `memset` go out of line, so that this path calls
/// nothing but tail calls and saves no registers.
///
/// # Safety
/// As for [`super::release`], and `p` is small.
#[inline(always)]
unsafe fn free_small<I: Instance>(p: *mut u8) {
    // SAFETY: forwarded contract: the page of a live small block.
    unsafe {
        let page = Segment::page_of(segment_of(p).cast(), p);
        let raw = (*page).block_size as usize;
        harden::canary::requested(p, raw, (*page).keys);
        if raw > checks::SEAL_INLINE_MAX {
            return free_small_long::<I>(p, raw);
        }
        junk_and_quarantine::<I>(p, raw);
    }
}

/// [`free_small`] of a block whose junk fill calls `memset`.
///
/// # Safety
/// As for [`junk_and_quarantine`].
#[inline(never)]
unsafe fn free_small_long<I: Instance>(p: *mut u8, raw: usize) {
    // SAFETY: forwarded contract.
    unsafe { junk_and_quarantine::<I>(p, raw) }
}

/// Fills freed small block `p` of `raw` bytes with junk and puts it in
/// the calling thread's quarantine, releasing the oldest block there (or
/// releases `p` at once if it is too large or the thread has no heap).
///
/// # Safety
/// `p` is a small block of instance `I`, checked and marked free, its
/// canary checked, not used after the call.
#[inline(always)]
unsafe fn junk_and_quarantine<I: Instance>(p: *mut u8, raw: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        p.cast::<usize>().write(keys::JUNK_WORD);
        checks::seal_freed(p, raw);
        let h = I::heap();
        if raw > quarantine::BLOCK_MAX || !own_heap(h) {
            return free_unchecked::<I>(p);
        }
        let q = quarantine::admit(h, p);
        if !q.is_null() {
            // The evicted block is freed like any block the checks passed
            // (it was one, and no list holds it): the free fast path, inline,
            // rather than `Heap::free_block`'s call.
            free_unchecked::<I>(q);
        }
    }
}
