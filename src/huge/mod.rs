//! Huge blocks: anything larger than the largest size class, or aligned
//! beyond a slice, gets a mapping of its own.
//!
//! ```text
//!  align <= 4 KiB:    seg |hdr|block ........................|
//!  align < 64 KiB:    seg |hdr| ... |block (at seg + align) ..|
//!  align <= 4 MiB:    seg |hdr| ... 4 MiB ... |block ...........|
//!  align >  4 MiB:    seg |hdr| ... 4 MiB ... |block (aligned) ...|
//! ```
//!
//! The header (a [`SegmentHeader`] of kind `Huge`) sits at the
//! segment-aligned start of the mapping, and the block starts at most one
//! segment size after it, so `segment_of(block)` finds it by masking like
//! any other block. Untouched header padding costs address space, not
//! memory.
//!
//! Mapping lengths are whole segments, so that ownership, recorded per
//! 4 MiB chunk, never extends past the mapping.
//!
//! Freed mappings up to [`CACHE_BLOCK_MAX`] go to the span cache
//! ([`crate::store::HugeCache`]): programs that allocate and free blocks of a few MiB in a
//! loop would otherwise pay a `mmap`, a page fault per 4 KiB and a
//! `munmap` for every block. Cached spans are split to fit smaller
//! requests and coalesced with their cached neighbours; they stay warm
//! while huge blocks keep being freed, are purged once frees pause for
//! [`WARM_DELAYS`] times the instance's purge delay (or when the warm ones
//! exceed [`WARM_BYTES_MAX`]) and unmapped after [`COLD_AFTER_DELAYS`]
//! delays, when the cache is full or over [`CACHE_BYTES_MAX`], or on
//! `trim`. The clock is read only here, on paths that already make a
//! system call or move megabytes.
//!
//! With `hardened`, freed spans are never reused: each (up to
//! [`CACHE_BLOCK_MAX`] and not over-aligned; others are unmapped, as
//! without `hardened`) is emptied and made
//! inaccessible (`PROT_NONE`, all but the header page, which keeps it
//! visible to `owns`, `for_each_mapping` and the double-free check) and
//! kept in quarantine, oldest out first, so that a stale pointer faults
//! instead of reaching a later block at the same address. A realloc that
//! must move copies into a new block, and its old copy is quarantined the
//! same way. When `mprotect` is refused (e.g. `vm.max_map_count`), the
//! span is unmapped instead: protection degrades, the program goes on.
//!
//! Growing a huge block moves its pages with `mremap` instead of copying
//! them.

use crate::keys;
use crate::os::{self, align_up, Purged};
use crate::segment::{slow_tag, Kind, Segment, SegmentHeader, SEGMENT_SIZE, SLICE_SIZE};
use crate::store::{SegmentStore, Span};
use crate::sys::{self, PAGE_SIZE};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// Blocks whose mapping is larger than this are unmapped when freed: a
/// program rarely frees and reallocates such blocks in a loop, and keeping
/// them would hold on to a lot of memory for one block.
const CACHE_BLOCK_MAX: usize = 32 << 20;
/// Address space the cache may hold (its purged spans cost no memory).
const CACHE_BYTES_MAX: usize = 256 << 20;
/// Memory that warm spans may hold before the oldest is purged early.
const WARM_BYTES_MAX: usize = 96 << 20;
/// Warm spans are purged once huge frees have paused for this many purge
/// delays. Not counted per span: a program that keeps replacing big
/// buffers reuses its spans some milliseconds apart (more than the delay
/// when it fills each buffer, or on a loaded machine), and purging them
/// would only make it fault them back in, page by page; while it goes on,
/// the warm bound keeps that memory in check.
const WARM_DELAYS: u64 = 10;
/// A purged span idle for this many purge delays is unmapped.
const COLD_AFTER_DELAYS: u64 = 100;
/// `hardened`: address space the quarantine may hold (no memory: its
/// spans are emptied).
const QUARANTINE_BYTES_MAX: usize = 1 << 30;
/// A shrinking realloc gives back the tail when it frees at least this.
const SHRINK_MIN: usize = 1 << 20;

