//! Foreign pages: a thread reuses the blocks of other heaps that it frees,
//! for its own next allocations of the same class, instead of sending
//! every one back to the heap that carved it.
//!
//! With ownership alone (see `remote`), blocks that threads pass round
//! cost memory twice: a heap holds the blocks its thread uses now and,
//! until they come back, the ones other threads are freeing, while those
//! threads carve new blocks of their own. In larson (a ring of threads
//! each freeing the blocks of the one before) the peak RSS was twice
//! glibc's, 21 MiB against 10. glibc, jemalloc and tcmalloc hand a thread
//! the blocks it freed, wherever they came from, while they are still in
//! its cache; this module does the same within the ownership model.
//!
//! Each heap has a *foreign page* per small class: a page entry that is
//! no page, whose `free` list holds blocks of other heaps' pages that this
//! thread freed. A block on it stays counted in its own page's `used`, as
//! a remote free in flight does: for its owner it is still live, so its
//! page stays set up under it.
//! - [`Heap::keep_foreign`] (the remote free's first step) pushes the
//!   block onto the foreign page of its class, if the heap allocates that
//!   class at all (its fast-path page is not the empty page: a consumer
//!   that only frees keeps nothing) and the foreign page took fewer than
//!   [`FOREIGN_MAX`] blocks since it was last closed (emptied by a slow
//!   path, or sent back). Else the block joins a pending chain, as before.
//! - The allocation fast path pops the foreign page like any page while
//!   `pages[c]` points to it: from the first slow path of the class (the
//!   current page's `free` list ran dry; the foreign blocks go before
//!   that page's own freed blocks and before carving), or at once when
//!   [`FOREIGN_EAGER`] blocks wait.
//! - When it runs dry, the slow path closes it and puts the queue's first
//!   page back.
//! - A tick sends back to their owners (as pending chains) the blocks of
//!   every foreign page that was not put on the fast path since the
//!   previous tick, so a heap that keeps allocating holds another's blocks
//!   for one or two ticks unless it reuses them; `trim` and the
//!   collection of an exited thread's heap send them all. Ticks happen on
//!   slow paths: a thread that stops allocating holds what it kept (up to
//!   [`FOREIGN_MAX`] blocks of each class it allocated, each possibly
//!   keeping a page of another heap from being released) until its next
//!   slow path, `trim` or exit, as it holds its pending chains.
//!
//! Not with `hardened` ([`FOREIGN_CLASSES`] is 0 there): each page encodes
//! its links with its own keys and a pop checks the link against the
//! page's segment, which a list of many pages' blocks would fail. (A
//! foreign page holding one page's blocks at a time, with that page's
//! keys, would pass; measured, it was slower: BENCHMARKS.md, "Foreign
//! pages with `hardened`, tried and not kept".)
//!
//! ```text
//!   pages[c] ──▶ own page (queue first) ... runs dry ──▶ slow path
//!                                                          │
//!   foreign[c]: free ──▶ b ──▶ b ──▶ null   ◀── pages[c] ──┘ (until dry)
//!               (blocks of other heaps' pages of class c)
//! ```

// With `hardened`, FOREIGN_CLASSES is 0: every `c < FOREIGN_CLASSES` folds
// to false and every loop over the classes is empty, which is the point.
#![cfg_attr(
    feature = "hardened",
    allow(clippy::absurd_extreme_comparisons, clippy::reversed_empty_ranges)
)]

use super::remote::set_bit;
use super::*;
use crate::segment::is_small;

/// Classes with a foreign page: blocks up to 2 KiB, none with `hardened`.
pub const FOREIGN_CLASSES: usize = if crate::keys::ENABLED {
    0
} else {
    class_of_const(2048) + 1
};
// `foreign_mask` and `foreign_active` are u32.
const _: () = assert!(FOREIGN_CLASSES <= 32);

/// Blocks a foreign page takes between two times it is closed; later frees
/// of its class go back to their owners. It bounds what a heap holds
/// of other heaps' memory (128 blocks of each class; measured on larson:
/// 16 left the peak RSS at 15 MiB, 64 at 12, 128 and 256 at 10–11).
pub const FOREIGN_MAX: u32 = 128;

