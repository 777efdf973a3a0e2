//! The heap's invariants, as code: [`Heap::check`] walks all of them, and
//! [`Heap::verify`] runs the part a slow path may have touched at every
//! slow-path exit of builds with debug assertions (the `ci` test profile),
//! so that a broken invariant stops the program where it broke, not where
//! it was noticed.
//!
//! The invariants themselves are stated on the types: the heap's in the
//! module docs of [`crate::heap`], the page's on [`Page`], the segment's on
//! [`Segment`].

use super::*;

impl Heap {
    /// Re-checks every invariant of the heap (see the module docs): its
    /// queues, fast-path tables and counters, each of its segments
    /// (`Segment::check`) and every page's free lists (`Page::check`).
    /// Returns a description of the first violation.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap or the empty one.
    pub unsafe fn check(h: *mut Heap) -> Result<(), &'static str> {
        // SAFETY: per contract.
        unsafe {
            if (*h).small_class != SMALL_CLASSES {
                return Err("size-to-class table differs from the classes");
            }
            let mut queued = 0;
            for c in 0..CLASS_COUNT {
                queued += Heap::check_queue(h, c, true)?;
            }
            Heap::check_foreign(h)?;
            let (mut segments, mut pages, mut tagged) = (0, 0, 0);
            let mut seg = (*h).segments;
            while !seg.is_null() {
                if owner_of(seg.cast()) != Heap::as_owner(h) {
                    return Err("heap lists a segment it does not own");
                }
                Segment::check(seg)?;
                for i in 1..SLICES {
                    let page = Segment::entry(seg, i);
                    if (*page).slice_count == 0 {
                        continue;
                    }
                    pages += 1;
                    if (*page).in_queue() {
                        tagged += 1;
                    } else {
                        Heap::check_full(page)?;
                    }
                }
                segments += 1;
                seg = (*seg).next;
            }
            if tagged != queued {
                return Err("a page is tagged with the heap but not on its queue");
            }
            if pages != (*h).stats.pages.load(Ordering::Relaxed)
                || segments != (*h).stats.segments.load(Ordering::Relaxed)
            {
                return Err("the heap's page or segment count is off");
            }
            Ok(())
        }
    }

    /// The cheap part of [`Heap::check`], for slow-path exits: class `c`'s
    /// queue (links, tags, fast-path tables, but not every page's free
    /// lists) and, if given, the page the slow path worked on, its free
    /// lists and its segment. Aborts with the violation's
    /// description in builds with debug assertions; nothing otherwise.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `page` is null or a page
    /// head of one of `h`'s segments.
    #[inline]
    pub(super) unsafe fn verify(h: *mut Heap, c: Class, page: *mut Page) {
        if cfg!(debug_assertions) {
            // SAFETY: per contract.
            unsafe { Heap::verify_now(h, c, page) }
        }
    }

    /// [`Heap::check`] in builds with debug assertions, aborting with the
    /// violation's description; nothing otherwise. For the rare whole-heap
    /// operations (trim, collection).
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    #[inline]
    pub(super) unsafe fn verify_all(h: *mut Heap) {
        if cfg!(debug_assertions) {
            // SAFETY: per contract.
            if let Err(what) = unsafe { Heap::check(h) } {
                crate::fatal::fatal(what, h.cast());
            }
        }
    }

    /// The checks of [`Heap::verify`], out of line.
    ///
    /// # Safety
    /// As for [`Heap::verify`].
    #[cold]
    unsafe fn verify_now(h: *mut Heap, c: Class, page: *mut Page) {
        // SAFETY: per contract of `verify`.
        let r = unsafe {
            Heap::check_queue(h, c, false).and_then(|_| {
                if page.is_null() || (*page).slice_count == 0 {
                    // Released meanwhile: its segment may be gone too.
                    return Ok(());
                }
                Segment::check(Page::segment(page))?;
                if (*page).in_queue() {
                    (*page).check()
                } else {
                    Heap::check_full(page)
                }
            })
        };
        if let Err(what) = r {
            crate::fatal::fatal(what, page.cast());
        }
    }

    /// Checks queue `c`: the fast-path tables point at its head, its pages
    /// are linked both ways, have class `c`, the heap's tag and segment,
    /// and (if `deep`) consistent free lists. Returns the queue's length.
    ///
    /// # Safety
    /// The calling thread owns `h`; `c < CLASS_COUNT`.
    unsafe fn check_queue(h: *mut Heap, c: Class, deep: bool) -> Result<usize, &'static str> {
        // SAFETY: the caller owns the heap.
        unsafe {
            let q = (*h).queues[c];
            let expect = if q.first.is_null() {
                EMPTY_PAGE.get()
            } else {
                q.first
            };
            if (*h).pages[c] != expect && !Heap::serves_foreign(h, c) {
                return Err("fast-path page is not the queue head");
            }
            let mut len = 0;
            let mut prev: *mut Page = ptr::null_mut();
            let mut page = q.first;
            while !page.is_null() {
                let p = &*page;
                if p.class as usize != c
                    || p.tag.load(Ordering::Relaxed) != Heap::as_owner(h)
                    || p.prev != prev
                {
                    return Err("queue links or class broken");
                }
                if owner_of(Page::segment(page).cast()) != Heap::as_owner(h) {
                    return Err("queued page in a segment of another heap");
                }
                if deep {
                    p.check()?;
                }
                len += 1;
                prev = page;
                page = p.next;
            }
            if q.last != prev {
                return Err("queue tail broken");
            }
            Ok(len)
        }
    }

    /// A page of the heap that is off its queue is *full*: nothing to
    /// allocate (no free block, none left to carve, none freed locally)
    /// and some block live.
    ///
    /// # Safety
    /// `page` is a page head of a segment the calling thread's heap owns.
    unsafe fn check_full(page: *mut Page) -> Result<(), &'static str> {
        // SAFETY: the caller owns the page.
        let p = unsafe { &*page };
        if !p.free.is_null() || !p.local_free.is_null() || p.capacity != p.reserved || p.used == 0 {
            return Err("a page off its queue is not full");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::segment::SEGMENT_SIZE;
    use crate::size_class::class_of;
    use std::boxed::Box;

    /// A heap with one page of 48-byte blocks in a segment of its own (no
    /// instance behind it: nothing here asks for a segment).
    #[test]
    fn heap_check_finds_broken_queues_and_counts() {
        let base = crate::os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE).unwrap();
        let h: *mut Heap = Box::into_raw(Box::new(Heap::new(None)));
        let c = class_of(48);
        // SAFETY: the heap and the segment are this test's; every
        // corruption is undone before the next.
        unsafe {
            let seg = Segment::init(base, 1, Keys { k: 0 }, 0);
            (*seg)
                .header
                .owner
                .store(Heap::as_owner(h), Ordering::Relaxed);
            Heap::link_segment(h, seg);
            let page = Segment::setup_page(seg, 1, 1, c);
            bump(&(*h).stats.pages, 1);
            Heap::push_front(h, page);
            assert_eq!(Heap::check(h), Ok(()));
            assert_eq!((*page).extend(4), 4);
            assert!(!Heap::alloc_small(h, 48).is_null());
            assert_eq!(Heap::check(h), Ok(()));

            (*h).pages[c] = EMPTY_PAGE.get();
            assert!(Heap::check(h).unwrap_err().contains("fast-path"));
            Heap::set_first(h, c, page);

            bump(&(*h).stats.pages, 1);
            assert!(Heap::check(h).unwrap_err().contains("count"));
            bump(&(*h).stats.pages, usize::MAX);

            // Off the queue but not full.
            Heap::unlink(h, page);
            assert!(Heap::check(h).unwrap_err().contains("not full"));
            Heap::push_front(h, page);

            // Tagged as queued but not on the queue.
            Heap::set_first(h, c, ptr::null_mut());
            (*h).queues[c].last = ptr::null_mut();
            assert!(Heap::check(h).is_err());
            Heap::push_front(h, page);
            assert_eq!(Heap::check(h), Ok(()));

            drop(Box::from_raw(h));
            crate::os::unmap(base, SEGMENT_SIZE);
        }
    }
}
