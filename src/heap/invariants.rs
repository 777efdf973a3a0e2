//! The heap's invariants (see the module docs of [`crate::heap`]),
//! re-checked by tests and debug tools.

use super::*;

impl Heap {
    /// Re-checks the heap's invariants (see the module docs) and every
    /// queued page's counting identities.
    ///
    /// # Safety
    /// The calling thread owns `h`.
    pub unsafe fn check(h: *mut Heap) -> Result<(), &'static str> {
        // SAFETY: per contract.
        unsafe {
            for c in 0..CLASS_COUNT {
                let q = (*h).queues[c];
                let expect = if q.first.is_null() {
                    EMPTY_PAGE.get()
                } else {
                    q.first
                };
                if (*h).pages[c] != expect || direct_range(c).any(|g| (*h).direct[g] != expect) {
                    return Err("fast-path page is not the queue head");
                }
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
                    p.check()?;
                    prev = page;
                    page = p.next;
                }
                if q.last != prev {
                    return Err("queue tail broken");
                }
            }
            let mut seg = (*h).segments;
            while !seg.is_null() {
                if owner_of(seg.cast()) != Heap::as_owner(h) {
                    return Err("heap lists a segment it does not own");
                }
                seg = (*seg).next;
            }
        }
        Ok(())
    }
}
