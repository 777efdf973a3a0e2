//! The span cache: free huge mappings kept for reuse, as plain
//! bookkeeping (no syscalls here; `huge` decides what to cache, purge and
//! evict, the store unmaps what leaves for good). It lives in the store,
//! below `huge`, because the store must empty it when the memory limit or
//! the kernel refuses more.
//!
//! A span is a segment-aligned range of whole chunks that is still mapped
//! and recorded in the instance's segment map, with a [`crate::huge::HugeHeader`]
//! (not live) at its start, so that `owns` and `for_each_mapping` keep
//! seeing it as one of the instance's mappings. Spans are:
//!
//! - **split**: a request takes the smallest span that fits, and what is
//!   left after it stays cached as a span of its own;
//! - **coalesced**: a span put next to a cached neighbour merges with it,
//!   so the pieces of one split come back together;
//! - **warm** until they have been free for the purge delay (reused
//!   without page faults), then **purged** (the body given back with
//!   `madvise`, the header page kept), and unmapped when they stay cold
//!   for much longer, when the cache is full, or on `trim`. A span can be
//!   partly warm: a span purged in part to keep the warm bytes within
//!   their bound, or one merged from warm and purged neighbours.
//!
//! `committed` is each span's share of the store's `committed` counter, so
//! that the counter stays exact whatever is split, merged or purged;
//! `warm` is what the warm bound counts (with `MADV_FREE` a purged page
//! stays committed until reused, but is no longer warm).

/// Spans the cache holds at most.
pub const SPANS: usize = 16;

/// A free, mapped range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Start (segment aligned): where its header is.
    pub base: usize,
    /// Length, whole segments.
    pub len: usize,
    /// Its bytes counted in the store's `committed`.
    pub committed: usize,
    /// When it was freed (monotonic ns); for a merged span, the older time
    /// of its warm parts.
    pub since: u64,
    /// Bytes not given back since it was freed (0: purged, all but the
    /// header page). Taken to lie at the front when the span is split.
    pub warm: usize,
}

impl Span {
    const EMPTY: Span = Span {
        base: 0,
        len: 0,
        committed: 0,
        since: 0,
        warm: 0,
    };

    fn end(&self) -> usize {
        self.base + self.len
    }

    /// One span out of two adjacent ones (`self` first).
    fn merged(self, upper: Span) -> Span {
        let since = match (self.warm > 0, upper.warm > 0) {
            (true, false) => self.since,
            (false, true) => upper.since,
            _ => self.since.min(upper.since),
        };
        Span {
            base: self.base,
            len: self.len + upper.len,
            committed: self.committed + upper.committed,
            since,
            warm: self.warm + upper.warm,
        }
    }

    /// Splits off the first `need` bytes (`need < len`, whole segments).
    /// The rest needs a header of its own: one more page that will be
    /// written, counted in the rest's `committed` (and returned, so the
    /// caller can count it in the store) when that page was not counted.
    pub fn split(self, need: usize, page: usize) -> (Span, Span, usize) {
        debug_assert!(need < self.len);
        let (front_c, rest_c, touched) = if self.committed == self.len {
            (need, self.len - need, 0)
        } else {
            let f = self.committed.min(need);
            (f, self.committed - f + page, page)
        };
        let front_w = self.warm.min(need);
        let front = Span {
            len: need,
            committed: front_c,
            warm: front_w,
            ..self
        };
        let rest = Span {
            base: self.base + need,
            len: self.len - need,
            committed: rest_c,
            warm: self.warm - front_w,
            ..self
        };
        (front, rest, touched)
    }
}

/// The cached spans of one instance (behind the store's lock).
///
/// Invariants (checked by [`HugeCache::check`], and by the store's check
/// for what lies in memory): see there.
pub struct HugeCache {
    spans: [Span; SPANS],
    count: usize,
    /// Bytes of all cached spans (address space).
    bytes: usize,
    /// When a huge block was last freed (monotonic ns).
    last_free: u64,
    /// The most bytes of live huge blocks seen at a free since the cache
    /// last went quiet: the warm bound follows it.
    peak_live: usize,
}

