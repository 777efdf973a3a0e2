//! The huge layer's invariants, as code.
//!
//! A huge mapping starts with a [`HugeHeader`]:
//! - `kind` is `Huge` and the mapping is whole segments (`map_len`);
//! - a live block starts after the header's lead pages and at most one
//!   segment after the header, aligned as requested, and ends inside the
//!   mapping;
//! - a cached (or quarantined) span's header is not live and its
//!   `map_len` is the span's length, so `for_each_mapping` and `owns` see
//!   the span as one mapping and a stale free into it is recognised.

use super::*;

impl HugeHeader {
    /// Re-checks what any thread may check of a mapping's header at any
    /// time (with the store's lock held): its kind, and that the mapping
    /// is whole segments. Returns a description of the first violation.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.header.kind != Kind::Huge as u32 {
            return Err("huge header: kind is not Huge");
        }
        if self.map_len == 0 || !self.map_len.is_multiple_of(SEGMENT_SIZE) {
            return Err("huge header: the mapping is not whole segments");
        }
        Ok(())
    }

    /// Re-checks the header of a live huge block: [`HugeHeader::check`],
    /// the live flag, and the block's place (after the header's lead
    /// pages, at most one segment after the header, aligned as requested,
    /// inside the mapping or, for an over-aligned block of no bytes, at
    /// its end). For the block's owner: another thread may be
    /// rewriting the header of a span it is taking from the cache.
    pub fn check_live(&self) -> Result<(), &'static str> {
        self.check()?;
        if !self.live.load(Ordering::Relaxed) {
            return Err("huge header: a live block is not marked live");
        }
        let off = (self.block as usize).wrapping_sub(self as *const Self as usize);
        if !(LEAD_PAGES * PAGE_SIZE..=SEGMENT_SIZE).contains(&off)
            || off > self.map_len
            || !self.align.is_power_of_two()
            || !(self.block as usize).is_multiple_of(self.align.min(SEGMENT_SIZE))
        {
            return Err("huge header: the block is misplaced");
        }
        Ok(())
    }
}

/// [`HugeHeader::check_live`] in builds with debug assertions, aborting
/// with the violation's description; nothing otherwise. For the thread
/// freeing or resizing the block.
#[inline]
pub(super) fn verify_live(h: &HugeHeader) {
    if cfg!(debug_assertions) {
        if let Err(what) = h.check_live() {
            crate::fatal::fatal(what, h.block);
        }
    }
}

/// Re-checks what the span cache's spans hold in memory: a header that is
/// not live and spans the whole span. Takes the store's lock.
pub fn check_cache(store: &SegmentStore) -> Result<(), &'static str> {
    let _g = store.lock();
    // SAFETY: lock held.
    let (cached, quarantined) = unsafe {
        (
            (*store.huge.get()).live(),
            (*store.quarantined.get()).live(),
        )
    };
    for s in cached.iter().chain(quarantined) {
        // SAFETY: a cached span's header page stays mapped and readable
        // (purges and the quarantine's protection skip it).
        let h = unsafe { &*(s.base as *const HugeHeader) };
        h.check()?;
        if h.live.load(Ordering::Relaxed) {
            return Err("span cache: a cached span's header is live");
        }
        if h.map_len != s.len {
            return Err("span cache: a span's header has another length");
        }
    }
    Ok(())
}
