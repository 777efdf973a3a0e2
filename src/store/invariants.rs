//! The store's invariants, as code. [`SegmentStore::check`] walks them;
//! builds with debug assertions run it whenever the store's caches change
//! on a slow path ([`SegmentStore::verify`]).
//!
//! Invariants of the segment cache (behind the lock):
//! - at most [`SEGMENT_CACHE_MAX`] segments, each cached once, oldest
//!   first (`since` never decreases);
//! - each is a small segment of this store ([`Chunk::Header`] in the
//!   segment map), with no owner and no page, and passes
//!   [`Segment::check`].
//!
//! The span cache's bookkeeping is checked by [`HugeCache::check`]; what
//! its spans hold in memory (a huge header that is not live) by
//! `crate::huge`, which knows that header.

use super::*;
use crate::segmap::Chunk;

impl SegmentStore {
    /// Re-checks the segment cache and the span cache's bookkeeping;
    /// returns a description of the first violation. Takes the lock.
    pub fn check(&self) -> Result<(), &'static str> {
        let _g = self.lock();
        // SAFETY: lock held.
        let c = unsafe { &*self.cached.get() };
        if c.count > SEGMENT_CACHE_MAX {
            return Err("segment cache: more segments than slots");
        }
        for i in 0..c.count {
            let seg = c.segments[i];
            if c.segments[..i].contains(&seg) {
                return Err("segment cache: a segment is cached twice");
            }
            if i > 0 && c.since[i] < c.since[i - 1] {
                return Err("segment cache: not oldest first");
            }
            if self.segmap.get(seg as usize) != Chunk::Header {
                return Err("segment cache: a segment the map does not record");
            }
            // SAFETY: cached segments are mapped and the cache's (lock held).
            unsafe {
                Segment::check(seg)?;
                if !(*seg).header.owner.load(Ordering::Relaxed).is_null()
                    || (*seg).pages_in_use != 0
                {
                    return Err("segment cache: a cached segment has an owner or pages");
                }
            }
        }
        // SAFETY: lock held.
        unsafe {
            (*self.huge.get()).check(SEGMENT_SIZE)?;
            (*self.quarantined.get()).check(SEGMENT_SIZE)
        }
    }

    /// [`SegmentStore::check`] in builds with debug assertions, aborting
    /// with the violation's description; nothing otherwise.
    #[inline]
    pub(crate) fn verify(&self) {
        if cfg!(debug_assertions) {
            if let Err(what) = self.check() {
                crate::fatal::fatal(what, (self as *const Self).cast());
            }
        }
    }
}
