//! The huge blocks' side of the span cache ([`crate::store::HugeCache`]):
//! taking a block from it, putting freed spans into it, and its upkeep
//! (what stays warm, what is purged, what is unmapped).
//!
//! Warm spans are bounded by how far the live huge blocks are below their
//! peak (at least [`WARM_BYTES_MIN`]): memory the program held a moment
//! ago, so a program that keeps replacing big buffers reuses it without a
//! page fault while its resident memory stays at its peak. Over the bound,
//! the oldest warm span is purged in part, just the excess (whole chunks
//! from its end), rather than whole: a coalesced span can be most of the
//! cache. Once huge frees pause for [`WARM_DELAYS`] purge delays, all of
//! it is purged and the peak starts afresh.

use super::{count, guard, init, HugeHeader, HUGE_PAGE, TRANSPARENT_HUGE_PAGES};
use crate::os::{self, align_up, Purged};
use crate::segment::SEGMENT_SIZE;
use crate::store::{SegmentStore, Span};
use crate::sys::PAGE_SIZE;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

/// Address space the cache may hold (its purged spans cost no memory).
const CACHE_BYTES_MAX: usize = 512 << 20;
/// Memory that warm spans may always hold, however close the live huge
/// blocks are to their peak.
///
/// malloc-large (six live blocks of 1-32 MiB, one replaced at random each
/// step) over twelve seeds: with 16 MiB, 105,000-143,000 page faults
/// (mean 115,000) and a peak RSS of 219-245 MiB (mean 230); with 32 MiB,
/// 62,000-99,000 faults (mean 76,000) and 214-256 MiB (mean 230), in
/// 0.6-0.8x the time. The peak does not grow with the floor: a span
/// purged to stay within a small floor is soon faulted back in by the
/// next large block. 48 MiB took fewer faults still but raised
/// realloc-growth's peak from 318 to 339 MiB; 32 MiB left it at 318.
const WARM_BYTES_MIN: usize = 32 << 20;
/// Warm spans are purged once huge frees have paused for this many purge
/// delays. Not counted per span: a program that keeps replacing big
/// buffers reuses its spans some milliseconds apart (more than the delay
/// when it fills each buffer, or on a loaded machine), and purging them
/// would only make it fault them back in, page by page; while it goes on,
/// the warm bound keeps that memory in check.
pub(super) const WARM_DELAYS: u64 = 10;
/// A purged span idle for this many purge delays is unmapped.
pub(super) const COLD_AFTER_DELAYS: u64 = 100;

/// A block of `size` bytes from the span cache: the cached span that fits
/// with the least to fault back in, split if larger. (With `hardened` the
/// cache holds freed blocks' pages at addresses of no live or quarantined
/// block; their own addresses are in quarantine, see
/// [`super::quarantine`].)
pub(super) fn alloc_cached(
    store: &SegmentStore,
    need: usize,
    size: usize,
    align: usize,
    instance: usize,
) -> Option<*mut u8> {
    let g = store.lock();
    // SAFETY: lock held.
    let c = unsafe { &mut *store.huge.get() };
    let mut s = c.take(need)?;
    // Where in a partly purged span its warm bytes lie is not known (the
    // pieces of a merge keep no order): when the whole of it is not warm,
    // the block is taken to need faulting in.
    let faults = s.warm < s.len;
    let warm = s.warm;
    // SAFETY: lock held; `s` just left the cache.
    s = unsafe { cut(store, s, need, instance) };
    drop(g);
    // Purged parts of the span are committed again as they are used.
    if store.commit(s.len - s.committed).is_err() {
        store.decommit(s.committed);
        // SAFETY: the span left the cache: idle, mapped, ours.
        unsafe { store.unmap(NonNull::new_unchecked(s.base as *mut u8), s.len) };
        return None;
    }
    count(store, s.len, true);
    if faults {
        // Memory was committed again: the warm spans make room for it.
        maintain(store, crate::sys::monotonic_ns());
    }
    // SAFETY: the span left the cache: idle, mapped, ours.
    let base = unsafe { NonNull::new_unchecked(s.base as *mut u8) };
    if faults && TRANSPARENT_HUGE_PAGES {
        // Purged pages fault back in as huge pages (the mapping is advised
        // so), but where a header page stayed (at the start of every span
        // that was cached on its own), its 2 MiB would fault back in
        // 4 KiB at a time: those are made huge pages now, in one call
        // (huge pages already in place are left as they are).
        let end = s.base + super::block_offset(align) + size;
        let whole = (end & !(HUGE_PAGE - 1)).saturating_sub(s.base);
        if whole > 0 {
            // SAFETY: whole huge pages of the span, covered by the block.
            unsafe { os::collapse(base, whole) };
        }
    }
    // With `hardened`, the guard page after the header: cached spans have
    // none (merged, a neighbour's would lie inside a block cut from them).
    guard(base);
    // SAFETY: as above; the span's pages are all writable.
    unsafe {
        let b = init(base, s.len, align, instance);
        (*base.as_ptr().cast::<HugeHeader>()).warm = warm.min(s.len);
        Some(b)
    }
}

