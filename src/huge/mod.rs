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
//! while huge blocks keep being freed, within a bound that follows the
//! live huge blocks' peak ([`cache`]), are purged once frees pause for
//! [`cache::WARM_DELAYS`] times the instance's purge delay and unmapped
//! after [`cache::COLD_AFTER_DELAYS`] delays, when the cache is full or
//! too large, or on `trim`. The clock is read only here, on paths that
//! already make a system call or move megabytes.
//!
//! With [`TRANSPARENT_HUGE_PAGES`] on (it is off: see there why), huge
//! mappings are advised to use transparent huge pages: a block of
//! several MiB filled by the program then costs a page fault per 2 MiB
//! instead of per 4 KiB (the 2 MiB still have to be zeroed, but the
//! faults were most of the cost). The cost: touching the block's last
//! bytes makes the whole 2 MiB page around them resident, up to 2 MiB
//! past the block's end, still within the whole 4 MiB chunks that the
//! `committed` statistic (and the limit) count for it. The advice covers
//! whole mappings, never part of one: a mapping split into kernel
//! mappings (VMAs) of different flags could not be moved by `mremap`.
//!
//! With `hardened`, the addresses of a freed block are never reused while
//! it is in quarantine, but its memory is ([`quarantine`]): its pages move
//! to a fresh mapping, which the span cache keeps like any freed span,
//! and its own range (up to [`CACHE_BLOCK_MAX`] and not over-aligned;
//! others are unmapped, as without `hardened`) is made inaccessible
//! (`PROT_NONE`, all but the header page, which keeps it visible to `owns`,
//! `for_each_mapping` and the double-free check) and kept, oldest out
//! first, so that a stale pointer faults instead of reaching a later block.
//! Cached spans carry no guard page (merged, one would end up inside a
//! block): a block cut from one gets it then. A realloc that must move
//! takes a new block and moves the old one's pages into it
//! ([`move_pages`]; it copies only if the kernel refuses), and the old
//! block, left empty, is quarantined the same way. When `mprotect` is
//! refused (e.g. `vm.max_map_count`), the span is unmapped instead:
//! protection degrades, the program goes on.
//!
//! Growing a huge block never copies it: it moves into a warm cached span,
//! exchanging pages with the span's front ([`grow`]), or else grows with
//! `mremap` (in place, or moved elsewhere with fresh pages for its tail);
//! a block `mremap` cannot resize (made of several kernel mappings) moves
//! into any cached span or a fresh mapping the same way.

mod cache;

pub use cache::maintain;

use crate::keys;
use crate::os::{self, align_up};
use crate::segment::{slow_tag, Kind, Segment, SegmentHeader, SEGMENT_SIZE, SLICE_SIZE};
use crate::store::{SegmentStore, Span};
use crate::sys::{self, PAGE_SIZE};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

mod grow;
mod invariants;
mod quarantine;

pub use grow::{move_pages, Moved};

pub use invariants::check_cache;

/// Blocks whose mapping is larger than this are unmapped when freed: a
/// program rarely frees and reallocates such blocks in a loop, and keeping
/// them would hold on to a lot of memory for one block.
const CACHE_BLOCK_MAX: usize = 256 << 20;
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
    /// Bytes at the front of the mapping that were resident when the
    /// block was handed out (cut from a warm cached span; 0 for a fresh
    /// mapping): pages worth keeping when data moves in ([`move_pages`]).
    pub warm: usize,
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

/// Transparent huge pages are this large (x86_64).
const HUGE_PAGE: usize = 2 << 20;

/// Whether huge mappings ask for transparent huge pages (`MADV_HUGEPAGE`,
/// and `MADV_COLLAPSE` when a purged span is reused). Off: with the
/// kernel's default `defrag = madvise`, the first huge-page faults after
/// other processes fragmented memory compact it synchronously. In the
/// benchmark suite, with other allocators' processes run in between,
/// malloc-large took 0.9 s per run with the advice in nearly every run
/// (0.12 s when nothing needed compacting), against 0.4-0.55 s without it
/// (109,000 small faults instead of 750): predictable beats lucky.
const TRANSPARENT_HUGE_PAGES: bool = false;

/// With `hardened`, makes the page after the header of a mapping a block
/// is about to take a guard.
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
            warm: 0,
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
    if let Some(b) = cache::alloc_cached(store, need, size, align, instance) {
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
    // Mapping is slow anyway: a good moment for the cache's upkeep (with
    // the new block counted live, so the warm bound shrinks by it).
    count(store, need, true);
    maintain(store, sys::monotonic_ns());
    guard(base);
    if TRANSPARENT_HUGE_PAGES {
        // SAFETY: fresh mapping of `need` bytes.
        unsafe { os::huge_pages(base, need) };
    }
    // SAFETY: fresh mapping of `need` bytes.
    (unsafe { init(base, need, align, instance) }, true)
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
    unsafe { free_span(store, h, true) }
}

/// `hardened`: frees a huge block whose pages [`move_pages`] moved away
/// while none came in their place (a moving `realloc`): only its
/// addresses are left, for the quarantine.
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_emptied(store: &SegmentStore, h: *mut HugeHeader) {
    // SAFETY: per contract.
    unsafe { free_span(store, h, false) }
}

