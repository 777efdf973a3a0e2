//! Page queues and the segment list: the doubly linked plumbing of a heap,
//! touched only by its owner.

use super::*;

impl Heap {
    /// Makes `page` (or nothing) the first page of queue `c`, and the fast
    /// path's page unless the class's foreign page serves it (the queue's
    /// first page serves again when that runs dry).
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn set_first(h: *mut Heap, c: Class, page: *mut Page) {
        // SAFETY: owner only.
        unsafe {
            (*h).queues[c].first = page;
            if !Heap::serves_foreign(h, c) {
                Heap::serve_queue(h, c);
            }
        }
    }

    /// Makes the first page of queue `c` (or the empty page) the fast
    /// path's page.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    pub(super) unsafe fn serve_queue(h: *mut Heap, c: Class) {
        // SAFETY: owner only.
        unsafe {
            let first = (*h).queues[c].first;
            (*h).pages[c] = if first.is_null() {
                EMPTY_PAGE.get()
            } else {
                first
            };
        }
    }

    /// Queues `page` first: the allocation fast path takes from it next.
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn push_front(h: *mut Heap, page: *mut Page) {
        // SAFETY: owner only; `page` is on no queue.
        unsafe {
            let c = (*page).class as usize;
            let first = (*h).queues[c].first;
            (*page).prev = ptr::null_mut();
            (*page).next = first;
            (*page).set_tag(Heap::as_owner(h));
            if first.is_null() {
                (*h).queues[c].last = page;
            } else {
                (*first).prev = page;
            }
            Heap::set_first(h, c, page);
        }
    }

    /// Queues `page` last (a page that became non-full rejoins behind the current one).
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn push_back(h: *mut Heap, page: *mut Page) {
        // SAFETY: owner only; `page` is on no queue.
        unsafe {
            let c = (*page).class as usize;
            let last = (*h).queues[c].last;
            (*page).next = ptr::null_mut();
            (*page).prev = last;
            (*page).set_tag(Heap::as_owner(h));
            (*h).queues[c].last = page;
            if last.is_null() {
                Heap::set_first(h, c, page);
            } else {
                (*last).next = page;
            }
        }
    }

    /// Takes `page` off its queue, which makes it *full* (its tag sends
    /// frees to the slow path, which requeues it).
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn unlink(h: *mut Heap, page: *mut Page) {
        // SAFETY: owner only; `page` is on its class queue.
        unsafe {
            let c = (*page).class as usize;
            let (prev, next) = ((*page).prev, (*page).next);
            if prev.is_null() {
                Heap::set_first(h, c, next);
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                (*h).queues[c].last = prev;
            } else {
                (*next).prev = prev;
            }
            (*page).next = ptr::null_mut();
            (*page).prev = ptr::null_mut();
            (*page).set_tag(slow_tag());
        }
    }

    /// Adds `seg` to the heap's segments.
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn link_segment(h: *mut Heap, seg: *mut Segment) {
        // SAFETY: owner only.
        unsafe {
            (*seg).prev = ptr::null_mut();
            (*seg).next = (*h).segments;
            if !(*h).segments.is_null() {
                (*(*h).segments).prev = seg;
            }
            (*h).segments = seg;
            bump(&(*h).stats.segments, 1);
        }
    }

    /// Removes `seg` from the heap's segments.
    ///
    /// # Safety
    /// The calling thread owns `h`; the page or segment belongs to it.
    pub(super) unsafe fn unlink_segment(h: *mut Heap, seg: *mut Segment) {
        // SAFETY: owner only; `seg` is on our list.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                (*h).segments = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            bump(&(*h).stats.segments, usize::MAX);
        }
    }
}