/// Span `s`, just taken from the cache for `need` bytes (whole chunks, at
/// most its length), cut to them: the rest goes back into the cache. Left
/// whole if the segment map refuses the cut (it cannot).
///
/// # Safety
/// The store's lock is held; `s` left the cache under it.
pub(super) unsafe fn cut(store: &SegmentStore, s: Span, need: usize, instance: usize) -> Span {
    if s.len == need {
        return s;
    }
    // SAFETY: per contract; `need` is whole chunks, less than its length.
    match unsafe { split(store, s, need, instance) } {
        Some((front, rest)) => {
            // SAFETY: lock held. A span was just taken: none is evicted.
            let _ = unsafe { (*store.huge.get()).put(rest, false) };
            front
        }
        None => s,
    }
}

/// Splits a span that is out of the cache at `at` (whole chunks, less
/// than its length): records the rest in the segment map and writes its
/// header. `None` (the span unchanged) if the map refuses, which cannot
/// happen: the rest's leaf exists.
///
/// # Safety
/// `s` is a span of this store that left the cache, with the store's lock
/// held.
unsafe fn split(store: &SegmentStore, s: Span, at: usize, instance: usize) -> Option<(Span, Span)> {
    let (front, rest, touched) = s.split(at, PAGE_SIZE);
    store.segmap.insert(rest.base, rest.len).ok()?;
    // SAFETY: the rest is a free span of ours, behind the lock; the
    // front's header page is the span's, which stays writable.
    unsafe {
        write_free_header(rest, instance);
        // Its header must not claim the rest (`for_each_mapping`, teardown).
        (*(front.base as *mut HugeHeader)).map_len = front.len;
    }
    // The rest's new header page is memory in use already.
    store.commit_written(touched);
    Some((front, rest))
}

/// Writes the header of a cached span that has none yet (the rest of a
/// split): a huge header that is not live, so `for_each_mapping` sees its
/// length and a stale free into it is caught as one.
///
/// # Safety
/// `s` is a free span of this store, with the store's lock held.
pub(super) unsafe fn write_free_header(s: Span, instance: usize) {
    // SAFETY: per contract; the header page of a cached span is writable.
    unsafe {
        init(
            NonNull::new_unchecked(s.base as *mut u8),
            s.len,
            PAGE_SIZE,
            instance,
        );
        (*(s.base as *mut HugeHeader))
            .live
            .store(false, Ordering::Relaxed);
    }
}

/// Puts a free span into the cache, merged with its cached neighbours if
/// `merge`, and unmaps whatever that pushed out.
pub(super) fn cache_span(store: &SegmentStore, s: Span, merge: bool) {
    let evicted = {
        let _g = store.lock();
        // SAFETY: lock held; the span is free and ours.
        unsafe { put_locked(store, s, merge) }
    };
    if let Some(v) = evicted {
        store.release_span(v);
    }
}

