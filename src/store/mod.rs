//! The segment store: one instance's supply of segments.
//!
//! Maps new segments, keeps a small cache of empty ones, gives their memory
//! back to the kernel, records every mapping in the instance's
//! [`SegMap`], enforces the instance's memory limit (on committed bytes:
//! see [`SegmentStore::commit`]) and counts what is mapped and committed.
//! Heaps come here (on their slow paths) for segments and return them when
//! their last page empties; huge blocks ([`crate::huge`]) share the lock,
//! the map and the accounting, and keep their freed mappings in the
//! store's span cache ([`spans`]), which the store empties itself when the
//! limit or the kernel refuses memory.
//!
//! Everything behind [`SegmentStore::lock`] may be left half-updated by a
//! thread that did not survive a `fork`; [`SegmentStore::repair_after_fork`]
//! forgets those structures (leaking their memory in the child) rather than
//! trust them.

use crate::keys::{self, Keys};
use crate::os::{self, Purge, Purged};
use crate::purge::{self, Clock};
use crate::segmap::SegMap;
use crate::segment::{Segment, SEGMENT_SIZE, SLICE_SIZE};
use crate::sync::{Lock, LockGuard};
use crate::sys::{Errno, PAGE_SIZE};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

mod cache;
mod invariants;
mod spans;

use cache::{Cached, SEGMENT_CACHE_MAX};

pub use spans::{HugeCache, Span};

/// Counters of one instance's mappings. All exact; read without a lock.
pub struct StoreStats {
    /// Bytes currently mapped for segments and huge blocks.
    pub mapped: AtomicUsize,
    /// Highest value `mapped` reached.
    pub peak_mapped: AtomicUsize,
    /// Small segments currently mapped (owned by heaps or cached).
    pub segments: AtomicUsize,
    /// Huge blocks currently live.
    pub huge_blocks: AtomicUsize,
    /// Bytes of live huge blocks (as requested, page rounded).
    pub huge_bytes: AtomicUsize,
    /// Bytes that may be resident: touched and not given back since
    /// (slices of small segments at 64 KiB granularity, huge mappings, heap
    /// metadata). Memory purged with `MADV_FREE` counts until reused.
    pub committed: AtomicUsize,
    /// Bytes of heap metadata (part of `mapped` and `committed`).
    pub meta: AtomicUsize,
    /// Bytes given back to the kernel with `madvise` over the instance's life.
    pub purged: AtomicUsize,
    /// Allocations refused because of the limit or the kernel.
    pub failures: AtomicUsize,
}

impl StoreStats {
    const fn new() -> Self {
        StoreStats {
            mapped: AtomicUsize::new(0),
            peak_mapped: AtomicUsize::new(0),
            segments: AtomicUsize::new(0),
            huge_blocks: AtomicUsize::new(0),
            huge_bytes: AtomicUsize::new(0),
            committed: AtomicUsize::new(0),
            meta: AtomicUsize::new(0),
            purged: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        }
    }
}

/// An instance's segment supply. `const`-constructible; lives in the
/// instance's static.
pub struct SegmentStore {
    lock: Lock,
    /// Which chunks of the address space are this instance's.
    pub segmap: SegMap,
    cached: UnsafeCell<Cached>,
    /// Recently freed huge mappings (behind `lock`).
    pub(crate) huge: UnsafeCell<HugeCache>,
    /// `hardened`: the addresses of freed huge blocks, inaccessible and
    /// never reused until pushed out (behind `lock`; see `huge::quarantine`).
    pub(crate) quarantined: UnsafeCell<HugeCache>,
    /// Mapping counters.
    pub stats: StoreStats,
    /// Bytes the instance may commit at most (`stats.committed`).
    limit: AtomicUsize,
    /// Purge with `MADV_FREE` instead of `MADV_DONTNEED`.
    lazy_purge: AtomicBool,
    /// A `LimitHook` called when the limit refuses a mapping (null: none).
    limit_hook: AtomicPtr<()>,
    /// How long free memory stays committed before it is purged, in
    /// nanoseconds (see [`DEFAULT_PURGE_DELAY_NS`]).
    purge_delay_ns: AtomicU64,
    /// The instance's rate-limited clock (see [`crate::purge`]).
    pub(crate) clock: Clock,
    /// When the cache next needs a look (ns; `u64::MAX`: empty).
    next_cache_check: AtomicU64,
}

