//! The entry points, generic over the instance: what `GlobalAlloc`, the
//! `Allocator` trait and the C ABI forward to.
//!
//! Each function is monomorphised per instance, so the instance's static
//! state and its TLS slot are link-time constants on the fast paths. The
//! slow paths take `&'static InstanceState` and exist once.

use crate::check;
use crate::harden;
use crate::heap::{Heap, SMALL_SIZE_MAX};
use crate::huge::{self, HugeHeader};
use crate::instance::InstanceState;
use crate::keys::{self, Keys};
use crate::segment::{is_small, owner_of, segment_of, slow_tag, Owner, Segment, SLICE_SIZE};
use crate::size_class::{class_of, class_of_aligned, MAX_CLASS_SIZE, MIN_ALIGN};
use crate::thread;
use core::ptr;
use core::sync::atomic::Ordering;

mod hardened;
mod realloc;
use hardened::{alloc_hardened, alloc_hardened_slow, free_checked, free_hardened};
pub use realloc::realloc;

/// An emma instance: a zero-sized type minted by
/// [`emma_instance!`](crate::emma_instance), naming the instance's static
/// state and its per-thread heap slot. Its methods are hidden plumbing; what
/// users call is [`GlobalAlloc`](core::alloc::GlobalAlloc), the `Allocator`
/// traits (features `allocator-api`, `allocator-api2`) and
/// [`InstanceExt`](crate::InstanceExt), implemented for every instance.
///
/// ```
/// use emma::{Instance, InstanceExt};
/// emma::emma_instance!(pub Heap);
///
/// // Code generic over the instance it runs on.
/// fn committed<I: Instance>(i: I) -> usize {
///     i.stats().committed
/// }
/// assert_eq!(committed(Heap), 0);
/// ```
///
/// # Safety
/// Implemented only by `emma_instance!`. `state` must always return the
/// same static, used by no other type; `heap`/`set_heap` must read and
/// write a slot private to this type and the calling thread (or, when
/// `USES_TLS` is false, forward to the state's thread-pointer table).
pub unsafe trait Instance: Copy + 'static {
    /// Whether `heap` reads a real thread-local slot.
    #[doc(hidden)]
    const USES_TLS: bool;
    /// The instance's state.
    #[doc(hidden)]
    fn state() -> &'static InstanceState;
    /// The calling thread's heap, or the empty heap.
    #[doc(hidden)]
    fn heap() -> *mut Heap;
    /// Sets the calling thread's heap.
    #[doc(hidden)]
    fn set_heap(h: *mut Heap);
}

