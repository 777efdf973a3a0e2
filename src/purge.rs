//! The purge policy: when free memory goes back to the kernel, and how often
//! the slow paths look for the heaps of exited threads.
//!
//! emma has no thread of its own, no timer and no exit hook: everything
//! below happens on the slow paths of the threads that use the instance.
//! Free memory is given back in three places, each after the instance's
//! *purge delay* (`SegmentStore::purge_delay_ns`, default 10 ms):
//! - **free slices of a heap's segments** (pages that emptied): the heap
//!   notes a deadline when the first of them appears and purges all its
//!   free slices on the first slow path after it. Only the owner may do
//!   this (a slice may be handed out again at any moment), so a thread
//!   that stops calling the allocator keeps its own free slices until it
//!   calls it again, or until it exits and its heap is collected;
//! - **cached empty segments** in the store: each is stamped when cached,
//!   purged once idle for the delay, and unmapped once idle for the delay
//!   plus [`UNMAP_AFTER_NS`]. Until its delay passed a segment stays warm
//!   (the store keeps at most eight so): memory freed and reused within
//!   the delay is neither purged nor refaulted;
//! - **heaps of exited threads**, collected by any thread at most every
//!   [`COLLECT_INTERVAL_NS`] (see [`crate::instance`]).
//!
//! The clock is `clock_gettime` as a raw syscall (no vDSO without libc),
//! so it is read rarely: a heap looks at the time only when its slow path
//! finds [`TICK_CYCLES`] of the CPU's time-stamp counter passed since its
//! last look, and the instance's [`Clock`] reads the kernel's clock at most
//! once per [`TICK_CYCLES`] for all threads together. Deadlines are thus
//! late by up to a tick (a fraction of a millisecond), never early.

use crate::sys;
use core::sync::atomic::{AtomicU64, Ordering};

/// Time-stamp-counter cycles between two looks at the clock: about 0.3 ms
/// at 3 GHz. A slow path that finds fewer passed costs one `rdtsc` and a
/// compare.
pub const TICK_CYCLES: u64 = 1 << 20;

/// The heaps of exited threads are looked for at most this often (each
/// look costs a `tgkill` per heap whose owner may have exited).
pub const COLLECT_INTERVAL_NS: u64 = 25_000_000;

/// Idle free slices a heap keeps warm: up to one per this many slices it
/// has in use (see `Heap::purge_idle`).
pub const WARM_SHARE: u32 = 2;

/// Cached empty segments wait this many purge delays before they are
/// purged: a program that frees and reallocates big blocks in waves
/// cycles segments through the cache, and each purge costs a refault of
/// 4 MiB (the mixed-sizes benchmark took twice as long with 1x).
pub const CACHE_DELAY_FACTOR: u64 = 10;

/// A cached segment that has been purged stays mapped (address space and
/// its metadata page) this much longer, for reuse without a `mmap`.
pub const UNMAP_AFTER_NS: u64 = 500_000_000;

/// Whether at least [`TICK_CYCLES`] passed since `*last` (then `*last`
/// moves to now). A backwards step of the counter (another CPU's, slightly
/// behind) counts as a large forward one: the tick happens early, which is
/// harmless.
#[inline]
pub fn tick_due(last: &mut u64) -> bool {
    let c = sys::cycles();
    if c.wrapping_sub(*last) < TICK_CYCLES {
        return false;
    }
    *last = c;
    true
}

/// The deadline `delay` ns after `now` (never 0, which means "none").
#[inline]
pub fn deadline(now: u64, delay: u64) -> u64 {
    now.saturating_add(delay).max(1)
}

/// An instance's view of `CLOCK_MONOTONIC`, read from the kernel at most
/// once per [`TICK_CYCLES`] by all threads together.
pub struct Clock {
    /// Time-stamp counter at the last kernel read.
    read_at: AtomicU64,
    /// The time the last kernel read returned (ns).
    now: AtomicU64,
}

impl Clock {
    /// A clock that reads the kernel on first use.
    pub const fn new() -> Self {
        Clock {
            read_at: AtomicU64::new(0),
            now: AtomicU64::new(0),
        }
    }

    /// The current time in ns, at most a tick old.
    pub fn now(&self) -> u64 {
        let c = sys::cycles();
        let at = self.read_at.load(Ordering::Relaxed);
        if c.wrapping_sub(at) < TICK_CYCLES
            || self
                .read_at
                .compare_exchange(at, c, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            // Read recently, or being read by another thread right now.
            return self.now.load(Ordering::Relaxed);
        }
        let t = sys::monotonic_ns();
        self.now.fetch_max(t, Ordering::Relaxed);
        t
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_never_zero_and_saturate() {
        assert_eq!(deadline(0, 0), 1);
        assert_eq!(deadline(5, 10), 15);
        assert_eq!(deadline(u64::MAX - 1, 10), u64::MAX);
    }

    #[test]
    fn the_clock_moves_forward() {
        let c = Clock::new();
        let a = c.now();
        let mut last = 0;
        assert!(tick_due(&mut last), "the first look is always due");
        assert!(c.now() >= a);
    }
}
