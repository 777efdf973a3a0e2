//! Pages: runs of slices carved into blocks of one size class, and the
//! free lists that thread their blocks. A page's metadata lives in its
//! segment's header slice (see [`super::Segment`]).

use super::{checks, slow_tag, Owner, Segment, SEGMENT_SIZE, SLICE_SIZE};
use crate::keys::{self, Keys};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// A free block's link to the next free block.
#[repr(C)]
pub struct Block {
    next: *mut Block,
}

impl Block {
    /// The block after `b` in a free list whose links are encoded with
    /// `keys` (identity without `hardened`).
    ///
    /// # Safety
    /// `b` must be a block on such a free list (its first word is the link).
    #[inline(always)]
    pub unsafe fn next(b: *mut Block, keys: Keys) -> *mut Block {
        // SAFETY: per contract.
        let stored = unsafe { (*b).next } as usize;
        ptr::with_exposed_provenance_mut(keys.decode(stored))
    }

    /// Links `b` to `next`, encoded with `keys`.
    ///
    /// # Safety
    /// `b` must be a free block owned by the caller.
    #[inline(always)]
    pub unsafe fn set_next(b: *mut Block, next: *mut Block, keys: Keys) {
        // SAFETY: per contract.
        unsafe { (*b).next = ptr::without_provenance_mut(keys.encode(next.expose_provenance())) }
    }
}

/// Page metadata, kept in the segment header (not in the page itself, so
/// the page's memory can be purged and its blocks overrun without losing
/// it).
///
/// Two free lists, as in mimalloc: allocation pops `free`, local frees push
/// `local_free`, and when `free` runs dry the slow path moves `local_free`
/// over. Keeping freed blocks off `free` keeps `free_is_zero` true for a
/// fresh page's carved blocks without a store on every free.
///
/// `used` counts the blocks *not* on `local_free`: blocks handed out plus
/// blocks on `free`. Refilling `free` (carving, or taking `local_free`)
/// adds to it and a free subtracts, so the allocation fast path does not
/// touch it. The page is empty when `used` reaches 0 (then `free` is empty
/// too); only the first page of its class's queue, the one the fast path
/// pops, has a non-empty `free` (it keeps it while the heap's foreign page
/// of the class serves the fast path instead: see `heap::foreign`).
///
/// Invariants (checked by [`Page::check`]):
/// - `used + len(local_free) == capacity <= reserved`, `len(free) <= used`;
/// - every block on the lists lies in the carved part of the page, on a
///   block boundary, and appears once;
/// - blocks freed by other threads are counted in `used` until the owner
///   takes them from its inbox and splices them onto `local_free`;
/// - `free_is_zero` implies every block on `free` is zero past its link word;
/// - `tag` is the owning heap while the page is on its heap's queue, else
///   [`slow_tag`] (see [`Page::tag`]).
///
/// Two cache lines: the first holds what any thread reads (the tag, the
/// keys and sizes a remote free needs), written by the owner only when the
/// page is set up, carved or (un)queued; the second what the owner writes
/// on every allocation and local free. In one line, a consumer freeing a
/// producer's blocks read the line the producer wrote on every pair, and
/// it went back and forth between their cores.
#[repr(C, align(128))]
pub struct Page {
    /// Keys encoding this page's free-list links (`hardened`).
    pub keys: Keys,
    /// Block size in bytes (a class size); also set in the entries of a
    /// page's other slices, for `usable_size`.
    pub block_size: u32,
    /// Blocks carved so far (carving is lazy: memory is touched on demand).
    pub capacity: u16,
    /// Blocks that fit in the page.
    pub reserved: u16,
    /// The owning heap if this entry is the head of a page on its heap's
    /// queue, else [`slow_tag`]: the free fast path compares it with the
    /// calling thread's heap, which tests ownership, "not full" and "first
    /// slice of its page" in one compare. Written by the owner, read by any
    /// thread. At the same offset as [`SegmentHeader::owner`](super::SegmentHeader::owner), so the
    /// (never used) entry of slice 0 reads as the segment's owner: for a
    /// huge segment, [`HUGE_OWNER`](super::owner::HUGE_OWNER), which is nobody's heap.
    pub tag: AtomicPtr<Owner>,
    /// Size class of the blocks.
    pub class: u8,
    /// Slices the page spans (0 for a slice that is not a page head).
    pub slice_count: u8,
    /// The page's memory was zero when the page was set up.
    pub fresh: bool,
    /// Neighbours in the heap's queue for this class.
    pub next: *mut Page,
    /// See `next`.
    pub prev: *mut Page,
    /// Up to the second line.
    pub(super) _line: [usize; 2],
    /// Free blocks, popped by the owner without atomics (the second line
    /// starts here).
    pub free: *mut Block,
    /// Blocks freed by the owner (or spliced from remote frees) since
    /// `free` was last refilled.
    pub local_free: *mut Block,
    /// Blocks not on `local_free` (see above).
    pub used: u32,
    /// Every block on `free` is zero except its link (fresh memory).
    pub free_is_zero: bool,
}

impl Page {
    /// Whether the page (a page head) is on its heap's queue; a page with
    /// live blocks that is not is *full*: it had no free block when the
    /// allocator last looked.
    #[inline]
    pub fn in_queue(&self) -> bool {
        self.tag.load(Ordering::Relaxed) != slow_tag()
    }