/// Whether `tag` (a page's [`Page::tag`](crate::segment::Page::tag) or a
/// segment's owner) is the calling thread's heap.
///
/// # Safety
/// `tag` is null, [`slow_tag`], or a heap of instance `I` (as read from
/// the entry or segment of a live block).
#[inline(always)]
unsafe fn is_mine<I: Instance>(tag: *mut Owner) -> bool {
    if I::USES_TLS {
        tag == Heap::as_owner(I::heap())
    } else {
        // SAFETY: per contract a non-null tag is a heap of the instance or
        // `HUGE_OWNER`, which outlive their blocks.
        !tag.is_null() && unsafe { (*tag).tp.load(Ordering::Relaxed) } == thread::thread_pointer()
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two). Null if no
/// memory could be had. `size` 0 gets the smallest block (with `hardened`,
/// a block where any access faults).
#[inline(always)]
pub fn alloc<I: Instance>(size: usize, align: usize) -> *mut u8 {
    let p = alloc_fast::<I>(size, align);
    if !p.is_null() {
        return p;
    }
    alloc_not_fast::<I>(size, align)
}

/// The allocation proper (no hardening).
///
/// Fast path for small sizes: the TLS load and [`Heap::alloc_small`]'s
/// table entry and pop. Larger sizes compute the class arithmetically
/// ([`alloc_medium`]); over-aligned and huge requests go to the slow path.
#[inline(always)]
fn alloc_plain<I: Instance>(size: usize, align: usize) -> *mut u8 {
    let p = small_pop::<I>(size, align);
    if !p.is_null() {
        return p;
    }
    beyond_small::<I>(size, align)
}

/// The allocation fast path alone: a block, or null if the request needs
/// [`alloc_not_fast`] (the C `malloc` tail-calls its own slow path, which
/// also sets `errno`, so its fast path needs no stack frame). With
/// `hardened` every allocation goes to `alloc_not_fast` (canary, junk).
#[inline(always)]
pub fn alloc_fast<I: Instance>(size: usize, align: usize) -> *mut u8 {
    if keys::ENABLED {
        return ptr::null_mut();
    }
    small_pop::<I>(size, align)
}

/// Everything [`alloc_fast`] does not serve. Null if no memory could be
/// had. Out of line and cold, so the fast path falls through to its
/// return (sizes above [`SMALL_SIZE_MAX`] pay one more call).
#[cold]
#[inline(never)]
pub fn alloc_not_fast<I: Instance>(size: usize, align: usize) -> *mut u8 {
    if keys::ENABLED {
        return alloc_hardened::<I>(size, align);
    }
    beyond_small::<I>(size, align)
}

/// A small block from the calling thread's current page, or null (the
/// request is not small, or the page is empty).
#[inline(always)]
fn small_pop<I: Instance>(size: usize, align: usize) -> *mut u8 {
    // Two compares and branches (4 instructions). Folding them into one
    // compare, `(size >> 6) | align < 32`, costs 5: the shift needs a copy
    // of `size`, which the class table lookup still uses. A known `align`
    // folds its compare away.
    if is_small_request(size, align) {
        // SAFETY: `I::heap()` is the calling thread's heap or the empty one;
        // `size <= SMALL_SIZE_MAX`.
        let p = unsafe { Heap::alloc_small(I::heap(), size) };
        if !p.is_null() {
            // SAFETY: just handed out.
            unsafe { check::on_alloc(p) };
        }
        return p;
    }
    ptr::null_mut()
}

/// What [`small_pop`] did not serve: the slow path for small requests,
/// the medium path for the rest.
#[inline(always)]
fn beyond_small<I: Instance>(size: usize, align: usize) -> *mut u8 {
    if is_small_request(size, align) {
        return alloc_slow::<I>(size, align);
    }
    alloc_medium::<I>(size, align)
}

/// Whether a request is served by [`Heap::alloc_small`].
#[inline(always)]
fn is_small_request(size: usize, align: usize) -> bool {
    size <= SMALL_SIZE_MAX && align <= MIN_ALIGN
}

/// Sizes above [`SMALL_SIZE_MAX`] and alignments above [`MIN_ALIGN`].
#[inline(never)]
fn alloc_medium<I: Instance>(size: usize, align: usize) -> *mut u8 {
    if size <= MAX_CLASS_SIZE && align <= MIN_ALIGN {
        // SAFETY: as in `alloc`.
        let p = unsafe { Heap::alloc(I::heap(), class_of(size)) };
        if !p.is_null() {
            // SAFETY: just handed out.
            unsafe { check::on_alloc(p) };
            return p;
        }
    }
    alloc_slow::<I>(size, align)
}

/// The calling thread's heap for a slow path: claims one if needed, and
/// refreshes it after a fork. Null only if a new heap could not be mapped.
#[cold]
fn heap_for_slow<I: Instance>() -> *mut Heap {
    let st = I::state();
    st.enter();
    let h = I::heap();
    if !Heap::is_empty_heap(h) {
        // SAFETY: a real heap of this instance.
        let hr = unsafe { &*h };
        // With `tls` a slot can name a heap that teardown took away.
        if hr.owner.tp.load(Ordering::Relaxed) == thread::thread_pointer() {
            if hr.epoch.load(Ordering::Relaxed) != st.epoch() {
                // SAFETY: the heap is ours (our thread pointer owns it).
                unsafe { st.refresh_heap(h) };
            }
            return h;
        }
    }
    let h = st.acquire_heap(I::USES_TLS);
    if !h.is_null() {
        I::set_heap(h);
    }
    h
}

#[cold]
#[inline(never)]
fn alloc_slow<I: Instance>(size: usize, align: usize) -> *mut u8 {
    let c = if size > MAX_CLASS_SIZE || align > SLICE_SIZE {
        None
    } else if align <= MIN_ALIGN {
        Some(class_of(size))
    } else {
        class_of_aligned(size, align)
    };
    let Some(c) = c else {
        return alloc_huge::<I>(size, align).0;
    };
    let h = heap_for_slow::<I>();
    if h.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `h` is the calling thread's real heap.
    let p = unsafe {
        let p = Heap::alloc(h, c);
        if p.is_null() {
            Heap::alloc_slow(h, c)
        } else {
            p
        }
    };
    if !p.is_null() {
        // SAFETY: just handed out.
        unsafe { check::on_alloc(p) };
    }
    p
}

/// A huge block and whether it is known to be zeroed.
#[cold]
fn alloc_huge<I: Instance>(size: usize, align: usize) -> (*mut u8, bool) {
    let st = I::state();
    st.enter();
    huge::alloc(&st.store, size, align.max(MIN_ALIGN), st.id())
}

/// Allocates zeroed memory. Memory fresh from the kernel is not zeroed
/// again.
#[inline]
pub fn alloc_zeroed<I: Instance>(size: usize, align: usize) -> *mut u8 {
    if keys::ENABLED {
        // Zeroed blocks never come from the fast path (it gives junk).
        return alloc_hardened_slow::<I>(size, align, true);
    }
    if size > MAX_CLASS_SIZE || align > SLICE_SIZE {
        let (p, zero) = alloc_huge::<I>(size, align);
        if !p.is_null() && !zero {
            // SAFETY: a fresh block of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        return p;
    }
    let p = alloc::<I>(size, align);
    if p.is_null() {
        return p;
    }
    // SAFETY: `p` is a live small block of ours.
    unsafe {
        let page = Segment::page_of(segment_of(p).cast(), p);
        // Only a page of ours can have handed it out zeroed: a block from
        // a foreign page (another heap's) never is.
        if (*page).tag.load(Ordering::Relaxed) == Heap::as_owner(I::heap()) && (*page).free_is_zero
        {
            // Only the free-list link was ever written.
            p.cast::<usize>().write(0);
        } else {
            ptr::write_bytes(p, 0, size);
        }
    }
    p
}

/// Frees `p`, which was allocated with `size` and `align` (checked with
/// `boundary-checks`).
///
/// # Safety
/// `p` is a live block of instance `I`, not used after the call.
#[inline(always)]
pub unsafe fn dealloc<I: Instance>(p: *mut u8, size: usize, align: usize) {
    if keys::ENABLED {
        // SAFETY: forwarded contract.
        return unsafe { free_hardened::<I>(p, check::layout_arg(Some((size, align)))) };
    }
    if check::on_dealloc(I::state(), p, Some((size, align))) {
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { release::<I>(p) }
}

/// Frees `p` without knowing its size (the C `free`).
///
/// # Safety
/// `p` is a live block of instance `I`, not used after the call.
#[inline(always)]
pub unsafe fn free<I: Instance>(p: *mut u8) {
    if keys::ENABLED {
        // SAFETY: forwarded contract.
        return unsafe { free_hardened::<I>(p, None) };
    }
    if check::on_dealloc(I::state(), p, None) {
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { release::<I>(p) }
}

/// Frees a checked block: with `hardened` through [`free_checked`].
///
/// # Safety
/// `p` is a live block of instance `I` (already marked free by the
/// checks), not used after the call.
#[inline(always)]
unsafe fn release<I: Instance>(p: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe {
        if keys::ENABLED {
            free_checked::<I>(p)
        } else {
            free_unchecked::<I>(p)
        }
    }
}

/// The free fast path: the block's slice entry from its address, and a
/// local push if its tag is this thread's heap.
///
/// About 11 instructions with `tls`: segment and entry address (5), TLS
/// load (2), tag compare and branch (2), then [`Heap::free_local`]'s push
/// and count.
///
/// # Safety
/// `p` is a live block of instance `I`, not used afterwards, and the
/// calling thread may use `I`'s heap (any thread may).
#[inline(always)]
unsafe fn free_unchecked<I: Instance>(p: *mut u8) {
    let seg = segment_of(p);
    // SAFETY: per the callers' contracts `p` is a live block, so its
    // segment header is mapped and its slice entry readable.
    unsafe {
        let entry = Segment::slice_entry(seg, p);
        if I::USES_TLS {
            // The same test as `is_mine`, with the heap from the slot
            // rather than from the tag (so the tag is compared in memory).
            let h = I::heap();
            if Segment::tag_is(seg, p, Heap::as_owner(h)) {
                return Heap::free_local(h, entry, p);
            }
            free_other::<I>(p);
        } else {
            // `is_mine` without its null test: a live block's tag is never
            // null (a heap, or `HUGE_OWNER` for full pages, other slices
            // and huge blocks).
            let tag = (*entry).tag.load(Ordering::Relaxed);
            debug_assert!(!tag.is_null());
            if Owner::tp_is(tag, thread::thread_pointer()) {
                Heap::free_local(Heap::of(tag), entry, p);
            } else {
                free_other::<I>(p);
            }
        }
    }
}

/// A free the fast path did not take: sorted by the segment's owner.
/// Not `#[cold]`: remote frees are the common case of producer/consumer
/// programs.
///
/// # Safety
/// As for [`free_unchecked`].
#[inline(never)]
unsafe fn free_other<I: Instance>(p: *mut u8) {
    let seg = segment_of(p);
    // SAFETY: as in `free_unchecked`.
    unsafe {
        let owner = owner_of(seg);
        if is_mine::<I>(owner) {
            Heap::free_local_flagged(Heap::of(owner), p);
        } else if owner != slow_tag() {
            Heap::free_remote(I::heap(), Heap::of(owner), p);
        } else {
            free_huge::<I>(seg.cast());
        }
    }
}

/// Frees a huge block of instance `I`.
///
/// # Safety
/// `h` is the header of a live huge block of instance `I`, not used
/// afterwards.
#[cold]
unsafe fn free_huge<I: Instance>(h: *mut HugeHeader) {
    let st = I::state();
    st.enter();
    // SAFETY: the caller's block is this live huge block.
    unsafe { huge::free(&st.store, h) }
}

/// Bytes usable in block `p`: at least what was requested; with
/// `hardened` exactly that (after checking the end canary).
///
/// Small blocks: the block size from the slice entry (every slice of a
/// page carries it), found like the free fast path finds it.
///
/// # Safety
/// `p` is a live block of instance `I`.
#[inline]
pub unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: per contract.
    unsafe {
        let (raw, keys) = block_meta(p);
        if keys::ENABLED {
            harden::canary::requested(p, raw, keys)
        } else {
            raw
        }
    }
}

/// `malloc_usable_size` without the checks: the block size from the slice
/// entry, with null and huge blocks (slice offset 0, see
/// [`Segment::slice_offset`]) on the cold path: 7 instructions and a `ret`.
/// Only for builds without `hardened` (which reports the requested size).
///
/// # Safety
/// `p` is null or a live block of instance `I`.
#[inline(always)]
pub unsafe fn usable_size_unchecked(p: *mut u8) -> usize {
    if Segment::slice_offset(p) == 0 {
        // SAFETY: forwarded contract.
        return unsafe { usable_in_slice0(p) };
    }
    // SAFETY: a small block: every slice entry of its page carries the
    // block size.
    unsafe { (*Segment::slice_entry(segment_of(p), p)).block_size as usize }
}

/// [`usable_size_unchecked`] of null (0) or a huge block.
///
/// # Safety
/// As for [`usable_size_unchecked`].
#[cold]
#[inline(never)]
unsafe fn usable_in_slice0(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: forwarded contract.
    unsafe { usable_size(p) }
}

/// The size of block `p` and the keys of its end canary (the page's, or
/// derived from a huge block's header address).
///
/// # Safety
/// `p` is a live block.
#[inline(always)]
unsafe fn block_meta(p: *mut u8) -> (usize, Keys) {
    let seg = segment_of(p);
    // SAFETY: per contract.
    unsafe {
        if is_small(seg) {
            if !keys::ENABLED {
                // Every slice entry of a page carries its block size: no
                // lookup of the page's first slice, and no keys to load.
                let entry = Segment::slice_entry(seg, p);
                return ((*entry).block_size as usize, Keys::default());
            }
            let page = Segment::page_of(seg.cast(), p);
            ((*page).block_size as usize, (*page).keys)
        } else {
            let h = seg.cast::<HugeHeader>();
            ((*h).usable(), Keys { k: h as usize }.tweak(0))
        }
    }
}

// A huge block's slice entry lies in its header page, past the header
// itself except for entry 0 (see `Segment::slice_entry`).
const _: () = assert!(core::mem::size_of::<HugeHeader>() <= 64);

/// Whether `p` points into memory of instance `I`. Safe for any value.
pub fn owns<I: Instance>(p: *const u8) -> bool {
    I::state().owns(p)
}
