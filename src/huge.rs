//! Huge blocks: anything larger than the largest size class, or aligned
//! beyond a slice, gets a mapping of its own.
//!
//! ```text
//!  align <= 4 KiB:    seg |hdr|block ........................|
//!  align <= 4 MiB:    seg |hdr| ... |block (at seg + align) ..|
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
//! Freed huge mappings up to [`CACHE_BLOCK_MAX`] are kept in a small cache
//! (programs that repeatedly allocate blocks of a few MiB would otherwise
//! pay a `mmap`, page faults and a `munmap` each time). Growing a huge block
//! moves its pages with `mremap` instead of copying them.

use crate::harden;
use crate::os::{self, align_up};
use crate::segment::{Kind, SegmentHeader, SEGMENT_SIZE};
use crate::store::SegmentStore;
use crate::sys::PAGE_SIZE;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// Mappings larger than this are never cached.
const CACHE_BLOCK_MAX: usize = 32 << 20;
/// Total bytes the cache may hold.
const CACHE_BYTES_MAX: usize = 64 << 20;
/// Entries in the cache.
const CACHE_ENTRIES: usize = 8;
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
const LEAD_PAGES: usize = if harden::ENABLED { 2 } else { 1 };

/// Huge mapping lengths are whole segments (4 MiB): the segment map records
/// ownership per 4 MiB chunk, so a mapping that ended mid-chunk would make
/// `owns` claim whatever the kernel maps after it. The padding costs address
/// space only.
fn chunk_align(n: usize) -> Option<usize> {
    align_up(n, SEGMENT_SIZE)
}

/// Offset of the block from the mapping start for a given alignment.
fn block_offset(align: usize) -> usize {
    align.clamp(LEAD_PAGES * PAGE_SIZE, SEGMENT_SIZE)
}

/// With `hardened`, makes the page after a fresh mapping's header a guard.
fn guard(base: NonNull<u8>) {
    if harden::ENABLED {
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

#[derive(Clone, Copy)]
struct Entry {
    base: *mut u8,
    len: usize,
}

/// Recently freed huge mappings, still mapped and recorded in the segmap.
pub struct HugeCache {
    entries: [Entry; CACHE_ENTRIES],
    count: usize,
    bytes: usize,
}

impl HugeCache {
    /// An empty cache.
    pub const fn new() -> Self {
        HugeCache {
            entries: [Entry {
                base: ptr::null_mut(),
                len: 0,
            }; CACHE_ENTRIES],
            count: 0,
            bytes: 0,
        }
    }

    /// Removes and returns a mapping of at least `need` bytes and not much
    /// more (at most twice), so big mappings are not wasted on small blocks.
    fn take(&mut self, need: usize) -> Option<Entry> {
        let i = (0..self.count)
            .find(|&i| self.entries[i].len >= need && self.entries[i].len / 2 <= need)?;
        let e = self.entries[i];
        self.count -= 1;
        self.entries[i] = self.entries[self.count];
        self.bytes -= e.len;
        Some(e)
    }

    /// Adds a mapping; returns the mapping that must be unmapped instead
    /// (the new one if it does not fit, or the oldest evicted one).
    fn put(&mut self, e: Entry) -> Option<Entry> {
        if e.len > CACHE_BLOCK_MAX {
            return Some(e);
        }
        let mut evicted = None;
        if self.count == CACHE_ENTRIES || self.bytes + e.len > CACHE_BYTES_MAX {
            // Evict the oldest, but only if that makes room.
            let old = self.entries[0];
            if self.bytes - old.len + e.len > CACHE_BYTES_MAX {
                return Some(e);
            }
            self.entries.copy_within(1..self.count, 0);
            self.count -= 1;
            self.bytes -= old.len;
            evicted = Some(old);
        }
        self.entries[self.count] = e;
        self.count += 1;
        self.bytes += e.len;
        evicted
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
                owner: AtomicPtr::new(crate::heap::HUGE_OWNER.get()),
            },
            map_len,
            block,
            align,
            live: AtomicBool::new(true),
        });
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
    if align <= SEGMENT_SIZE {
        let cached = {
            let _g = store.lock();
            // SAFETY: lock held.
            unsafe { (*store.huge.get()).take(need) }
        };
        if let Some(e) = cached {
            // SAFETY: cached mappings are idle and ours.
            let b = unsafe { init(NonNull::new_unchecked(e.base), e.len, align, instance) };
            count(store, e.len, true);
            return (b, false);
        }
        if store.commit(need).is_err() {
            return (ptr::null_mut(), false);
        }
        let Some(base) = store.map(need) else {
            store.decommit(need);
            return (ptr::null_mut(), false);
        };
        count(store, need, true);
        guard(base);
        // SAFETY: fresh mapping of `need` bytes.
        (unsafe { init(base, need, align, instance) }, true)
    } else {
        (alloc_over_aligned(store, size, align, instance), true)
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

/// Frees a huge block: into the cache, or back to the kernel.
///
/// # Safety
/// `h` is the header of a live huge block of this store that nobody uses
/// any more.
pub unsafe fn free(store: &SegmentStore, h: *mut HugeHeader) {
    // SAFETY: per contract.
    let (base, len, align) = unsafe {
        if !(*h).live.swap(false, Ordering::Relaxed) && harden::ENABLED {
            harden::corrupted("double free of a huge block", (*h).block);
        }
        (
            NonNull::new_unchecked(h.cast::<u8>()),
            (*h).map_len,
            (*h).align,
        )
    };
    count(store, len, false);
    let victim = if align <= SEGMENT_SIZE {
        let _g = store.lock();
        // SAFETY: lock held.
        unsafe {
            (*store.huge.get()).put(Entry {
                base: base.as_ptr(),
                len,
            })
        }
    } else {
        Some(Entry {
            base: base.as_ptr(),
            len,
        })
    };
    if let Some(e) = victim {
        store.decommit(e.len);
        // SAFETY: the victim left (or never entered) the cache; it is idle.
        unsafe { store.unmap(NonNull::new_unchecked(e.base), e.len) };
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
    if align > SEGMENT_SIZE || store.commit(need - map_len).is_err() {
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

/// Unmaps every cached huge mapping.
pub fn drain_cache(store: &SegmentStore) {
    loop {
        let e = {
            let _g = store.lock();
            // SAFETY: lock held.
            let c = unsafe { &mut *store.huge.get() };
            if c.count == 0 {
                return;
            }
            c.count -= 1;
            c.bytes -= c.entries[c.count].len;
            c.entries[c.count]
        };
        store.decommit(e.len);
        // SAFETY: out of the cache, idle.
        unsafe { store.unmap(NonNull::new_unchecked(e.base), e.len) };
    }
}