/// Free memory idle for this long is given back to the kernel: short
/// enough that RSS follows the program, long enough that memory freed and
/// reused within a burst is not purged and refaulted (mimalloc's default
/// is the same 10 ms).
pub const DEFAULT_PURGE_DELAY_NS: u64 = 10_000_000;

/// Called with `(bytes requested, limit)` when an instance's memory limit
/// refuses a request: the bytes it would have committed, and the limit. It
/// runs on the allocating thread, inside the allocation; it must not
/// allocate from the same instance.
pub type LimitHook = fn(usize, usize);

// SAFETY: the `UnsafeCell`s are only accessed with `lock` held.
unsafe impl Sync for SegmentStore {}

impl SegmentStore {
    /// An empty store with no limit.
    pub const fn new() -> Self {
        SegmentStore {
            lock: Lock::new(),
            segmap: SegMap::new(),
            cached: UnsafeCell::new(Cached::EMPTY),
            huge: UnsafeCell::new(HugeCache::new()),
            quarantined: UnsafeCell::new(HugeCache::new()),
            stats: StoreStats::new(),
            limit: AtomicUsize::new(usize::MAX),
            lazy_purge: AtomicBool::new(false),
            limit_hook: AtomicPtr::new(ptr::null_mut()),
            purge_delay_ns: AtomicU64::new(DEFAULT_PURGE_DELAY_NS),
            clock: Clock::new(),
            next_cache_check: AtomicU64::new(u64::MAX),
        }
    }

    /// How long free memory may stay committed before it is purged (ns).
    pub fn purge_delay_ns(&self) -> u64 {
        self.purge_delay_ns.load(Ordering::Relaxed)
    }

    /// How long a cached empty segment stays warm (ns).
    fn cache_delay_ns(&self) -> u64 {
        self.purge_delay_ns()
            .saturating_mul(purge::CACHE_DELAY_FACTOR)
    }

    /// Sets the purge delay (ns); 0 purges as soon as memory is free.
    pub fn set_purge_delay_ns(&self, ns: u64) {
        self.purge_delay_ns.store(ns, Ordering::Relaxed);
    }

