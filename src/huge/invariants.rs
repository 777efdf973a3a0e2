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
    /// Re-checks the header of a mapping; `live` says whether it should
    /// hold a live block. Returns a description of the first violation.
    pub fn check(&self, live: bool) -> Result<(), &'static str> {
        let base = self as *const Self as usize;
        if self.header.kind != Kind::Huge as u32 {
            return Err("huge header: kind is not Huge");
        }
        if self.map_len == 0 || !self.map_len.is_multiple_of(SEGMENT_SIZE) {
            return Err("huge header: the mapping is not whole segments");
        }
        if self.live.load(Ordering::Relaxed) != live {
            return Err("huge header: live flag is wrong");
        }
        if live {
            let off = (self.block as usize).wrapping_sub(base);
            if !(LEAD_PAGES * PAGE_SIZE..=SEGMENT_SIZE).contains(&off)
                || off >= self.map_len
                || !self.align.is_power_of_two()
                || !(self.block as usize).is_multiple_of(self.align.min(SEGMENT_SIZE))
            {
                return Err("huge header: the block is misplaced");
            }
        }
        Ok(())
    }
}

/// Re-checks what the span cache's spans hold in memory: a header that is
/// not live and spans the whole span. Takes the store's lock.
pub fn check_cache(store: &SegmentStore) -> Result<(), &'static str> {
    let _g = store.lock();
    // SAFETY: lock held.
    for s in unsafe { (*store.huge.get()).live() } {
        // SAFETY: a cached span's header page stays mapped and readable
        // (purges and the quarantine's protection skip it).
        let h = unsafe { &*(s.base as *const HugeHeader) };
        h.check(false)?;
        if h.map_len != s.len {
            return Err("span cache: a span's header has another length");
        }
    }
    Ok(())
}
