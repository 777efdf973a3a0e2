//! Frees on the owner's thread: the free fast path ([`Heap::free_local`]),
//! frees into full pages or inner slices, and what happens when a page
//! empties (it stays if it is its class's only page, else it goes back to
//! its segment, and an empty segment to the store). Frees from other
//! threads are in `remote`.

use super::*;

impl Heap {
    /// Frees block `p` on the owner's thread: the free fast path, for a
    /// block whose slice entry `page` carries the tag of the calling
    /// thread's heap `h` (so it is a queued page's head entry).
    ///
    /// About 5 instructions: push onto `local_free` (load, store, store),
    /// decrement `used` and test it.
    ///
    /// # Safety
    /// The calling thread owns `h`; `p` is a live block of `page`, a page of
    /// `h` on its queue.
    #[inline(always)]
    pub unsafe fn free_local(h: *mut Heap, page: *mut Page, p: *mut u8) {
        // SAFETY: per contract.
        unsafe {
            Block::set_next(p.cast(), (*page).local_free, (*page).keys);
            (*page).local_free = p.cast();
            (*page).used -= 1;
            if (*page).used == 0 {
                Heap::free_local_slow(h, page);
            }
        }
    }

    /// Whether `page` (queued) is the only page of its class.
    ///
    /// # Safety
    /// The calling thread owns `h`; `page` is on one of its queues.
    #[inline(always)]
    unsafe fn is_alone(h: *mut Heap, page: *mut Page) -> bool {
        // SAFETY: the owner reads its own queue.
        unsafe {
            (*h).queues.get_unchecked((*page).class as usize).first == page
                && (*page).next.is_null()
        }
    }

    /// A local free into a full page, or into a slice of a multi-slice page
    /// other than its first.
    ///
    /// # Safety
    /// The calling thread owns `h`; `p` is a live block of a page of `h`.
    #[cold]
    pub unsafe fn free_local_flagged(h: *mut Heap, p: *mut u8) {
        // SAFETY: per the caller's contract.
        unsafe { Heap::free_local_any(h, Segment::page_of(segment_of(p).cast(), p), p) }
    }

    /// A local free of `p` into `page`, queued or full.
    ///
    /// # Safety
    /// The calling thread owns `h`; `p` is a live block of `page`, a page
    /// of `h`.
    #[inline]
    pub(super) unsafe fn free_local_any(h: *mut Heap, page: *mut Page, p: *mut u8) {
        // SAFETY: per the caller's contract.
        unsafe {
            Block::set_next(p.cast(), (*page).local_free, (*page).keys);
            (*page).local_free = p.cast();
            (*page).used -= 1;
            if (*page).used == 0 || !(*page).in_queue() {
                Heap::free_local_slow(h, page);
            }
        }
    }

    /// A local free emptied `page` or hit a full (unqueued) page. An
    /// emptied page that is the only one of its class stays (a loop
    /// allocating and freeing must not churn pages), its blocks moved to
    /// `free` at once: its `free` is empty, and the next allocation of the
    /// class would otherwise take the allocation slow path just to move
    /// them. The slow path's upkeep is done here instead, so it keeps its
    /// pace (a loop of pairs on one page: once per page's worth of frees).
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `page` is a page head of
    /// one of its segments whose `used` or queue membership just changed.
    #[cold]
    pub(super) unsafe fn free_local_slow(h: *mut Heap, page: *mut Page) {
        // SAFETY: the owner manages its pages.
        unsafe {
            if (*page).in_queue() && Heap::is_alone(h, page) {
                (*h).set_busy(true);
                // Draining cannot touch `page`: none of its blocks is out
                // (`used == 0`), so none is in any inbox.
                Heap::upkeep(h);
                (*page).collect_local();
                Heap::verify(h, (*page).class as usize, page);
                (*h).set_busy(false);
                return;
            }
            Heap::free_local_release(h, page);
        }
    }

    /// [`Heap::free_local_slow`] for a page that is not its class's only
    /// one or not queued: an emptied page goes back to its segment, a full
    /// one rejoins its queue. Out of line, so the refill of the only page
    /// (a loop's page, every page's worth of frees) saves fewer registers.
    ///
    /// # Safety
    /// As for [`Heap::free_local_slow`].
    #[inline(never)]
    unsafe fn free_local_release(h: *mut Heap, page: *mut Page) {
        // SAFETY: the owner manages its pages.
        unsafe {
            (*h).set_busy(true);
            let c = (*page).class as usize;
            let mut kept = page;
            if !(*page).in_queue() {
                if (*page).used == 0 {
                    Heap::retire(h, page);
                    kept = ptr::null_mut();
                } else {
                    Heap::push_back(h, page);
                }
            } else if (*page).used == 0 {
                Heap::unlink(h, page);
                Heap::retire(h, page);
                kept = ptr::null_mut();
            }
            Heap::maybe_tick(h);
            Heap::verify(h, c, kept);
            (*h).set_busy(false);
        }
    }

    /// Gives an empty, unqueued page back to its segment, and the segment
    /// back to the store if it was the last page (keeping one segment per
    /// heap to avoid mapping churn). Slices left free in a kept segment are
    /// purged after the purge delay ([`Heap::maybe_tick`]).
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `page` is a page of `h`
    /// with no live block, on no queue.
    pub(super) unsafe fn retire(h: *mut Heap, page: *mut Page) {
        // SAFETY: the owner manages its pages and segments.
        unsafe {
            bump(&(*h).stats.pages, usize::MAX);
            let seg = Page::segment(page);
            if Segment::release_page(page) && !((*h).segments == seg && (*seg).next.is_null()) {
                Heap::unlink_segment(h, seg);
                (*h).source().release_segment(seg);
            } else if (*h).purge_at == 0 {
                let store = (*h).source().store();
                (*h).purge_at = purge::deadline(store.clock.now(), store.purge_delay_ns());
            }
        }
    }

    /// Gives block `p` back to its page from the calling thread's heap `h`,
    /// whoever owns the page: locally if `h` does, else as a remote free.
    /// For blocks the allocator itself held (the hardened quarantine), which
    /// bypass the API's checks.
    ///
    /// # Safety
    /// The calling thread owns `h`; `p` is a small block of this instance
    /// that nobody uses any more, not on any free list.
    pub unsafe fn free_block(h: *mut Heap, p: *mut u8) {
        let seg = segment_of(p);
        // SAFETY: per contract.
        unsafe {
            // The free fast path's test first: the slice entry carries our
            // tag if it heads a page on our queue.
            let entry = Segment::slice_entry(seg, p);
            if (*entry).tag.load(Ordering::Relaxed) == Heap::as_owner(h) {
                return Heap::free_local(h, entry, p);
            }
            let owner = owner_of(seg);
            if owner == Heap::as_owner(h) {
                // Any page of ours, full or spanning several slices: not
                // the fast path's `free_local`, which wants a queued page's
                // head.
                Heap::free_local_flagged(h, p);
            } else {
                Heap::free_remote(h, Heap::of(owner), p);
            }
        }
    }
}