/// Blocks waiting on a foreign page that put it on the fast path before
/// the class's next slow path: a thread that frees many blocks of a
/// class takes them while they are in its cache, and needs one slow path
/// per this many blocks, not one per block.
const FOREIGN_EAGER: u32 = 32;

impl Heap {
    /// The foreign page of class `c < FOREIGN_CLASSES`.
    #[inline(always)]
    fn foreign_page(h: *mut Heap, c: Class) -> *mut Page {
        debug_assert!(c < FOREIGN_CLASSES);
        // SAFETY: in bounds of the heap's `foreign` array; no reference
        // is formed (`h` may be the shared empty heap).
        unsafe { ptr::addr_of_mut!((*h).foreign).cast::<Page>().add(c) }
    }

    /// Whether the fast path of class `c` pops the foreign page.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap).
    #[inline(always)]
    pub(super) unsafe fn serves_foreign(h: *mut Heap, c: Class) -> bool {
        // SAFETY: per contract.
        c < FOREIGN_CLASSES && unsafe { *(*h).pages.get_unchecked(c) } == Heap::foreign_page(h, c)
    }

    /// Keeps `b`, a block of `page` (another heap's) that the calling
    /// thread frees, on `me`'s foreign page of its class. False if it is
    /// not kept: the caller sends it to its owner.
    ///
    /// # Safety
    /// `me` is the calling thread's heap (or the empty heap); `b` is a live
    /// block of `page`, a page of another heap, given up by the caller.
    #[inline(always)]
    pub(super) unsafe fn keep_foreign(me: *mut Heap, page: *mut Page, b: *mut Block) -> bool {
        // SAFETY: per contract. The empty heap's pages are all the empty
        // page, so it never gets past the second test and is never written.
        unsafe {
            let c = (*page).class as usize;
            if c >= FOREIGN_CLASSES || *(*me).pages.get_unchecked(c) == EMPTY_PAGE.get() {
                return false;
            }
            let fp = Heap::foreign_page(me, c);
            let n = (*fp).used;
            if n >= FOREIGN_MAX {
                return false;
            }
            // Count and mask first, the block last: a `fork` by another
            // thread in between leaves the child a consistent page (at
            // most a count one too high), which it may reuse.
            (*fp).used = n + 1;
            if n == 0 {
                set_bit(&(*me).foreign_mask, c, true);
            }
            compiler_fence(Ordering::Release);
            Block::set_next(b, (*fp).free, (*fp).keys);
            (*fp).free = b;
            if n + 1 == FOREIGN_EAGER {
                Heap::serve_foreign(me, c);
            }
            true
        }
    }

    /// The slow path's first look for class `c`: a block from the foreign
    /// page, which then serves the fast path until it runs dry. If it just
    /// ran dry on the fast path, the queue's first page serves it again and
    /// the result is null, as it is when the foreign page holds nothing.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap, inside `set_busy`.
    pub(super) unsafe fn alloc_foreign(h: *mut Heap, c: Class) -> *mut u8 {
        if c >= FOREIGN_CLASSES {
            return ptr::null_mut();
        }
        let fp = Heap::foreign_page(h, c);
        // SAFETY: per contract.
        unsafe {
            if (*fp).free.is_null() {
                if Heap::serves_foreign(h, c) {
                    Heap::close_foreign(h, c);
                }
                return ptr::null_mut();
            }
            Heap::serve_foreign(h, c);
            Heap::alloc(h, c)
        }
    }

    /// Makes the foreign page of class `c` the fast path's page (as
    /// [`Heap::serve_queue`] does the queue's first page), and marks it
    /// taken from since the last tick.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `c < FOREIGN_CLASSES`.
    #[inline(always)]
    unsafe fn serve_foreign(h: *mut Heap, c: Class) {
        // SAFETY: per contract.
        unsafe {
            *(*h).pages.get_unchecked_mut(c) = Heap::foreign_page(h, c);
            (*h).foreign_active |= 1 << c;
        }
    }