/// The header at the start of a huge mapping.
#[repr(C)]
pub struct HugeHeader {
    /// Common prefix; `kind == Kind::Huge`.
    pub header: SegmentHeader,
    /// Length of the whole mapping, from the header.
    pub map_len: usize,
    /// The block handed out.
    pub block: *mut u8,
    /// Alignment the block was requested with.
    pub align: usize,
    /// The block is live (cleared on free: catches double frees).
    pub live: AtomicBool,
}

/// Pages before the block: the header, and with `hardened` a guard page.
const LEAD_PAGES: usize = if keys::ENABLED { 2 } else { 1 };

/// Huge mapping lengths are whole segments (4 MiB): the segment map records
/// ownership per 4 MiB chunk, so a mapping that ended mid-chunk would make
/// `owns` claim whatever the kernel maps after it. The padding costs address
/// space only.
fn chunk_align(n: usize) -> Option<usize> {
    align_up(n, SEGMENT_SIZE)
}

/// Offset of the block from the mapping start for a given alignment: in
/// the header's slice, or exactly one segment on. Either way the block's
/// slice index (`Segment::slice_offset`) is 0, which no small block's is:
/// the fast paths of `free` and `malloc_usable_size` tell small blocks
/// (and null) apart by it before reading anything.
fn block_offset(align: usize) -> usize {
    if align < SLICE_SIZE {
        align.max(LEAD_PAGES * PAGE_SIZE)
    } else {
        SEGMENT_SIZE
    }
}

/// With `hardened`, makes the page after a fresh mapping's header a guard.
fn guard(base: NonNull<u8>) {
    if keys::ENABLED {
        // SAFETY: the page after the header precedes the block and is ours.
        let _ = unsafe { os::protect_none(base.as_ptr().add(PAGE_SIZE)) };
    }
}

impl HugeHeader {
    /// Usable bytes of the block (to the end of the mapping).
    pub fn usable(&self) -> usize {
        self.map_len - (self.block as usize - self as *const _ as usize)
    }
}

/// Writes the header of a huge mapping and returns the block.
///
/// # Safety
/// `base` is a writable, segment-aligned mapping of `map_len` bytes owned by
/// the caller, with room for the block at `block_offset(align)`.
unsafe fn init(base: NonNull<u8>, map_len: usize, align: usize, instance: usize) -> *mut u8 {
    let h = base.as_ptr().cast::<HugeHeader>();
    // SAFETY: per contract.
    unsafe {
        let block = base.as_ptr().add(block_offset(align));
        h.write(HugeHeader {
            header: SegmentHeader {
                kind: Kind::Huge as u32,
                instance,
                owner: AtomicPtr::new(crate::segment::slow_tag()),
            },
            map_len,
            block,
            align,
            live: AtomicBool::new(true),
        });
        // The free fast path reads the tag of the block's slice entry
        // before it knows the block is huge (`Segment::slice_entry`). For
        // a block past the first slice that entry lies in the header page
        // beyond the header, which a span split from a larger one still
        // fills with its old blocks' data: make it the slow tag.
        (*Segment::slice_entry(h.cast(), block))
            .tag
            .store(slow_tag(), Ordering::Relaxed);
        block
    }
}

/// Allocates a huge block of `size` bytes aligned to `align`. Returns the
/// block and whether its memory is known to be zero; null if the limit or
/// the kernel refuses.
pub fn alloc(store: &SegmentStore, size: usize, align: usize, instance: usize) -> (*mut u8, bool) {
    let off = block_offset(align);
    let Some(need) = size.checked_add(off).and_then(chunk_align) else {
        return (ptr::null_mut(), false);
    };
    if align > SEGMENT_SIZE {
        return (alloc_over_aligned(store, size, align, instance), true);
    }
    if let Some(b) = alloc_cached(store, need, align, instance) {
        return (b, false);
    }
    // The limit counts committed memory; `commit` gives up cached spans
    // before refusing.
    if store.commit(need).is_err() {
        return (ptr::null_mut(), false);
    }
    let mut base = store.map(need);
    if base.is_none() && store.drain_spans() {
        // The kernel refused: cached spans hold address space, retry.
        base = store.map(need);
    }
    let Some(base) = base else {
        store.decommit(need);
        return (ptr::null_mut(), false);
    };
    // Mapping is slow anyway: a good moment for the cache's upkeep.
    maintain(store, sys::monotonic_ns());
    count(store, need, true);
    guard(base);
    // SAFETY: fresh mapping of `need` bytes.
    (unsafe { init(base, need, align, instance) }, true)
}