impl HugeCache {
    /// An empty cache.
    pub const fn new() -> Self {
        HugeCache {
            spans: [Span::EMPTY; SPANS],
            count: 0,
            bytes: 0,
            last_free: 0,
            peak_live: 0,
        }
    }

    /// Records a huge free at `now`.
    pub fn note_free(&mut self, now: u64) {
        self.last_free = now;
    }

    /// Records that `live` bytes of huge blocks were live (just before a
    /// free).
    pub fn note_live(&mut self, live: usize) {
        self.peak_live = self.peak_live.max(live);
    }

    /// What warm spans may hold while `live` bytes of huge blocks are
    /// live: what the live blocks fell short of their peak (memory the
    /// program held a moment ago, so keeping it costs no more than that
    /// peak), and at least `floor`.
    pub fn warm_budget(&self, live: usize, floor: usize) -> usize {
        self.peak_live.saturating_sub(live) + floor
    }

    /// Starts the peak afresh (the program went quiet until `before`):
    /// at the `live` bytes plus the warm spans freed after `before`, which
    /// the program held a moment ago (the span whose free ended the quiet,
    /// for one, must not be purged on that account).
    pub fn reset_peak(&mut self, live: usize, before: u64) {
        let fresh: usize = self
            .live()
            .iter()
            .filter(|s| s.since > before)
            .map(|s| s.warm)
            .sum();
        self.peak_live = live + fresh;
    }