    /// Empties the foreign page of class `c` (the caller took its blocks)
    /// and gives the fast path back to the class's queue.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `c < FOREIGN_CLASSES`.
    unsafe fn close_foreign(h: *mut Heap, c: Class) {
        let fp = Heap::foreign_page(h, c);
        // SAFETY: per contract.
        unsafe {
            (*fp).free = ptr::null_mut();
            (*fp).used = 0;
            set_bit(&(*h).foreign_mask, c, false);
            if Heap::serves_foreign(h, c) {
                Heap::serve_queue(h, c);
            }
        }
    }

    /// Sends the blocks of foreign pages to their owners (through pending
    /// chains, which the caller flushes): of every foreign page, or if
    /// `idle_only` (the tick) of those not put on the fast path since the
    /// last tick.
    ///
    /// # Safety
    /// The calling thread owns (or has claimed) `h`, a real heap, inside
    /// `set_busy`.
    pub(super) unsafe fn end_foreign(h: *mut Heap, idle_only: bool) {
        // SAFETY: per contract; the blocks are live blocks of other heaps'
        // pages, given up by this thread.
        unsafe {
            let mut mask = (*h).foreign_mask.load(Ordering::Relaxed);
            if idle_only {
                mask &= !(*h).foreign_active;
            }
            (*h).foreign_active = 0;
            while mask != 0 {
                let c = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let fp = Heap::foreign_page(h, c);
                let (mut b, keys) = ((*fp).free, (*fp).keys);
                Heap::close_foreign(h, c);
                while !b.is_null() {
                    let next = Block::next(b, keys);
                    let seg = segment_of(b.cast());
                    let page = Segment::page_of(seg.cast(), b.cast());
                    Heap::free_remote_pending(h, Heap::of(owner_of(seg)), page, b);
                    b = next;
                }
            }
        }
    }

    /// Whether heaps `a` and `b` take their segments from the same instance.
    ///
    /// # Safety
    /// Both are heaps (their `source` is written once, before either is
    /// published).
    unsafe fn same_source(a: *mut Heap, b: *mut Heap) -> bool {
        // SAFETY: per contract.
        let (a, b) = unsafe { ((*a).source, (*b).source) };
        a.map(|p| p.cast::<u8>()) == b.map(|p| p.cast::<u8>())
    }

    /// The foreign pages' share of [`Heap::check`]: each holds at most
    /// [`FOREIGN_MAX`] blocks, each a carved block of a page of its class
    /// that is set up in another heap's small segment of the same
    /// instance, and is in the mask if it holds any or serves the fast path.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap. A listed block that is
    /// not in a mapped segment of the instance faults (the instance's
    /// segment map is not at hand here).
    pub(super) unsafe fn check_foreign(h: *mut Heap) -> Result<(), &'static str> {
        // SAFETY: per contract; listed blocks are live blocks of other
        // heaps' pages, whose segments stay mapped while they are.
        unsafe {
            let mask = (*h).foreign_mask.load(Ordering::Relaxed);
            for c in 0..FOREIGN_CLASSES {
                let fp = Heap::foreign_page(h, c);
                if (*fp).used > FOREIGN_MAX {
                    return Err("foreign page: over its bound");
                }
                if (!(*fp).free.is_null() || Heap::serves_foreign(h, c)) && mask & 1 << c == 0 {
                    return Err("foreign page: holds blocks or serves but is not in the mask");
                }
                let mut n = 0;
                let mut b = (*fp).free;
                while !b.is_null() {
                    n += 1;
                    if n > (*fp).used {
                        return Err("foreign page: more blocks than it took");
                    }
                    let seg = segment_of(b.cast());
                    let owner = owner_of(seg);
                    if !is_small(seg)
                        || owner.is_null()
                        || owner == slow_tag()
                        || Heap::of(owner) == h
                        || !Heap::same_source(Heap::of(owner), h)
                    {
                        return Err("foreign page: a block of ours, or not of another heap");
                    }
                    let page = Segment::page_of(seg.cast(), b.cast());
                    if (*page).class as usize != c || !(*page).is_block_start(b.cast()) {
                        return Err("foreign page: not a carved block of a page of its class");
                    }
                    b = Block::next(b, (*fp).keys);
                }
            }
            Ok(())
        }
    }
}
