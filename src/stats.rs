//! Statistics of one instance, read without a lock and without allocating.

use crate::instance::InstanceState;
use core::sync::atomic::Ordering;

/// A snapshot of one instance's counters.
///
/// Mapping figures are exact. Per-heap figures are written by each heap's
/// owner and read racily, so under concurrent activity they may be a few
/// pages behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes currently mapped (segments, huge blocks, heap metadata).
    pub mapped: usize,
    /// The most bytes ever mapped at once.
    pub peak_mapped: usize,
    /// Small segments currently mapped (4 MiB each).
    pub segments: usize,
    /// Huge blocks currently live.
    pub huge_blocks: usize,
    /// Bytes in the mappings of live huge blocks.
    pub huge_bytes: usize,
    /// Heaps made (at most the number of threads that were ever alive at
    /// once, plus heaps of exited threads waiting for reuse).
    pub heaps: usize,
    /// Pages in use across all heaps.
    pub pages: usize,
    /// Bytes given back to the kernel over the instance's life.
    pub purged: usize,
    /// Allocations refused (memory limit or kernel).
    pub failures: usize,
    /// Blocks freed by a thread other than their owner and collected.
    pub remote_frees: usize,
}

impl Stats {
    /// Reads the counters of `st`.
    pub fn of(st: &InstanceState) -> Stats {
        let s = &st.store.stats;
        let mut out = Stats {
            mapped: s.mapped.load(Ordering::Relaxed),
            peak_mapped: s.peak_mapped.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
            huge_blocks: s.huge_blocks.load(Ordering::Relaxed),
            huge_bytes: s.huge_bytes.load(Ordering::Relaxed),
            heaps: st.heap_count(),
            purged: s.purged.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            ..Stats::default()
        };
        st.for_each_heap(|h| {
            out.pages += h.stats.pages.load(Ordering::Relaxed);
            out.remote_frees += h.stats.remote_frees.load(Ordering::Relaxed);
        });
        out
    }
}
