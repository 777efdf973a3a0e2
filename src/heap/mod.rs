//! Heaps: one thread's pages, free lists and inbox of remote frees.
//!
//! # Allocation code overview
//!
//! ```text
//! api::alloc::<I>(layout)
//!   heap = I::heap()                     TLS slot, or thread-pointer table
//!   Heap::alloc_small(heap, size)        fast: pages[small_class[size]], pop page.free
//!   Heap::alloc(heap, class)             same through pages[class] (larger sizes)
//!     Heap::alloc_slow(heap, class)      #[cold]
//!       drain_remote                     free blocks other threads sent us
//!       maybe_tick                       now and then (one rdtsc otherwise):
//!                                        send our pending remote frees,
//!                                        purge our free slices after the
//!                                        delay; instance: purge cached
//!                                        segments, collect exited threads'
//!                                        heaps (crate::purge)
//!       Heap::alloc_foreign              other heaps' blocks we freed: see `foreign`
//!       Heap::alloc_from_queue           next page with free or uncarved blocks
//!       Heap::alloc_from_new_page        slices from our segments, or
//!         SegmentStore::alloc_segment    a cached or fresh segment
//!   api::alloc_slow::<I>                 no heap yet: instance::acquire_heap
//!   huge::alloc                          too large or too aligned for a page
//!
//! api::dealloc::<I>(ptr)
//!   entry = slice_entry(ptr)             mask and shift
//!   entry.tag == this thread's heap?
//!     yes: Heap::free_local              push page.local_free, used -= 1
//!          Heap::free_local_slow         page became empty
//!     no:  api::free_other               by the segment's owner:
//!            Heap::free_local_flagged    ours, but a full page or not its first slice
//!            Heap::free_remote           another heap's: kept for reuse (see
//!                                        `foreign`) or sent back (see `remote`)
//!            huge::free                  a huge block
//! ```
//!
//! # Ownership
//! A heap belongs to one thread at a time (see [`crate::instance`] for how
//! threads claim heaps). Only the owner touches its pages, queues and
//! segments, so none of that needs atomics. Other threads only push onto
//! `remote`. Heaps are never freed while the instance lives: when a thread
//! exits, its heap (with its segments and pages) is collected by another
//! thread's slow path ([`Heap::collect`]) and waits, emptied, for a new
//! owner.
//!
//! # Invariants
//! - `pages[c]` is the first page of `queues[c]`, the static empty page, or
//!   the heap's foreign page of class `c`;
//! - every page on `queues[c]` has class `c` and its tag is the heap; a
//!   page of ours with live blocks that is not queued has the slow tag and
//!   is *full* (no free and no uncarved blocks when it left the queue);
//! - `small_class[s]` is `class_of(s)` for every `s <= SMALL_SIZE_MAX`;
//! - a page that empties is released to its segment at once unless it is
//!   the only page of its queue then (it may stay empty when full pages
//!   rejoin the queue behind it; `trim` releases it);
//! - the pages of its segments are queued (tagged with the heap) or full;
//!   the heap's page and segment counters are exact;
//! - every segment on `segments` has `owner == self`.