    /// Takes the store's lock.
    pub(crate) fn lock(&self) -> LockGuard<'_> {
        self.lock.lock()
    }

    /// The purge policy in force.
    pub fn purge_mode(&self) -> Purge {
        if self.lazy_purge.load(Ordering::Relaxed) {
            Purge::Free
        } else {
            Purge::DontNeed
        }
    }

    /// Chooses how memory is given back (see [`Purge`]).
    pub fn set_purge_mode(&self, how: Purge) {
        self.lazy_purge.store(how == Purge::Free, Ordering::Relaxed);
    }

    /// The limit on committed bytes (`usize::MAX`: none).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the limit on committed bytes. Memory already committed stays.
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Sets (or, with `None`, removes) the function called when the limit
    /// refuses a request.
    pub fn set_limit_hook(&self, hook: Option<LimitHook>) {
        let p = hook.map_or(ptr::null_mut(), |f| f as *mut ());
        self.limit_hook.store(p, Ordering::Release);
    }

    #[cold]
    fn limit_hit(&self, requested: usize, limit: usize) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let p = self.limit_hook.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: only `set_limit_hook` stores here, always a `LimitHook`.
            let hook: LimitHook = unsafe { core::mem::transmute::<*mut (), LimitHook>(p) };
            hook(requested, limit);
        }
    }

    /// Counts `len` more mapped bytes: address space, which the limit does
    /// not cap (see [`SegmentStore::commit`]).
    pub(crate) fn charge(&self, len: usize) {
        self.stats.mapped.fetch_add(len, Ordering::Relaxed);
        self.note_peak();
    }

    /// Undoes [`SegmentStore::charge`].
    pub(crate) fn uncharge(&self, len: usize) {
        self.stats.mapped.fetch_sub(len, Ordering::Relaxed);
    }

    /// Records the current mapped total in `peak_mapped`.
    pub(crate) fn note_peak(&self) {
        let now = self.stats.mapped.load(Ordering::Relaxed);
        self.stats.peak_mapped.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts `bytes` more as committed if that keeps the count within the
    /// limit. The limit caps committed memory rather than mappings because
    /// that is what users budget: the bytes their blocks occupy (at page
    /// granularity), not the 4 MiB segments reserved around them. Memory
    /// is counted before it is touched, so the count never passes the
    /// limit, even with racing threads.
    ///
    /// On refusal the store first unmaps its caches (cached segments and
    /// huge blocks, still counted) and tries again; then it counts a
    /// failure, calls the limit hook and answers `ENOMEM`. The caller must
    /// not hold the store's lock: draining takes it. (Memory written under
    /// the lock is counted with [`SegmentStore::commit_written`].)
    pub(crate) fn commit(&self, bytes: usize) -> Result<(), Errno> {
        if self.try_commit(bytes) {
            return Ok(());
        }
        self.drain_caches();
        if self.try_commit(bytes) {
            return Ok(());
        }
        self.limit_hit(bytes, self.limit());
        Err(Errno::ENOMEM)
    }

    /// Counts `bytes` more as committed if that stays within the limit;
    /// unlike [`SegmentStore::commit`], gives up nothing and calls no hook
    /// when it does not (for memory that can be done without).
    pub(crate) fn try_commit(&self, bytes: usize) -> bool {
        let limit = self.limit();
        let mut cur = self.stats.committed.load(Ordering::Relaxed);
        loop {
            let Some(new) = cur.checked_add(bytes).filter(|&n| n <= limit) else {
                return false;
            };
            match self.stats.committed.compare_exchange_weak(
                cur,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(x) => cur = x,
            }
        }
    }

    /// Counts `bytes` more as committed without checking the limit: for
    /// memory already written by the time it is counted (the header page
    /// of a split large span), at most a page past the limit.
    pub(crate) fn commit_written(&self, bytes: usize) {
        self.stats.committed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` less as committed.
    #[inline]
    pub(crate) fn decommit(&self, bytes: usize) {
        self.stats.committed.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Maps `len` bytes aligned to [`SEGMENT_SIZE`], charged and recorded in
    /// the segmap. Null if the kernel refuses. What the mapping commits is
    /// the caller's to count, beforehand.
    pub(crate) fn map(&self, len: usize) -> Option<NonNull<u8>> {
        let Ok(base) = os::map_aligned(len, SEGMENT_SIZE) else {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.record(base, len)
    }

    /// [`SegmentStore::map`] at `addr` (segment aligned), if nothing is
    /// mapped there: `None` otherwise, or if the kernel refuses, which is
    /// not counted as a failure (the caller maps elsewhere).
    #[cfg_attr(not(feature = "hardened"), allow(dead_code))]
    pub(crate) fn map_at(&self, addr: usize, len: usize) -> Option<NonNull<u8>> {
        debug_assert!(addr.is_multiple_of(SEGMENT_SIZE));
        let base = crate::sys::mmap_anon_at(addr, len).ok()?;
        self.record(base, len)
    }

    /// Records fresh mapping `[base, base + len)` in the segmap and
    /// charges it; unmaps it (`None`) if the segmap refuses.
    fn record(&self, base: NonNull<u8>, len: usize) -> Option<NonNull<u8>> {
        if self.segmap.insert(base.as_ptr() as usize, len).is_err() {
            // SAFETY: we just mapped it and nobody has seen it.
            unsafe { os::unmap(base, len) };
            return None;
        }
        self.charge(len);
        Some(base)
    }

    /// Unmaps a mapping made by [`SegmentStore::map`] (possibly resized).
    /// Takes the lock, so that `for_each_mapping` never reads a header that
    /// is being unmapped; the caller must not hold it.
    ///
    /// # Safety
    /// The mapping must be unused from now on.
    pub(crate) unsafe fn unmap(&self, base: NonNull<u8>, len: usize) {
        let _g = self.lock();
        self.segmap.remove(base.as_ptr() as usize, len);
        // SAFETY: per contract.
        unsafe { os::unmap(base, len) };
        self.uncharge(len);
    }

    /// A small segment for a heap: from the cache, or freshly mapped.
    /// Null if the limit or the kernel refuses.
    pub(crate) fn alloc_segment(&self, instance: usize, keys: Keys) -> *mut Segment {
        {
            let _g = self.lock();
            // SAFETY: lock held.
            let c = unsafe { &mut *self.cached.get() };
            if let Some(seg) = c.pop_newest() {
                // SAFETY: cached segments are mapped and idle.
                unsafe {
                    let dirty = (*seg).dirty_slices;
                    return Segment::init(Segment::base(seg), instance, keys, dirty);
                }
            }
        }
        // The metadata slice; the pages' slices are counted as pages are set up.
        if self.commit(SLICE_SIZE).is_err() {
            return ptr::null_mut();
        }
        match self.map(SEGMENT_SIZE) {
            Some(base) => {
                self.stats.segments.fetch_add(1, Ordering::Relaxed);
                if keys::ENABLED {
                    // The last page of the metadata slice guards it against
                    // underflows of the first page's blocks.
                    // SAFETY: that page is ours and holds nothing.
                    let _ = unsafe { os::protect_none(base.as_ptr().add(SLICE_SIZE - PAGE_SIZE)) };
                }
                // SAFETY: fresh, aligned, ours.
                unsafe { Segment::init(base, instance, keys, 0) }
            }
            None => {
                self.decommit(SLICE_SIZE);
                ptr::null_mut()
            }
        }
    }

    /// Takes back an empty small segment: caches it (still warm), purging
    /// the cached segment that thereby leaves the warm window and unmapping
    /// the oldest when the cache is full. The segment itself is purged once
    /// it has been idle for the purge delay ([`SegmentStore::tick`]).
    ///
    /// # Safety
    /// The segment has no pages and its heap has forgotten it.
    pub(crate) unsafe fn release_segment(&self, seg: *mut Segment) {
        let now = self.clock.now();
        let delay = self.cache_delay_ns();
        // SAFETY: per contract the segment is idle and ours.
        unsafe {
            (*seg)
                .header
                .owner
                .store(ptr::null_mut(), Ordering::Relaxed);
            let g = self.lock();
            let c = &mut *self.cached.get();
            let evicted = c.push(seg, now);
            if let Some(cold) = c.coldest_warm() {
                // Purged under the lock: the cache owns it, and this is rare
                // (once per segment leaving the warm window).
                self.purge_segment(cold);
            }
            if delay == 0 {
                self.purge_segment(seg);
            }
            drop(g);
            self.next_cache_check
                .fetch_min(purge::deadline(now, delay), Ordering::Relaxed);
            if let Some(old) = evicted {
                self.unmap_segment(old);
            }
        }
        self.verify();
    }

    /// Purges the cached segments idle for the purge delay and unmaps
    /// those idle for [`purge::UNMAP_AFTER_NS`] longer. Cheap when nothing
    /// is due (one atomic load); called from the slow paths' ticks.
    pub(crate) fn tick(&self, now: u64) {
        let next = self.next_cache_check.load(Ordering::Relaxed);
        if now < next
            || self
                .next_cache_check
                .compare_exchange(next, u64::MAX, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let delay = self.cache_delay_ns();
        let unmap_after = delay.saturating_add(purge::UNMAP_AFTER_NS);
        let mut gone = [ptr::null_mut(); SEGMENT_CACHE_MAX];
        let (n, next) = {
            let _g = self.lock();
            // SAFETY: lock held.
            let c = unsafe { &mut *self.cached.get() };
            let old = (0..c.count)
                .take_while(|&i| now.saturating_sub(c.since[i]) >= unmap_after)
                .count();
            c.take_oldest(old, &mut gone);
            let mut next = u64::MAX;
            for i in 0..c.count {
                let idle = now.saturating_sub(c.since[i]);
                if idle >= delay {
                    // SAFETY: cached segments are the cache's, under the lock.
                    unsafe { self.purge_segment(c.segments[i]) };
                    next = next.min(c.since[i].saturating_add(unmap_after));
                } else {
                    next = next.min(c.since[i].saturating_add(delay));
                }
            }
            (old, next)
        };
        self.next_cache_check.fetch_min(next, Ordering::Relaxed);
        for &seg in &gone[..n] {
            // SAFETY: removed from the cache, so nobody else has it.
            unsafe { self.unmap_segment(seg) };
        }
        self.verify();
    }

    /// Unmaps an idle small segment, with its accounting.
    ///
    /// # Safety
    /// Nobody uses the segment any more.
    unsafe fn unmap_segment(&self, seg: *mut Segment) {
        // SAFETY: per contract.
        let dirty = unsafe { (*seg).dirty_slices.count_ones() } as usize;
        self.decommit(dirty * SLICE_SIZE);
        self.stats.segments.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: per contract.
        unsafe { self.unmap(Segment::base(seg), SEGMENT_SIZE) };
    }

    /// Gives the dirty free slices of `seg` back to the kernel.
    ///
    /// # Safety
    /// The caller owns the segment's metadata.
    pub(crate) unsafe fn purge_segment(&self, seg: *mut Segment) {
        // SAFETY: forwarded contract.
        unsafe { self.purge_slices(seg, u64::MAX) }
    }

    /// Gives the dirty free slices of `seg` among `only` (a slice bitmap)
    /// back to the kernel.
    ///
    /// # Safety
    /// The caller owns the segment's metadata.
    pub(crate) unsafe fn purge_slices(&self, seg: *mut Segment, only: u64) {
        let how = self.purge_mode();
        let base = seg as usize;
        // SAFETY: per contract.
        let s = unsafe { &mut *seg };
        s.for_dirty_free_runs(only, |first, len| {
            let bytes = len * SLICE_SIZE;
            // SAFETY: free slices hold no live block.
            let done = unsafe {
                os::purge(
                    NonNull::new_unchecked((base + first * SLICE_SIZE) as *mut u8),
                    bytes,
                    how,
                )
            };
            if done != Purged::No {
                self.stats.purged.fetch_add(bytes, Ordering::Relaxed);
            }
            if done == Purged::Zeroed {
                self.decommit(bytes);
            }
            done
        });
    }

    /// Unmaps every cached segment and huge mapping (for `trim`).
    pub(crate) fn drain_caches(&self) {
        loop {
            let seg = {
                let _g = self.lock();
                // SAFETY: lock held.
                let c = unsafe { &mut *self.cached.get() };
                let Some(seg) = c.pop_newest() else {
                    break;
                };
                seg
            };
            // SAFETY: removed from the cache, so nobody else has it.
            unsafe { self.unmap_segment(seg) };
        }
        self.drain_spans();
    }

    /// Unmaps every cached (or quarantined) huge span; says whether
    /// there was any.
    pub(crate) fn drain_spans(&self) -> bool {
        let mut any = false;
        loop {
            let s = {
                let _g = self.lock();
                // SAFETY: lock held.
                unsafe {
                    (*self.huge.get())
                        .pop_any()
                        .or_else(|| (*self.quarantined.get()).pop_any())
                }
            };
            let Some(s) = s else {
                return any;
            };
            any = true;
            self.release_span(s);
        }
    }

    /// Unmaps a huge span that is out of the cache, with its accounting.
    pub(crate) fn release_span(&self, s: Span) {
        self.decommit(s.committed);
        // SAFETY: the span is free, ours, and out of every list.
        unsafe { self.unmap(NonNull::new_unchecked(s.base as *mut u8), s.len) };
    }

    /// Forgets everything behind the lock and frees the lock, in a fork
    /// child whose other threads are gone. Cached memory is leaked in the
    /// child rather than trusted.
    ///
    /// # Safety
    /// Only the thread that got `ForkState::MustRepair` may call this, before
    /// anything else takes the lock.
    pub(crate) unsafe fn repair_after_fork(&self) {
        // SAFETY: per contract no thread is inside the lock.
        unsafe {
            self.lock.reset();
            *self.cached.get() = Cached::EMPTY;
            *self.huge.get() = HugeCache::new();
            *self.quarantined.get() = HugeCache::new();
        }
    }
}

impl Default for SegmentStore {
    fn default() -> Self {
        Self::new()
    }
}