/// A block from the span cache: the smallest cached span that fits, split
/// if larger. Never with `hardened` (quarantined spans are not reused).
fn alloc_cached(
    store: &SegmentStore,
    need: usize,
    align: usize,
    instance: usize,
) -> Option<*mut u8> {
    if keys::ENABLED {
        return None;
    }
    let g = store.lock();
    // SAFETY: lock held.
    let c = unsafe { &mut *store.huge.get() };
    let mut s = c.take(need)?;
    if s.len > need {
        let (front, rest, touched) = s.split(need, PAGE_SIZE);
        // Recording the rest's chunk as a header cannot fail: its leaf
        // exists. Should it, the whole span is used.
        if store.segmap.insert(rest.base, rest.len).is_ok() {
            // SAFETY: the rest is a cached span of ours, behind the lock.
            unsafe { write_free_header(rest, instance) };
            // The rest's new header page is memory in use already.
            store.commit_written(touched);
            // A span was just taken, so nothing is evicted.
            let _ = c.put(rest, false);
            s = front;
        }
    }
    drop(g);
    // Purged parts of the span are committed again as they are used.
    if store.commit(s.len - s.committed).is_err() {
        store.decommit(s.committed);
        // SAFETY: the span left the cache: idle, mapped, ours.
        unsafe { store.unmap(NonNull::new_unchecked(s.base as *mut u8), s.len) };
        return None;
    }
    count(store, s.len, true);
    // SAFETY: the span left the cache: idle, mapped, ours; its guard page
    // (with `hardened`) is never cached, so its pages are all writable.
    Some(unsafe {
        init(
            NonNull::new_unchecked(s.base as *mut u8),
            s.len,
            align,
            instance,
        )
    })
}