use crate::keys::Keys;
use crate::purge;
use crate::segment::checks;
use crate::segment::{
    owner_of, page_slices, segment_of, slow_tag, Block, Owner, Page, Segment, SLICES, SLICE_SIZE,
};
use crate::size_class::{class_of_const, Class, CLASS_COUNT};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{compiler_fence, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

mod foreign;
mod free;
mod invariants;
pub mod quarantine;
mod queue;
mod remote;
mod source;
mod trim;

pub use quarantine::Quarantine;
pub use source::Source;

use remote::{Outgoing, Pending, OUT_SLOTS, PENDING_SLOTS};

/// Sizes up to this are served through [`Heap::alloc_small`]: their class
/// is one byte load from the heap's own table.
pub const SMALL_SIZE_MAX: usize = 2047;

/// The class of every size up to [`SMALL_SIZE_MAX`], indexed by the size
/// itself (see [`Heap::alloc_small`]).
const SMALL_CLASSES: [u8; SMALL_SIZE_MAX + 1] = {
    let mut t = [0u8; SMALL_SIZE_MAX + 1];
    let mut s = 0;
    while s <= SMALL_SIZE_MAX {
        t[s] = class_of_const(s) as u8;
        s += 1;
    }
    t
};
const _: () = assert!(CLASS_COUNT <= 256);

/// Carving touches memory: carve about this many bytes of blocks at a time.
const EXTEND_BYTES: usize = 4096;

/// A doubly linked list of pages of one class.
#[derive(Clone, Copy)]
struct Queue {
    first: *mut Page,
    last: *mut Page,
}

/// Per-heap counters, written only by the owner (plain load + store) and
/// read racily by statistics.
pub struct HeapStats {
    /// Pages set up and not yet released.
    pub pages: AtomicUsize,
    /// Segments owned.
    pub segments: AtomicUsize,
    /// Blocks received through `remote` and taken back.
    pub remote_frees: AtomicUsize,
}

/// One thread's allocation state. See the module docs.
#[repr(C)]
pub struct Heap {
    /// What segments and pages know of their heap: they store the heap's
    /// address as an owner pointer, which is this field's.
    pub owner: Owner,
    /// [`SMALL_CLASSES`]: the allocation fast path's size-to-class table,
    /// a copy in every heap so that the fast path indexes it from the heap
    /// pointer it already holds (a static would cost a `lea` for its
    /// address in position-independent code). Never written.
    small_class: [u8; SMALL_SIZE_MAX + 1],
    /// The current page of each class.
    pages: [*mut Page; CLASS_COUNT],
    /// Chains of blocks freed by other threads (see `remote`), pushed with
    /// CAS, taken all at once.
    remote: AtomicPtr<Block>,
    /// Kernel thread id of the owning thread (0: none).
    pub owner_tid: AtomicU32,
    /// The owning thread's `clear_child_tid` address (0: unknown), which
    /// the kernel zeroes when the thread exits (see the `instance` module).
    pub owner_ctid: AtomicUsize,
    /// The instance's fork epoch when the owner last claimed or refreshed
    /// the heap; a heap from an older epoch was inherited through `fork`.
    pub epoch: AtomicU32,
    /// Nesting depth of slow paths the owner is in. A heap inherited
    /// through `fork` with `busy != 0` may be half-updated and is never
    /// reused.
    pub busy: AtomicU32,
    /// The instance that supplies the heap's segments (none for the
    /// empty heap, which never reaches a path that asks).
    source: Option<NonNull<dyn Source>>,
    /// Keys encoding the links of `remote` (`hardened`).
    pub keys: Keys,
    queues: [Queue; CLASS_COUNT],
    /// Owned segments, linked through `Segment::next/prev`.
    segments: *mut Segment,
    /// Next heap in the instance's registry (immutable once published).
    pub next_heap: *mut Heap,
    /// Chains of remote frees into other heaps' pages, not yet sent.
    pending: [Pending; PENDING_SLOTS],
    /// Bit `i` set: `pending[i]` holds a chain. Written by the owner
    /// only, read by sweeps ([`Heap::has_work`]): an atomic used with plain
    /// loads and stores.
    pending_mask: AtomicU32,
    /// Bytes of other heaps' blocks freed since the last
    /// [`Heap::flush_remote`] (see [`remote::HELD_MAX`]).
    held: usize,
    /// Outgoing batches of messages, one per recent destination heap.
    out: [Outgoing; OUT_SLOTS],
    /// Bit `i` set: `out[i]` holds a batch (written and read as
    /// `pending_mask`).
    out_mask: AtomicU32,
    /// Recently freed blocks and the zero-size region (`hardened`).
    pub quarantine: Quarantine,
    /// Time-stamp counter of the heap's last look at the clock
    /// ([`crate::purge::tick_due`]).
    tick_cycles: u64,
    /// When the free slices of the heap's segments are purged (ns; 0: no
    /// free slice waits).
    purge_at: u64,
    /// Counters.
    pub stats: HeapStats,
    /// Bit `c` set: `foreign[c]` may hold blocks (written by the owner
    /// only, read by sweeps: used as `pending_mask` is).
    foreign_mask: AtomicU32,
    /// Bit `c` set: a slow path took from `foreign[c]` since the last tick.
    foreign_active: u32,
    /// Blocks of other heaps this thread freed, per small class, for its
    /// own allocations (see `foreign`).
    foreign: [Page; foreign::FOREIGN_CLASSES],
}

/// A `Sync` wrapper for the immutable statics below.
#[repr(transparent)]
pub struct Frozen<T>(UnsafeCell<T>);
// SAFETY: the wrapped statics are never written (every write path starts
// by checking that the heap is not the empty one).
unsafe impl<T> Sync for Frozen<T> {}

impl<T> Frozen<T> {
    /// The wrapped value's address.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// The page every empty queue points to: no free blocks, ever.
static EMPTY_PAGE: Frozen<Page> = Frozen(UnsafeCell::new(Page::empty()));

/// The heap a thread starts with: every class points at `EMPTY_PAGE`, so
/// the first allocation falls into the slow path, which claims a real heap.
pub static EMPTY_HEAP: Frozen<Heap> = Frozen(UnsafeCell::new(Heap::new(None)));

/// Address of [`EMPTY_HEAP`].
#[inline(always)]
pub const fn empty_heap() -> *mut Heap {
    EMPTY_HEAP.get()
}

impl Heap {
    /// A heap with no pages, drawing segments from `source`.
    pub const fn new(source: Option<NonNull<dyn Source>>) -> Heap {
        Heap {
            owner: Owner {
                tp: AtomicUsize::new(0),
            },
            small_class: SMALL_CLASSES,
            pages: [EMPTY_PAGE.get(); CLASS_COUNT],
            remote: AtomicPtr::new(ptr::null_mut()),
            owner_tid: AtomicU32::new(0),
            owner_ctid: AtomicUsize::new(0),
            epoch: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            source,
            keys: Keys { k: 0 },
            queues: [Queue {
                first: ptr::null_mut(),
                last: ptr::null_mut(),
            }; CLASS_COUNT],
            segments: ptr::null_mut(),
            next_heap: ptr::null_mut(),
            pending: [Pending::EMPTY; PENDING_SLOTS],
            pending_mask: AtomicU32::new(0),
            held: 0,
            out: [Outgoing::EMPTY; OUT_SLOTS],
            out_mask: AtomicU32::new(0),
            quarantine: Quarantine::new(),
            tick_cycles: 0,
            purge_at: 0,
            stats: HeapStats {
                pages: AtomicUsize::new(0),
                segments: AtomicUsize::new(0),
                remote_frees: AtomicUsize::new(0),
            },
            foreign_mask: AtomicU32::new(0),
            foreign_active: 0,
            foreign: [const { Page::empty() }; foreign::FOREIGN_CLASSES],
        }
    }

    /// Pops a block of class `c`. Null if the current page has none.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap).
    #[inline(always)]
    pub unsafe fn alloc(h: *mut Heap, c: Class) -> *mut u8 {
        // SAFETY: the owner may read its pages; `c < CLASS_COUNT`.
        unsafe { Heap::pop(*(*h).pages.get_unchecked(c)) }
    }

    /// Pops a block for `size <= SMALL_SIZE_MAX` bytes: the allocation fast
    /// path. Null if the current page has none.
    ///
    /// 7 instructions: load the class byte, load the page, load its free
    /// list head, test, branch, load the link, store it. `used` is not
    /// touched (see `Page`). A table of pages per 16-byte granule (one
    /// load fewer on the chain, the table this one replaced) needs the
    /// granule index first, a `lea` and a shift: one instruction more.
    ///
    /// # Safety
    /// As for [`Heap::alloc`]; `size <= SMALL_SIZE_MAX`.
    #[inline(always)]
    pub unsafe fn alloc_small(h: *mut Heap, size: usize) -> *mut u8 {
        // SAFETY: per contract.
        unsafe { Heap::pop(Heap::small_page(h, size)) }
    }

    /// The current page for `size <= SMALL_SIZE_MAX` bytes: its class from
    /// the heap's byte table, then the class's page.
    ///
    /// # Safety
    /// As for [`Heap::alloc`]; `size <= SMALL_SIZE_MAX`.
    #[inline(always)]
    pub(super) unsafe fn small_page(h: *mut Heap, size: usize) -> *mut Page {
        debug_assert!(size <= SMALL_SIZE_MAX);
        // SAFETY: per contract the size is in the table, whose entries are
        // classes, so the class indexes `pages`.
        unsafe {
            let c = *(*h).small_class.get_unchecked(size) as usize;
            *(*h).pages.get_unchecked(c)
        }
    }

    /// Pops the first block of `page.free`, or null.
    ///
    /// # Safety
    /// `page` is a page of the calling thread's heap, or the empty page.
    #[inline(always)]
    unsafe fn pop(page: *mut Page) -> *mut u8 {
        // SAFETY: per contract.
        unsafe {
            let b = (*page).free;
            if b.is_null() {
                return core::ptr::null_mut();
            }
            let next = Block::next(b, (*page).keys);
            checks::check_link(page, b, next);
            (*page).free = next;
            // The next pop reads `next`'s link: start fetching its line
            // now, while the caller uses `b` (a prefetch never faults).
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(next.cast());
            checks::check_junk(page, b, next);
            checks::clear_link(b);
            b.cast()
        }
    }

    /// Whether `h` is the shared empty heap (no thread's real heap).
    #[inline(always)]
    pub fn is_empty_heap(h: *mut Heap) -> bool {
        h == empty_heap()
    }

    /// The heap whose [`Heap::owner`] `o` is (a segment's owner or a
    /// page's tag that is not `slow_tag()`).
    #[inline(always)]
    pub fn of(o: *mut Owner) -> *mut Heap {
        o.cast()
    }

    /// `h` as the owner pointer segments and pages store.
    #[inline(always)]
    pub fn as_owner(h: *mut Heap) -> *mut Owner {
        h.cast()
    }

    fn source(&self) -> &dyn Source {
        // SAFETY: real heaps point at their instance's static state; the
        // empty heap never gets here (its pages have no blocks to free and
        // every allocation from it claims a real heap first).
        unsafe { self.source.unwrap_unchecked().as_ref() }
    }

    /// Marks the start (`+1`) and end (`-1`) of a slow path, for fork
    /// safety: a fork child never reuses a heap whose owner was inside one.
    /// The fences keep the compiler from moving heap updates outside.
    fn set_busy(&self, enter: bool) {
        compiler_fence(Ordering::SeqCst);
        let depth = self.busy.load(Ordering::Relaxed);
        let depth = if enter { depth + 1 } else { depth - 1 };
        self.busy.store(depth, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// The allocation slow path: the current page of class `c` is empty.
    /// Returns null only if no memory could be had.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap.
    #[cold]
    pub unsafe fn alloc_slow(h: *mut Heap, c: Class) -> *mut u8 {
        // SAFETY: per contract.
        unsafe {
            (*h).set_busy(true);
            Heap::upkeep(h);
            let mut b = Heap::alloc_foreign(h, c);
            if b.is_null() {
                b = Heap::alloc_from_queue(h, c);
            }
            if b.is_null() {
                b = Heap::alloc_from_new_page(h, c);
            }
            Heap::verify(h, c, (*h).pages[c]);
            (*h).set_busy(false);
            b
        }
    }

    /// What every slow path of the owner does: take the remote frees
    /// received and, once a tick, send the ones pending and purge (see
    /// `trim`).
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap, inside `set_busy`.
    unsafe fn upkeep(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            if (*h).held >= remote::HELD_MAX {
                Heap::flush_remote(h);
            }
            Heap::drain_remote(h);
            Heap::maybe_tick(h);
        }
    }

    /// Takes a block from the first page of the queue that has one,
    /// carving more blocks if needed; full pages leave the queue.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `c < CLASS_COUNT`.
    unsafe fn alloc_from_queue(h: *mut Heap, c: Class) -> *mut u8 {
        // SAFETY: the owner walks its own queue.
        unsafe {
            loop {
                let page = (*h).queues[c].first;
                if page.is_null() {
                    return ptr::null_mut();
                }
                if (*page).free.is_null() && !(*page).collect_local() {
                    let max = (EXTEND_BYTES / (*page).block_size as usize).max(1) as u32;
                    (*page).extend(max);
                }
                if !(*page).free.is_null() {
                    return Heap::alloc(h, c);
                }
                // Full: it rejoins the queue when one of its blocks is freed.
                Heap::unlink(h, page);
            }
        }
    }

    /// Sets up a new page of class `c` and takes its first block.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap; `c < CLASS_COUNT`.
    unsafe fn alloc_from_new_page(h: *mut Heap, c: Class) -> *mut u8 {
        let n = page_slices(c);
        // SAFETY: the owner manages its segments.
        unsafe {
            // Slices still holding memory first (no page faults, and the
            // ones idle longest are left to be purged), then any.
            let (mut seg, mut head) = Heap::find_span(h, n, true);
            if head.is_none() {
                (seg, head) = Heap::find_span(h, n, false);
            }
            let head = match head {
                Some(i) => i,
                None => {
                    seg = (*h).source().alloc_segment();
                    if seg.is_null() {
                        return ptr::null_mut();
                    }
                    (*seg)
                        .header
                        .owner
                        .store(Heap::as_owner(h), Ordering::Release);
                    Heap::link_segment(h, seg);
                    match (*seg).find_span(n) {
                        Some(i) => i,
                        None => return ptr::null_mut(), // unreachable: n < SLICES
                    }
                }
            };
            let fresh = (*seg).clean_slices(head, n) * SLICE_SIZE;
            if (*h).source().store().commit(fresh).is_err() {
                return ptr::null_mut();
            }
            let page = Segment::setup_page(seg, head, n, c);
            bump(&(*h).stats.pages, 1);
            Heap::push_front(h, page);
            Heap::alloc_from_queue(h, c)
        }
    }

    /// The first of the heap's segments with `n` free slices in a row
    /// (only among slices that still hold memory if `warm`), and where.
    ///
    /// # Safety
    /// The calling thread owns `h`; `1 <= n < SLICES`.
    unsafe fn find_span(h: *mut Heap, n: usize, warm: bool) -> (*mut Segment, Option<usize>) {
        // SAFETY: the owner reads its segments.
        unsafe {
            let mut seg = (*h).segments;
            while !seg.is_null() {
                let among = if warm { (*seg).dirty_slices } else { u64::MAX };
                if let Some(i) = (*seg).find_span_in(n, among) {
                    return (seg, Some(i));
                }
                seg = (*seg).next;
            }
            (seg, None)
        }
    }

    /// Forgets all pages and segments (after teardown unmapped them), keeping
    /// the heap's identity fields.
    ///
    /// # Safety
    /// Nobody may use the heap's old pages any more.
    pub unsafe fn reset(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            let fresh = Heap::new((*h).source);
            (*h).pages = fresh.pages;
            (*h).queues = fresh.queues;
            (*h).segments = ptr::null_mut();
            (*h).remote.store(ptr::null_mut(), Ordering::Relaxed);
            (*h).quarantine = fresh.quarantine;
            (*h).purge_at = 0;
            (*h).pending = [Pending::EMPTY; PENDING_SLOTS];
            (*h).pending_mask.store(0, Ordering::Relaxed);
            (*h).held = 0;
            (*h).out = [Outgoing::EMPTY; OUT_SLOTS];
            (*h).out_mask.store(0, Ordering::Relaxed);
            (*h).stats.pages.store(0, Ordering::Relaxed);
            (*h).stats.segments.store(0, Ordering::Relaxed);
            (*h).foreign_mask.store(0, Ordering::Relaxed);
            (*h).foreign_active = 0;
            (*h).foreign = fresh.foreign;
        }
    }
}

/// Adds `n` (wrapping: `usize::MAX` subtracts one) to an owner-written
/// counter without an atomic read-modify-write.
#[inline]
fn bump(counter: &AtomicUsize, n: usize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