/// [`cache_span`] with the lock held: returns the span pushed out, for
/// the caller to unmap once the lock is dropped.
///
/// # Safety
/// The store's lock is held; `s` is a free span of ours with its header
/// written, in no list.
pub(super) unsafe fn put_locked(store: &SegmentStore, s: Span, merge: bool) -> Option<Span> {
    // SAFETY: lock held.
    let (merged, evicted) = unsafe { (*store.huge.get()).put(s, merge) };
    // SAFETY: the span is ours and cached, behind the lock; its first
    // header survives (purges skip header pages).
    unsafe { (*(merged.base as *mut HugeHeader)).map_len = merged.len };
    if merged.len != s.len {
        // The neighbours' chunks are recorded already: cannot fail.
        let _ = store.segmap.insert(merged.base, merged.len);
    }
    evicted
}

/// `addr`, a mapping's start, as a pointer.
///
/// # Safety
/// `addr` is not 0 (no mapping of ours starts there).
pub(super) unsafe fn nonnull(addr: usize) -> NonNull<u8> {
    // SAFETY: per contract.
    unsafe { NonNull::new_unchecked(addr as *mut u8) }
}

/// Purges warm spans idle for the purge delay (or over the warm bound)
/// and unmaps spans cold for much longer or over the cache's bound.
/// `now` is a recent reading of the monotonic clock.
pub fn maintain(store: &SegmentStore, now: u64) {
    let delay = store.purge_delay_ns();
    let quiet = delay.saturating_mul(WARM_DELAYS);
    let cold_before = now.saturating_sub(delay.saturating_mul(COLD_AFTER_DELAYS));
    let live = store.stats.huge_bytes.load(Ordering::Relaxed);
    // Each turn unmaps a span or makes the warm bytes smaller: it ends.
    loop {
        let (victim, to_purge) = {
            let _g = store.lock();
            // SAFETY: lock held.
            let c = unsafe { &mut *store.huge.get() };
            let purge_before = if c.quiet_for(now) >= quiet {
                let before = now.saturating_sub(quiet);
                c.reset_peak(live, before);
                before
            } else {
                0
            };
            let max_warm = c.warm_budget(live, WARM_BYTES_MIN);
            match c.pop_victim(CACHE_BYTES_MAX, cold_before) {
                Some(v) => (Some(v), None),
                None => (None, c.pop_to_purge(purge_before, max_warm)),
            }
        };
        match (victim, to_purge) {
            (Some(v), _) => store.release_span(v),
            (None, Some((p, excess))) => purge_part(store, p, excess),
            (None, None) => return,
        }
    }
}

/// Purges at least `excess` bytes of a warm span that left the cache:
/// whole chunks from the end of its warm front, split off as a span of
/// their own, or the whole span when they would leave no chunk warm.
fn purge_part(store: &SegmentStore, s: Span, excess: usize) {
    let purge_len = align_up(excess, SEGMENT_SIZE).unwrap_or(usize::MAX);
    let keep = s.warm.saturating_sub(purge_len) & !(SEGMENT_SIZE - 1);
    if keep > 0 {
        let g = store.lock();
        // SAFETY: the header of a span of ours; it keeps its instance.
        let instance = unsafe { (*(s.base as *const HugeHeader)).header.instance };
        // SAFETY: `s` left the cache; lock held; `keep` is whole chunks,
        // less than the span's length (it is at most its warm bytes).
        let parts = unsafe { split(store, s, keep, instance) };
        drop(g);
        if let Some((front, rest)) = parts {
            cache_span(store, front, true);
            purge(store, rest);
            return;
        }
    }
    purge(store, s);
}

/// Gives a warm span's body back to the kernel (its header page stays)
/// and caches it again as purged. Runs without the lock: the span is out
/// of the cache meanwhile, so nobody else touches it.
pub(super) fn purge(store: &SegmentStore, mut s: Span) {
    let body = s.len - PAGE_SIZE;
    // SAFETY: the span is free and ours; the header page is left alone.
    let done = unsafe {
        os::purge(
            NonNull::new_unchecked((s.base + PAGE_SIZE) as *mut u8),
            body,
            store.purge_mode(),
        )
    };
    if done != Purged::No {
        store.stats.purged.fetch_add(body, Ordering::Relaxed);
    }
    if done == Purged::Zeroed {
        store.decommit(s.committed.saturating_sub(PAGE_SIZE));
        s.committed = s.committed.min(PAGE_SIZE);
    }
    // Refused: counted as purged all the same, so it is not retried forever.
    s.warm = 0;
    cache_span(store, s, true);
}