/// Writes the header of a cached span that has none yet (the rest of a
/// split): a huge header that is not live, so `for_each_mapping` sees its
/// length and a stale free into it is caught as one.
///
/// # Safety
/// `s` is a cached span of this store, with the store's lock held.
unsafe fn write_free_header(s: Span, instance: usize) {
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

fn count(store: &SegmentStore, len: usize, up: bool) {
    let s = &store.stats;
    if up {
        s.huge_blocks.fetch_add(1, Ordering::Relaxed);
        s.huge_bytes.fetch_add(len, Ordering::Relaxed);
    } else {
        s.huge_blocks.fetch_sub(1, Ordering::Relaxed);
        s.huge_bytes.fetch_sub(len, Ordering::Relaxed);
    }
}

/// Alignment above a segment: the block goes at an `align` boundary, the
/// header exactly one segment before it.
fn alloc_over_aligned(store: &SegmentStore, size: usize, align: usize, instance: usize) -> *mut u8 {
    let Some(body) = chunk_align(size) else {
        return ptr::null_mut();
    };
    let Some(len) = body.checked_add(SEGMENT_SIZE) else {
        return ptr::null_mut();
    };
    let Some(over) = body.checked_add(align) else {
        return ptr::null_mut();
    };
    if store.commit(len).is_err() {
        return ptr::null_mut();
    }
    let Ok(raw) = os::map_aligned(over, align) else {
        store.decommit(len);
        return ptr::null_mut();
    };
    // raw is aligned: block at raw + align, header at block - SEGMENT_SIZE.
    let seg = raw.as_ptr() as usize + align - SEGMENT_SIZE;
    // SAFETY: `[raw, seg)` is the unused head of our fresh mapping.
    unsafe { os::unmap(raw, seg - raw.as_ptr() as usize) };
    // SAFETY: seg is inside the mapping, hence non-null.
    let base = unsafe { NonNull::new_unchecked(seg as *mut u8) };
    if store.segmap.insert(seg, len).is_err() {
        // SAFETY: nobody has seen the mapping.
        unsafe { os::unmap(base, len) };
        store.decommit(len);
        return ptr::null_mut();
    }
    count(store, len, true);
    store.charge(len);
    guard(base);
    // SAFETY: `[seg, seg + len)` is ours; the block is at seg + SEGMENT_SIZE.
    unsafe { init(base, len, align, instance) }
}

/// Frees a huge block: into the span cache (or, with `hardened`, the
/// quarantine), or back to the kernel.
///
/// # Safety
/// `h` is the header of a live huge block of this store that nobody uses
/// any more.
pub unsafe fn free(store: &SegmentStore, h: *mut HugeHeader) {
    // SAFETY: per contract.
    let (base, len, align) = unsafe {
        if !(*h).live.swap(false, Ordering::Relaxed) && keys::ENABLED {
            keys::corrupted("double free of a huge block", (*h).block);
        }
        (h as usize, (*h).map_len, (*h).align)
    };
    count(store, len, false);
    let span = Span {
        base,
        len,
        committed: len,
        since: sys::monotonic_ns(),
        purged: false,
    };
    if len > CACHE_BLOCK_MAX || align > SEGMENT_SIZE {
        // Never kept, not even in quarantine: its addresses go back to the
        // kernel (`owns` stops claiming them at once), and an over-aligned
        // mapping would rarely fit another request.
        store.release_span(span);
    } else if keys::ENABLED {
        quarantine(store, span);
        return;
    } else {
        cache_span(store, span, true);
    }
    maintain(store, span.since);
    let _g = store.lock();
    // SAFETY: lock held.
    unsafe { (*store.huge.get()).note_free(span.since) };
}

/// Puts a free span into the cache, merged with its cached neighbours if
/// `merge`, and unmaps whatever that pushed out.
fn cache_span(store: &SegmentStore, s: Span, merge: bool) {
    let evicted = {
        let _g = store.lock();
        // SAFETY: lock held.
        let (merged, evicted) = unsafe { (*store.huge.get()).put(s, merge) };
        if merged.len != s.len {
            // SAFETY: the merged span is ours and cached, behind the lock;
            // its first header survives (purges skip header pages).
            unsafe { (*(merged.base as *mut HugeHeader)).map_len = merged.len };
            // The neighbours' chunks are recorded already: cannot fail.
            let _ = store.segmap.insert(merged.base, merged.len);
        }
        evicted
    };
    if let Some(v) = evicted {
        store.release_span(v);
    }
}

/// Purges warm spans idle for the purge delay (or over the warm bound)
/// and unmaps spans cold for much longer or over the cache's bound.
/// `now` is a recent reading of the monotonic clock.
pub fn maintain(store: &SegmentStore, now: u64) {
    if keys::ENABLED {
        return;
    }
    let delay = store.purge_delay_ns();
    let quiet = delay.saturating_mul(WARM_DELAYS);
    let cold_before = now.saturating_sub(delay.saturating_mul(COLD_AFTER_DELAYS));
    loop {
        let (victim, to_purge) = {
            let _g = store.lock();
            // SAFETY: lock held.
            let c = unsafe { &mut *store.huge.get() };
            let purge_before = if c.quiet_for(now) >= quiet {
                now.saturating_sub(quiet)
            } else {
                0
            };
            match c.pop_victim(CACHE_BYTES_MAX, cold_before) {
                Some(v) => (Some(v), None),
                None => (None, c.pop_to_purge(purge_before, WARM_BYTES_MAX)),
            }
        };
        match (victim, to_purge) {
            (Some(v), _) => store.release_span(v),
            (None, Some(p)) => purge(store, p),
            (None, None) => return,
        }
    }
}

/// Gives a warm span's body back to the kernel (its header page stays)
/// and caches it again as purged. Runs without the lock: the span is out
/// of the cache meanwhile, so nobody else touches it.
fn purge(store: &SegmentStore, mut s: Span) {
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
    // Refused: marked purged all the same, so it is not retried forever.
    s.purged = true;
    cache_span(store, s, true);
}

/// `hardened`: empties a freed span and makes all of it but the header
/// page inaccessible, then keeps it (still recorded, so a stale free is
/// recognised) until newer ones push it out. Unmaps it at once if the
/// kernel refuses the protection.
fn quarantine(store: &SegmentStore, mut s: Span) {
    let body = s.len - PAGE_SIZE;
    let addr = (s.base + PAGE_SIZE) as *mut u8;
    // SAFETY: the span is free and ours; the header page is left alone.
    let emptied = unsafe {
        os::purge(
            NonNull::new_unchecked(addr),
            body,
            crate::os::Purge::DontNeed,
        )
    };
    if emptied == Purged::Zeroed {
        store.decommit(body);
        s.committed = PAGE_SIZE;
    }
    // SAFETY: as above; nothing may use the body from now on.
    if unsafe { sys::mprotect_none(addr, body) }.is_err() {
        store.release_span(s);
        return;
    }
    s.purged = true;
    // Not merged: each span leaves the quarantine on its own turn.
    cache_span(store, s, false);
    loop {
        let v = {
            let _g = store.lock();
            // SAFETY: lock held.
            unsafe { (*store.huge.get()).pop_victim(QUARANTINE_BYTES_MAX, 0) }
        };
        match v {
            Some(v) => store.release_span(v),
            None => return,
        }
    }
}

/// Resizes a huge block in place or by moving its pages. Returns the
/// (possibly moved) block, or null when the caller must allocate, copy
/// and free instead (e.g. `mremap` refused, or the limit).
///
/// # Safety
/// `h` is the header of a live huge block owned by the caller.
pub unsafe fn realloc(store: &SegmentStore, h: *mut HugeHeader, new_size: usize) -> *mut u8 {
    // SAFETY: per contract.
    let (seg, map_len, align, block) =
        unsafe { (h as usize, (*h).map_len, (*h).align, (*h).block) };
    let off = block as usize - seg;
    let Some(need) = new_size.checked_add(off).and_then(chunk_align) else {
        return ptr::null_mut();
    };
    // SAFETY: `seg` is the non-null start of the mapping.
    let base = unsafe { NonNull::new_unchecked(seg as *mut u8) };
    if need <= map_len {
        if map_len - need >= SHRINK_MIN {
            // Under the lock: `for_each_mapping` must not read `map_len`
            // of a mapping that is changing.
            let _g = store.lock();
            // SAFETY: the tail lies past the block's new end.
            unsafe {
                store.segmap.remove(seg, map_len);
                os::unmap(
                    NonNull::new_unchecked((seg + need) as *mut u8),
                    map_len - need,
                );
                let _ = store.segmap.insert(seg, need);
                (*h).map_len = need;
            }
            store.uncharge(map_len - need);
            store.decommit(map_len - need);
            store
                .stats
                .huge_bytes
                .fetch_sub(map_len - need, Ordering::Relaxed);
        }
        return block;
    }
    // With `hardened` the guard page splits the mapping, which `mremap`
    // cannot move: the caller copies, and the old copy is quarantined.
    if keys::ENABLED || align > SEGMENT_SIZE || store.commit(need - map_len).is_err() {
        return ptr::null_mut();
    }
    // Under the lock: the old header vanishes with the move.
    let _g = store.lock();
    // SAFETY: the mapping is the caller's; on success the old range is gone.
    match unsafe { os::remap_aligned(base, map_len, need, SEGMENT_SIZE) } {
        Ok(new) => {
            store.segmap.remove(seg, map_len);
            // Fails only if a 64 KiB map leaf cannot be mapped; the block
            // then still works, but `owns` (and `boundary-checks`) would
            // not recognise it, so this is counted as a failure.
            if store.segmap.insert(new.as_ptr() as usize, need).is_err() {
                store.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            let h = new.as_ptr().cast::<HugeHeader>();
            // SAFETY: the header moved with the pages.
            unsafe {
                (*h).map_len = need;
                (*h).block = new.as_ptr().add(off);
            }
            store
                .stats
                .huge_bytes
                .fetch_add(need - map_len, Ordering::Relaxed);
            store.charge(need - map_len);
            // SAFETY: just set.
            unsafe { (*h).block }
        }
        Err(_) => {
            store.decommit(need - map_len);
            ptr::null_mut()
        }
    }
}