    /// How long no huge block has been freed, at `now`.
    pub fn quiet_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_free)
    }

    /// Cached spans.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes of address space the cache holds.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of cached spans that are not purged (resident, mostly).
    pub fn warm_bytes(&self) -> usize {
        self.live().iter().map(|s| s.warm).sum()
    }

    /// The cached spans.
    pub fn live(&self) -> &[Span] {
        &self.spans[..self.count]
    }

    /// Re-checks the cache's bookkeeping: at most [`SPANS`] spans, whole
    /// segments each, none overlapping another, `committed` within the
    /// span, and `bytes` their total. (That each span starts with a huge
    /// header that is not live and spans it is the store's to check: this
    /// module does not read memory.)
    pub fn check(&self, segment: usize) -> Result<(), &'static str> {
        if self.count > SPANS {
            return Err("span cache: more spans than slots");
        }
        let spans = self.live();
        let mut total = 0;
        for (i, s) in spans.iter().enumerate() {
            if s.len == 0 || s.base % segment != 0 || s.len % segment != 0 {
                return Err("span cache: a span is not whole segments");
            }
            if s.committed > s.len {
                return Err("span cache: a span has more committed than its length");
            }
            if spans[..i]
                .iter()
                .any(|t| t.base < s.end() && s.base < t.end())
            {
                return Err("span cache: two spans overlap");
            }
            total += s.len;
        }
        if total != self.bytes {
            return Err("span cache: the byte count is off");
        }
        Ok(())
    }

    fn remove(&mut self, i: usize) -> Span {
        let s = self.spans[i];
        self.count -= 1;
        self.spans[i] = self.spans[self.count];
        self.bytes -= s.len;
        s
    }

    /// Removes and returns the span of at least `need` bytes that leaves
    /// the fewest bytes to fault back in, the smallest of those: a larger
    /// warm span split is cheaper than a purged one faulted back in.
    pub fn take(&mut self, need: usize) -> Option<Span> {
        let i = (0..self.count)
            .filter(|&i| self.spans[i].len >= need)
            .min_by_key(|&i| (need.saturating_sub(self.spans[i].warm), self.spans[i].len))?;
        Some(self.remove(i))
    }

    /// Removes and returns the span with the most warm bytes, if any has
    /// some.
    pub fn take_warmest(&mut self) -> Option<Span> {
        let i = (0..self.count)
            .filter(|&i| self.spans[i].warm > 0)
            .max_by_key(|&i| self.spans[i].warm)?;
        Some(self.remove(i))
    }

    /// Adds `s`, merged with cached neighbours if `merge`. Returns the span
    /// as cached (its header must be rewritten and its chunks re-recorded
    /// when it grew), and the oldest span if it had to leave to make room.
    pub fn put(&mut self, mut s: Span, merge: bool) -> (Span, Option<Span>) {
        if merge {
            while let Some(i) = (0..self.count).find(|&i| self.spans[i].end() == s.base) {
                s = self.remove(i).merged(s);
            }
            while let Some(i) = (0..self.count).find(|&i| self.spans[i].base == s.end()) {
                s = s.merged(self.remove(i));
            }
        }
        let evicted = if self.count == SPANS {
            let oldest = (0..self.count).min_by_key(|&i| self.spans[i].since);
            oldest.map(|i| self.remove(i))
        } else {
            None
        };
        self.spans[self.count] = s;
        self.count += 1;
        self.bytes += s.len;
        (s, evicted)
    }

    /// Removes the oldest span if the cache holds more than `max_bytes`,
    /// or a purged span idle since before `cold_before`.
    pub fn pop_victim(&mut self, max_bytes: usize, cold_before: u64) -> Option<Span> {
        let oldest = (0..self.count).min_by_key(|&i| self.spans[i].since)?;
        if self.bytes > max_bytes {
            return Some(self.remove(oldest));
        }
        let cold = (0..self.count)
            .find(|&i| self.spans[i].warm == 0 && self.spans[i].since < cold_before)?;
        Some(self.remove(cold))
    }

    /// Removes the oldest warm span if it was freed at `before` or
    /// earlier (to be purged whole: returned with its length), or if the
    /// warm spans hold more than `max_warm` bytes (returned with the
    /// excess, the least to purge).
    pub fn pop_to_purge(&mut self, before: u64, max_warm: usize) -> Option<(Span, usize)> {
        let i = (0..self.count)
            .filter(|&i| self.spans[i].warm > 0)
            .min_by_key(|&i| self.spans[i].since)?;
        let warm = self.warm_bytes();
        if self.spans[i].since <= before {
            let s = self.remove(i);
            Some((s, s.len))
        } else if warm > max_warm {
            Some((self.remove(i), warm - max_warm))
        } else {
            None
        }
    }

    /// Removes any span (for draining).
    pub fn pop_any(&mut self) -> Option<Span> {
        self.count.checked_sub(1).map(|i| self.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const PAGE: usize = 4096;

    fn warm(base: usize, len: usize, since: u64) -> Span {
        Span {
            base,
            len,
            committed: len,
            since,
            warm: len,
        }
    }

    #[test]
    fn takes_the_best_fit_and_splits_it_exactly() {
        let mut c = HugeCache::new();
        c.put(warm(0x1000_0000, 16 * MIB, 1), true);
        c.put(warm(0x4000_0000, 8 * MIB, 2), true);
        let s = c.take(4 * MIB).unwrap();
        assert_eq!(s.len, 8 * MIB, "the smaller of two that fit");
        let (front, rest, touched) = s.split(4 * MIB, PAGE);
        assert_eq!(
            (front.len, rest.base, rest.len),
            (4 * MIB, 0x4040_0000, 4 * MIB)
        );
        assert_eq!((front.committed + rest.committed, touched), (8 * MIB, 0));
        assert!(c.take(32 * MIB).is_none());
        assert_eq!(c.bytes(), 16 * MIB);
    }

    #[test]
    fn purged_spans_split_with_exact_counts() {
        let cold = Span {
            base: 0,
            len: 12 * MIB,
            committed: PAGE,
            since: 0,
            warm: 0,
        };
        let (front, rest, touched) = cold.split(4 * MIB, PAGE);
        assert_eq!(touched, PAGE);
        assert_eq!(front.committed + rest.committed, PAGE + touched);
        assert_eq!(rest.committed, PAGE);
    }

    #[test]
    fn neighbours_coalesce_both_ways() {
        let mut c = HugeCache::new();
        c.put(warm(0, 4 * MIB, 5), true);
        c.put(warm(8 * MIB, 4 * MIB, 7), true);
        let cold = Span {
            base: 4 * MIB,
            len: 4 * MIB,
            committed: PAGE,
            since: 1,
            warm: 0,
        };
        let (m, evicted) = c.put(cold, true);
        assert!(evicted.is_none());
        assert_eq!((m.base, m.len, c.len()), (0, 12 * MIB, 1));
        assert_eq!(m.committed, 8 * MIB + PAGE);
        assert_eq!(
            m.warm,
            8 * MIB,
            "partly warm spans must still be purged later"
        );
        assert_eq!(m.since, 5, "the older warm part sets the purge time");
        // Without merging they stay apart.
        let mut d = HugeCache::new();
        d.put(warm(0, 4 * MIB, 0), false);
        d.put(warm(4 * MIB, 4 * MIB, 0), false);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn the_warm_bound_follows_the_live_peak() {
        let mut c = HugeCache::new();
        assert_eq!(c.warm_budget(0, 16 * MIB), 16 * MIB);
        c.note_live(100 * MIB);
        c.note_live(60 * MIB);
        assert_eq!(c.warm_budget(70 * MIB, 16 * MIB), 46 * MIB);
        assert_eq!(c.warm_budget(120 * MIB, 16 * MIB), 16 * MIB);
        c.reset_peak(10 * MIB, 0);
        assert_eq!(c.warm_budget(0, 16 * MIB), 26 * MIB);
    }

    #[test]
    fn a_new_peak_leaves_room_for_spans_freed_since_the_quiet() {
        let mut c = HugeCache::new();
        c.put(warm(0, 12 * MIB, 3), false);
        c.put(warm(64 * MIB, 8 * MIB, 10), false);
        // Quiet until 5: the span freed at 10 was held a moment ago.
        c.reset_peak(5 * MIB, 5);
        assert_eq!(c.warm_budget(5 * MIB, 0), 8 * MIB);
    }

    #[test]
    fn a_split_keeps_the_warm_bytes() {
        let s = Span {
            warm: 6 * MIB,
            ..warm(0, 12 * MIB, 3)
        };
        let (front, rest, _) = s.split(4 * MIB, PAGE);
        assert_eq!((front.warm, rest.warm), (4 * MIB, 2 * MIB));
        let (front, rest, _) = s.split(8 * MIB, PAGE);
        assert_eq!((front.warm, rest.warm), (6 * MIB, 0));
    }

    #[test]
    fn victims_and_purges_go_oldest_first() {
        let mut c = HugeCache::new();
        for i in 0..SPANS {
            let (_, ev) = c.put(warm(i * 16 * MIB, 4 * MIB, 100 + i as u64), true);
            assert!(ev.is_none());
        }
        let (_, ev) = c.put(warm(1 << 40, 4 * MIB, 99), true);
        assert_eq!(ev.unwrap().since, 100, "a full cache drops its oldest");
        assert_eq!(c.len(), SPANS);
        assert_eq!(c.pop_victim(usize::MAX, 0).map(|s| s.since), None);
        assert_eq!(c.pop_victim(usize::MAX, u64::MAX), None, "none purged");
        assert_eq!(c.pop_victim(8 * MIB, 0).unwrap().since, 99);
        assert_eq!(c.pop_victim(8 * MIB, 0).unwrap().since, 101);
        assert!(c.pop_to_purge(101, usize::MAX).is_none());
        let (s, n) = c.pop_to_purge(102, usize::MAX).unwrap();
        assert_eq!((s.since, n), (102, 4 * MIB), "old: purged whole");
        let (s, n) = c.pop_to_purge(0, 4 * MIB).unwrap();
        let warm = (SPANS - 3) * 4 * MIB;
        assert_eq!((s.since, n), (103, warm - 4 * MIB), "over: the excess");
        assert!(c.pop_to_purge(0, usize::MAX).is_none());
    }
}
