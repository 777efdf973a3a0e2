//! Giving a heap's free memory back: on the owner's slow paths after the
//! purge delay ([`Heap::maybe_tick`]), at once on `trim()`, and when the
//! heap of an exited thread is collected ([`Heap::collect`]). The policy
//! is in [`crate::purge`].

use super::*;

impl Heap {
    /// Looks at the clock if a tick passed since the last look (one
    /// `rdtsc` otherwise): purges the heap's free slices whose deadline
    /// passed, then lets the instance do its share (cached segments, heaps
    /// of exited threads).
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    #[inline]
    pub(super) unsafe fn maybe_tick(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            if purge::tick_due(&mut (*h).tick_cycles) {
                Heap::tick(h);
            }
        }
    }

    /// Sends the remote frees pending, looks at the clock and purges: the
    /// work behind [`Heap::maybe_tick`].
    ///
    /// Chains of remote frees go out when full, when displaced from their
    /// slot, on a slow path once they hold [`remote::HELD_MAX`] bytes, or
    /// here. Sending them on every slow path instead made them a block or
    /// two long in larson (a slow path every ten allocations or so), and
    /// sending them was then a third of the slow path's instructions; once
    /// a tick, they are held for well under a millisecond longer. The
    /// byte bound keeps a thread that frees much of another's memory from
    /// holding it that long: in the exchange benchmark (two threads
    /// freeing each other's batches) tick-only sending raised the peak RSS
    /// from 2.9 to 4.2 MiB, and with the bound it stays at 2.9.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    #[cold]
    unsafe fn tick(h: *mut Heap) {
        // SAFETY: per contract of `maybe_tick`.
        unsafe {
            Heap::end_foreign(h, true);
            Heap::flush_remote(h);
            let src = (*h).source();
            let now = src.store().clock.now();
            Heap::purge_idle(h, now);
            src.tick(now);
        }
    }

    /// Once the heap's purge deadline passed: purges the free slices that
    /// were already free at the previous deadline and stayed free (idle for
    /// one to two purge delays), and marks the ones free now for the next
    /// deadline. Slices freed and reused in between stay warm, and so do
    /// idle ones up to [`purge::WARM_SHARE`] of the slices in use: a
    /// thread whose live memory churns reuses them soon, and refaulting
    /// them would cost more than they take.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    unsafe fn purge_idle(h: *mut Heap, now: u64) {
        // SAFETY: the owner manages its segments.
        unsafe {
            if (*h).purge_at == 0 || now < (*h).purge_at {
                return;
            }
            let mut in_use = 0;
            let mut seg = (*h).segments;
            while !seg.is_null() {
                in_use += (SLICES - 1) as u32 - ((*seg).free_slices.count_ones());
                seg = (*seg).next;
            }
            let mut warm = in_use / purge::WARM_SHARE;
            let mut pending = false;
            let mut seg = (*h).segments;
            while !seg.is_null() {
                let idle = (*seg).purge_mark & (*seg).purgeable();
                if idle.count_ones() <= warm {
                    warm -= idle.count_ones();
                } else {
                    (*h).source().store().purge_slices(seg, idle);
                }
                (*seg).purge_mark = (*seg).purgeable();
                pending |= (*seg).purge_mark != 0;
                seg = (*seg).next;
            }
            (*h).purge_at = if pending {
                purge::deadline(now, (*h).source().store().purge_delay_ns())
            } else {
                0
            };
        }
    }

    /// Purges the free slices of every segment of the heap, at once.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    unsafe fn purge_free(h: *mut Heap) {
        // SAFETY: the owner manages its segments.
        unsafe {
            let mut seg = (*h).segments;
            while !seg.is_null() {
                (*h).source().store().purge_slices(seg, u64::MAX);
                (*seg).purge_mark = 0;
                seg = (*seg).next;
            }
            (*h).purge_at = 0;
        }
    }

    /// Releases every empty page (also the one a class keeps while its
    /// thread runs) and every segment without pages.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap, and nothing else holds
    /// its pages (remote frees drained, quarantine flushed).
    unsafe fn release_empty(h: *mut Heap) {
        // SAFETY: the owner manages its pages and segments.
        unsafe {
            for c in 0..CLASS_COUNT {
                let mut page = (*h).queues[c].first;
                while !page.is_null() {
                    let next = (*page).next;
                    if (*page).live() == 0 {
                        Heap::unlink(h, page);
                        bump(&(*h).stats.pages, usize::MAX);
                        Segment::release_page(page);
                    }
                    page = next;
                }
            }
            let mut seg = (*h).segments;
            while !seg.is_null() {
                let next = (*seg).next;
                if (*seg).pages_in_use == 0 {
                    Heap::unlink_segment(h, seg);
                    (*h).source().release_segment(seg);
                }
                seg = next;
            }
        }
    }

    /// What `trim` and `collect` both do first: the quarantine, the blocks
    /// kept on foreign pages and the pending batch of remote frees go out,
    /// the frees other threads sent come in, and empty pages and segments
    /// are released.
    ///
    /// # Safety
    /// The calling thread owns (or has claimed) `h`, a real heap.
    unsafe fn give_back(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            super::quarantine::flush(h);
            Heap::end_foreign(h, false);
            Heap::flush_remote(h);
            Heap::drain_remote(h);
            Heap::release_empty(h);
            Heap::verify_all(h);
        }
    }

    /// Releases every empty page and every segment without pages, and
    /// purges the free slices of the segments kept.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    pub unsafe fn trim(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            (*h).set_busy(true);
            Heap::give_back(h);
            Heap::purge_free(h);
            (*h).set_busy(false);
        }
    }

    /// Collects the heap of an exited thread: hands its pending batch of
    /// remote frees over, frees what other threads sent it, releases its
    /// empty pages and segments, and purges its free slices once they
    /// have waited for the purge delay (later sweeps finish the job).
    ///
    /// # Safety
    /// The calling thread has claimed `h`, a real heap, and no other
    /// thread can reach it.
    pub unsafe fn collect(h: *mut Heap, now: u64) {
        // SAFETY: per contract.
        unsafe {
            (*h).set_busy(true);
            Heap::give_back(h);
            if (*h).segments.is_null() {
                (*h).purge_at = 0;
            } else {
                if (*h).purge_at == 0 {
                    let delay = (*h).source().store().purge_delay_ns();
                    (*h).purge_at = purge::deadline(now, delay);
                }
                Heap::purge_idle(h, now);
            }
            (*h).set_busy(false);
        }
    }

    /// Whether other threads sent the heap blocks it has not taken yet.
    pub fn has_inbox(&self) -> bool {
        !self.remote.load(Ordering::Relaxed).is_null()
    }

    /// Whether the heap may hold memory to give back: segments, blocks
    /// other threads sent it, or blocks of other heaps it has not sent yet
    /// (chains, batches, foreign pages, the quarantine). Read by other
    /// threads (atomics only).
    pub fn has_work(&self) -> bool {
        self.stats.segments.load(Ordering::Relaxed) != 0
            || self.has_inbox()
            || self.holds_remote()
            || self.quarantine.filled.load(Ordering::Relaxed)
    }
}