    /// Sets the tag (owner only): `h` when the page joins `h`'s queue,
    /// [`slow_tag`] when it leaves.
    #[inline]
    pub fn set_tag(&self, h: *mut Owner) {
        self.tag.store(h, Ordering::Relaxed);
    }

    /// A page with no blocks, for heaps that have no page of a class yet:
    /// the allocation fast path finds `free` null and takes the slow path.
    pub const fn empty() -> Page {
        Page {
            free: ptr::null_mut(),
            local_free: ptr::null_mut(),
            tag: AtomicPtr::new(slow_tag()),
            used: 0,
            block_size: 0,
            capacity: 0,
            reserved: 0,
            class: 0,
            slice_count: 0,
            free_is_zero: false,
            fresh: false,
            keys: Keys { k: 0 },
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            _line: [0; 2],
        }
    }

    /// The segment holding this page's metadata.
    #[inline(always)]
    pub fn segment(page: *mut Page) -> *mut Segment {
        (page as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
    }

    /// First byte of the first block: the start of the page's first slice,
    /// computed from where this entry sits in its segment's `pages` array.
    #[inline]
    pub fn start(&self) -> *mut u8 {
        let me = self as *const Page as usize;
        let seg = me & !(SEGMENT_SIZE - 1);
        let slice = (me - seg) / core::mem::size_of::<Page>();
        (seg + slice * SLICE_SIZE) as *mut u8
    }

    /// Whether `p` is the start of a carved block of this page.
    pub fn is_block_start(&self, p: *mut u8) -> bool {
        let off = (p as usize).wrapping_sub(self.start() as usize);
        self.slice_count != 0
            && off.is_multiple_of(self.block_size as usize)
            && off / (self.block_size as usize) < self.capacity as usize
    }

    /// Moves `local_free` onto the empty `free` list; returns whether there
    /// was anything to move.
    #[inline]
    pub fn collect_local(&mut self) -> bool {
        debug_assert!(self.free.is_null());
        if self.local_free.is_null() {
            return false;
        }
        self.free = self.local_free;
        self.local_free = ptr::null_mut();
        self.free_is_zero = false;
        // Every block is now handed out or on `free`.
        self.used = self.capacity as u32;
        true
    }

    /// Blocks handed out and not freed: `used` minus the blocks on `free`
    /// (a walk of `free`; for trimming, not for hot paths).
    ///
    /// # Safety
    /// The caller owns the page.
    pub unsafe fn live(&self) -> u32 {
        let mut n = 0;
        let mut b = self.free;
        while !b.is_null() {
            n += 1;
            // SAFETY: the owner's free list is well formed.
            b = unsafe { Block::next(b, self.keys) };
        }
        self.used - n
    }

    /// Carves up to `max_new` more blocks onto the free list; returns how
    /// many. Blocks are carved in address order so a fresh page is used
    /// front to back.
    ///
    /// # Safety
    /// The caller owns the page (its heap's thread) and `free` is empty.
    pub unsafe fn extend(&mut self, max_new: u32) -> u32 {
        debug_assert!(self.free.is_null());
        let n = ((self.reserved - self.capacity) as u32).min(max_new);
        if n == 0 {
            return 0;
        }
        let bs = self.block_size as usize;
        let keys = self.keys;
        // SAFETY: blocks capacity..capacity+n lie inside the page's slices.
        unsafe {
            let first = self.start().add(self.capacity as usize * bs);
            let mut b = first;
            for _ in 1..n {
                let next = b.add(bs);
                Block::set_next(b.cast(), next.cast(), keys);
                checks::seal_freed(b, bs);
                b = next;
            }
            Block::set_next(b.cast(), ptr::null_mut(), keys);
            checks::seal_freed(b, bs);
            self.free = first.cast();
        }
        self.capacity += n as u16;
        self.used += n;
        // Hardened mode writes canaries into fresh blocks.
        self.free_is_zero = self.fresh && !keys::ENABLED;
        n
    }

    /// Re-checks the counting identities by walking the free list. Returns
    /// a description of the first violation.
    ///
    /// # Safety
    /// The caller owns the page and its free list is well formed enough to
    /// walk (this is what is being checked: a loop is caught by the count).
    pub unsafe fn check(&self) -> Result<(), &'static str> {
        if self.capacity > self.reserved {
            return Err("capacity exceeds reserved");
        }
        let mut lens = [0u32; 2];
        for (list, len) in [self.free, self.local_free].into_iter().zip(&mut lens) {
            let mut b = list;
            while !b.is_null() {
                if !self.is_block_start(b.cast()) {
                    return Err("free list holds a pointer that is not a block of the page");
                }
                *len += 1;
                if *len > self.capacity as u32 {
                    return Err("free lists are longer than the page (cycle or duplicate)");
                }
                // SAFETY: `b` was just verified to be a block of this page.
                b = unsafe { Block::next(b, self.keys) };
            }
        }
        if lens[1] + self.used != self.capacity as u32 || lens[0] > self.used {
            return Err("used + local_free != capacity, or free longer than used");
        }
        Ok(())
    }
}