/// [`free`], keeping the block's pages (with `hardened`) if `keep`.
///
/// # Safety
/// As for [`free`].
unsafe fn free_span(store: &SegmentStore, h: *mut HugeHeader, keep: bool) {
    // SAFETY: per contract.
    let (base, len, align) = unsafe {
        if !keys::ENABLED {
            invariants::verify_live(&*h);
        }
        if !(*h).live.swap(false, Ordering::Relaxed) && keys::ENABLED {
            keys::corrupted("double free of a huge block", (*h).block);
        }
        (h as usize, (*h).map_len, (*h).align)
    };
    let live = store.stats.huge_bytes.load(Ordering::Relaxed);
    count(store, len, false);
    let span = Span {
        base,
        len,
        committed: len,
        since: sys::monotonic_ns(),
        warm: len,
    };
    if len > CACHE_BLOCK_MAX || align > SEGMENT_SIZE {
        // Never kept, not even in quarantine: its addresses go back to the
        // kernel (`owns` stops claiming them at once), and an over-aligned
        // mapping would rarely fit another request.
        store.release_span(span);
    } else if keys::ENABLED {
        // Its pages go on, at an address of no live or quarantined block;
        // its own addresses go to quarantine.
        let mut span = span;
        let kept = if keep {
            quarantine::keep_pages(store, &mut span)
        } else {
            None
        };
        quarantine::quarantine(store, span);
        match kept {
            // Merged with the cached span it was mapped beside, if any
            // (not on a kernel that could not move pages out of the two).
            Some(k) => cache::cache_span(store, k, crate::os::moves_mapping_runs()),
            None => return,
        }
    } else {
        cache::cache_span(store, span, true);
    }
    {
        let _g = store.lock();
        // SAFETY: lock held.
        unsafe { (*store.huge.get()).note_live(live) };
    }
    maintain(store, span.since);
    let _g = store.lock();
    // SAFETY: lock held.
    unsafe { (*store.huge.get()).note_free(span.since) };
}

/// Gives back the tail of live huge block `h`'s mapping past `need` bytes.
///
/// # Safety
/// `h` is the header of a live huge block owned by the caller; `need` is
/// whole chunks, less than its mapping's length, and covers the block.
unsafe fn shrink(store: &SegmentStore, h: *mut HugeHeader, need: usize) {
    let seg = h as usize;
    // Under the lock: `for_each_mapping` must not read `map_len` of a
    // mapping that is changing.
    let _g = store.lock();
    // SAFETY: per contract; the tail lies past the block's new end.
    let map_len = unsafe {
        let map_len = (*h).map_len;
        store.segmap.remove(seg, map_len);
        os::unmap(
            NonNull::new_unchecked((seg + need) as *mut u8),
            map_len - need,
        );
        let _ = store.segmap.insert(seg, need);
        (*h).map_len = need;
        map_len
    };
    store.uncharge(map_len - need);
    store.decommit(map_len - need);
    store
        .stats
        .huge_bytes
        .fetch_sub(map_len - need, Ordering::Relaxed);
}

/// Resizes a huge block in place or by moving its pages. Returns the
/// (possibly moved) block, or null when the caller must allocate, copy
/// and free instead (e.g. `mremap` refused, or the limit).
///
/// # Safety
/// `h` is the header of a live huge block owned by the caller.
pub unsafe fn realloc(store: &SegmentStore, h: *mut HugeHeader, new_size: usize) -> *mut u8 {
    // SAFETY: per contract.
    let (seg, map_len, align, block) = unsafe {
        invariants::verify_live(&*h);
        (h as usize, (*h).map_len, (*h).align, (*h).block)
    };
    let off = block as usize - seg;
    let Some(need) = new_size.checked_add(off).and_then(chunk_align) else {
        return ptr::null_mut();
    };
    // SAFETY: `seg` is the non-null start of the mapping.
    let base = unsafe { NonNull::new_unchecked(seg as *mut u8) };
    if need <= map_len {
        if map_len - need >= SHRINK_MIN {
            // SAFETY: per contract; `need` is whole chunks.
            unsafe { shrink(store, h, need) };
        }
        return block;
    }
    if align <= SEGMENT_SIZE {
        // SAFETY: per contract; the mapping is shorter than `need`.
        if let Some(b) = unsafe { grow::grow(store, h, need, grow::Donor::Warm) } {
            return b;
        }
    }
    // With `hardened` the guard page splits the mapping, which `mremap`
    // cannot move: the caller takes a new block and moves the pages into
    // it (`move_pages`), and the old block's addresses are quarantined.
    if keys::ENABLED || align > SEGMENT_SIZE || store.commit(need - map_len).is_err() {
        return ptr::null_mut();
    }
    // Under the lock: the old header vanishes with the move.
    let g = store.lock();
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
            drop(g);
            // E.g. a block made of several kernel mappings (after an
            // exchange), which `mremap` can move but not resize: moving it
            // into another span still saves the copy.
            // SAFETY: per contract; the mapping is still shorter than `need`.
            unsafe { grow::grow(store, h, need, grow::Donor::Any) }.unwrap_or(ptr::null_mut())
        }
    }
}
