//! Segments and pages: where blocks live, and how a pointer finds its page.
//!
//! A *segment* is a [`SEGMENT_SIZE`]-aligned mapping of [`SEGMENT_SIZE`]
//! bytes cut into [`SLICES`] slices of [`SLICE_SIZE`]. Slice 0 holds the
//! segment's metadata; the others are grouped into *pages*: runs of one or
//! more slices carved into blocks of a single size class.
//!
//! ```text
//!  segment (4 MiB, aligned)                                   huge segment
//!  +-----------+--------+--------+----------------+----+      +--------+-------------------+
//!  | header    | page   | page   | page (3 slices)|free|      | header | one block ...     |
//!  | pages[64] | 16 B   | 48 B   | 256 KiB blocks |    |      |        |                   |
//!  +-----------+--------+--------+----------------+----+      +--------+-------------------+
//!  slice 0      1        2        3  4  5          6..63
//! ```
//!
//! From any block pointer `p`, its segment is `(p - 1) & !(SEGMENT_SIZE - 1)`
//! (the `- 1` lets a huge block start exactly one segment size after its
//! header, which very large alignments need), and its page is
//! `pages[head_of[(p - segment) / SLICE_SIZE]]`: O(1), no lookup table
//! outside the segment. Whether a pointer is a segment of *this* instance
//! is answered by the instance's [`crate::segmap`], not by reading memory.
//!
//! A small segment belongs to one heap (its `owner`), which alone touches
//! its page metadata; other threads only read `owner` to decide whether a
//! free is remote.

pub mod checks;
mod owner;
mod page;

pub use owner::{slow_tag, Owner};
pub use page::{Block, Page};

use crate::keys::Keys;
use crate::os::Purged;
use crate::size_class::{class_size, Class};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

/// log2 of [`SEGMENT_SIZE`].
pub const SEGMENT_SHIFT: u32 = 22;
/// Size and alignment of a segment: 4 MiB.
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// log2 of [`SLICE_SIZE`].
pub const SLICE_SHIFT: u32 = 16;
/// The unit pages are made of: 64 KiB.
pub const SLICE_SIZE: usize = 1 << SLICE_SHIFT;
/// Slices per segment; slice 0 is the metadata.
pub const SLICES: usize = SEGMENT_SIZE / SLICE_SIZE;
/// log2 of [`ENTRY_SIZE`].
pub const ENTRY_SHIFT: u32 = 7;
/// Bytes of a slice's metadata entry ([`Page`]): two cache lines.
pub const ENTRY_SIZE: usize = 1 << ENTRY_SHIFT;
/// Blocks up to this size get single-slice pages (at least 8 blocks each).
const SINGLE_SLICE_MAX_BLOCK: usize = SLICE_SIZE / 8;
/// Larger blocks get pages of up to this many blocks...
const BLOCKS_PER_LARGE_PAGE: usize = 8;
/// ... spanning at most this many slices (128 KiB), or one block's worth
/// if a block is larger: blocks over 64 KiB get a page each.
///
/// Why: a page holds on to every block it ever handed out (a freed block
/// stays resident until the whole page empties and its slices are
/// purged), so a page of seven 512 KiB blocks with one of them live kept
/// up to 4 MiB resident. Random replacement of 1000 blocks from 16 B to
/// 1 MiB (the mixed-sizes benchmark, 27 to 53 MiB live) peaked at 138 MiB
/// with pages of eight blocks up to a whole segment, and at 76 MiB with
/// this cap, and ran faster (fewer pages faulted in). Caps of 4 or 8
/// slices peaked at 79 and 83 MiB, and the collections benchmark, whose
/// peak is sensitive to where its tables land, rose from 7.8 MiB to 10.1
/// (8.4 with this cap); so did it with pages of eight blocks kept for
/// blocks up to 64 KiB, and with extra slices to shrink a page's unused
/// tail. That tail costs no memory while untouched, but it counts as
/// committed: up to 48 KiB of a 128 KiB page (one 80 KiB block), 32 KiB
/// for two 48 KiB blocks, 8 KiB for five of 24 KiB.
const LARGE_PAGE_MAX_SLICES: usize = 2;

/// Tells small segments from huge ones, and both from garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Pages of size-classed blocks.
    Small = 0x454d_5331, // "EMS1"
    /// One huge block.
    Huge = 0x454d_4831, // "EMH1"
    /// The zero-size region of a heap (`hardened`, see `harden::zero`).
    Zero = 0x454d_5a31, // "EMZ1"
}

/// The common prefix of small and huge segments: what a free needs to
/// decide where a block goes.
#[repr(C)]
pub struct SegmentHeader {
    /// Which layout follows: a [`Kind`] as `u32` (kept raw so that reading
    /// a header of unknown origin is never undefined behaviour).
    pub kind: u32,
    /// The owning instance's address: its identity (checked with
    /// `boundary-checks`).
    pub instance: usize,
    /// The heap that owns this segment's pages ([`HUGE_OWNER`](owner::HUGE_OWNER) for huge
    /// segments, null for segments in the instance cache).
    pub owner: AtomicPtr<Owner>,
}

/// The segment containing block `p`.
#[inline(always)]
pub fn segment_of(p: *mut u8) -> *mut SegmentHeader {
    ((p as usize).wrapping_sub(1) & !(SEGMENT_SIZE - 1)) as *mut SegmentHeader
}

/// A small segment: header, slice bookkeeping and page metadata, all in
/// slice 0.
///
/// The metadata entry of slice `i` ([`Segment::entry`]) sits
/// `i * ENTRY_SIZE` (128) bytes from the segment start, so the free fast
/// path finds it from a block address with a shift and a mask. Slice 0 holds no page; its place
/// is taken by the fields before `pages` (whose [`SegmentHeader::owner`]
/// doubles as entry 0's [`Page::tag`]).
///
/// Invariants (checked by [`Segment::check`]):
/// - slice 0 is never free and always dirty; `lazy_slices` are free and
///   dirty; `purge_mark` holds only free slices;
/// - the used slices are covered by pages: a head entry with
///   `slice_count == n == page_slices(class)`, `head_of` of its `n` slices
///   pointing at it, inner entries with the head's `block_size`, no
///   `slice_count` and the slow tag; `reserved` is what fits in `n` slices;
/// - a free slice's entry is empty; `pages_in_use` counts the heads.
#[repr(C)]
pub struct Segment {
    /// Common prefix; `kind == Kind::Small`.
    pub header: SegmentHeader,
    /// Bit `i` set: slice `i` is not part of any page.
    pub free_slices: u64,
    /// Bit `i` set: slice `i` may hold non-zero bytes.
    pub dirty_slices: u64,
    /// Bit `i` set: slice `i` was given back with `MADV_FREE` and not used
    /// since (dirty, but not to be purged again).
    pub lazy_slices: u64,
    /// Free slices that were dirty at the owning heap's last purge check
    /// and have stayed free since: purged at the next check, which comes
    /// at least the purge delay later (see `crate::purge`).
    pub purge_mark: u64,
    /// Pages currently set up.
    pub pages_in_use: u32,
    /// Entries of slices `1..SLICES`.
    pages: [Page; SLICES - 1],
    /// Neighbours in the owning heap's segment list or the instance cache.
    pub next: *mut Segment,
    /// See `next`.
    pub prev: *mut Segment,
    /// For each slice of a page, the index of the page's first slice.
    pub head_of: [u8; SLICES],
    /// The instance's free-list keys (`hardened`).
    pub keys: Keys,
}

/// Every slice but the metadata slice.
const ALL_PAGE_SLICES: u64 = !1;

const _: () = {
    assert!(core::mem::size_of::<Segment>() <= SLICE_SIZE);
    // `page_of` indexes pages with a shift.
    assert!(core::mem::size_of::<Page>() == ENTRY_SIZE);
    // The owner's fields on the second line, the rest on the first.
    assert!(core::mem::offset_of!(Page, free) == 64);
    assert!(core::mem::offset_of!(Page, prev) < 64);
    // Entry `i` at `i * ENTRY_SIZE`, entry 0's tag is the segment's owner.
    assert!(core::mem::offset_of!(Segment, pages) == core::mem::size_of::<Page>());
    assert!(core::mem::offset_of!(Segment, header) == 0);
    assert!(core::mem::offset_of!(Page, tag) == core::mem::offset_of!(SegmentHeader, owner));
    // `capacity` and `reserved` are u16.
    assert!(SLICE_SIZE / crate::size_class::MIN_ALIGN <= u16::MAX as usize);
    assert!(SLICES == 64); // the slice bitmaps are u64
    assert!(SEGMENT_SIZE.is_power_of_two() && SLICE_SIZE.is_power_of_two());
    // Any class fits at least one block in a page of the whole segment.
    assert!(crate::size_class::MAX_CLASS_SIZE <= (SLICES - 1) * SLICE_SIZE);
    assert!(crate::size_class::MAX_CLASS_SIZE <= u32::MAX as usize);
};

/// Slices a page of class `c` spans: one for blocks up to 8 KiB, else
/// enough for [`BLOCKS_PER_LARGE_PAGE`] blocks but at most
/// [`LARGE_PAGE_MAX_SLICES`], or the slices of one block if that is more
/// (at most 16 slices: a 1 MiB block).
pub const fn page_slices(c: Class) -> usize {
    let bs = class_size(c);
    if bs <= SINGLE_SLICE_MAX_BLOCK {
        return 1;
    }
    let eight = (bs * BLOCKS_PER_LARGE_PAGE).div_ceil(SLICE_SIZE);
    let one_block = bs.div_ceil(SLICE_SIZE);
    let n = if eight < LARGE_PAGE_MAX_SLICES {
        eight
    } else {
        LARGE_PAGE_MAX_SLICES
    };
    if n < one_block {
        one_block
    } else {
        n
    }
}

impl Segment {
    /// Initialises the metadata of a fresh or cached segment mapping.
    ///
    /// # Safety
    /// `base` must be a [`SEGMENT_SIZE`]-aligned, writable mapping of
    /// [`SEGMENT_SIZE`] bytes owned by the caller. `dirty` is the set of
    /// slices that may hold data (all clear for a fresh mapping).
    pub unsafe fn init(base: NonNull<u8>, instance: usize, keys: Keys, dirty: u64) -> *mut Segment {
        let seg = base.as_ptr().cast::<Segment>();
        // SAFETY: per contract the memory is ours; we write every field
        // without reading the old contents. Page entries are written one by
        // one: only headers of pages in use are ever read.
        unsafe {
            ptr::addr_of_mut!((*seg).header).write(SegmentHeader {
                kind: Kind::Small as u32,
                instance,
                owner: AtomicPtr::new(ptr::null_mut()),
            });
            ptr::addr_of_mut!((*seg).free_slices).write(ALL_PAGE_SLICES);
            ptr::addr_of_mut!((*seg).dirty_slices).write(dirty | 1);
            ptr::addr_of_mut!((*seg).lazy_slices).write(0);
            ptr::addr_of_mut!((*seg).purge_mark).write(0);
            ptr::addr_of_mut!((*seg).pages_in_use).write(0);
            ptr::addr_of_mut!((*seg).next).write(ptr::null_mut());
            ptr::addr_of_mut!((*seg).prev).write(ptr::null_mut());
            ptr::addr_of_mut!((*seg).head_of).write([0; SLICES]);
            ptr::addr_of_mut!((*seg).keys).write(keys);
            for i in 1..SLICES {
                Segment::entry(seg, i).write(Page::empty());
            }
        }
        seg
    }

    /// The segment's base address.
    ///
    /// # Safety
    /// `seg` is a segment (so never null).
    #[inline]
    pub unsafe fn base(seg: *mut Segment) -> NonNull<u8> {
        // SAFETY: per contract.
        unsafe { NonNull::new_unchecked(seg.cast()) }
    }

    /// Finds `n` consecutive free slices; returns the first one's index.
    pub fn find_span(&self, n: usize) -> Option<usize> {
        self.find_span_in(n, u64::MAX)
    }

    /// Finds `n` consecutive free slices among `among` (a slice bitmap,
    /// e.g. the dirty ones, which need no page faults).
    pub fn find_span_in(&self, n: usize, among: u64) -> Option<usize> {
        let free = self.free_slices & among;
        // Bit j of `runs` is set iff slices j .. j+n are all free.
        let mut runs = free;
        for i in 1..n {
            runs &= free >> i;
        }
        (runs != 0).then(|| runs.trailing_zeros() as usize)
    }

    /// How many of slices `head .. head + n` are clean (never touched, or
    /// purged): setting up a page there commits that many slices.
    pub fn clean_slices(&self, head: usize, n: usize) -> usize {
        let mask = (u64::MAX >> (64 - n)) << head;
        (mask & !self.dirty_slices).count_ones() as usize
    }

    /// Sets up a page of class `c` on slices `head .. head + n` (found by
    /// [`Segment::find_span`]) and returns it.
    ///
    /// # Safety
    /// The caller owns the segment and the slices are free.
    pub unsafe fn setup_page(seg: *mut Segment, head: usize, n: usize, c: Class) -> *mut Page {
        let mask = (u64::MAX >> (64 - n)) << head;
        // SAFETY: the caller owns the segment's metadata.
        unsafe {
            let (fresh, keys) = {
                let s = &mut *seg;
                debug_assert!(s.free_slices & mask == mask);
                s.free_slices &= !mask;
                let fresh = s.dirty_slices & mask == 0;
                s.dirty_slices |= mask;
                s.lazy_slices &= !mask;
                s.purge_mark &= !mask;
                s.pages_in_use += 1;
                s.head_of[head..head + n].fill(head as u8);
                (fresh, s.keys.tweak(seg as usize + head * SLICE_SIZE))
            };
            let bs = class_size(c);
            for i in head + 1..head + n {
                (*Segment::entry(seg, i)).block_size = bs as u32;
            }
            let page = Segment::entry(seg, head);
            // The tag stays slow until the page joins a queue.
            *page = Page {
                reserved: ((n * SLICE_SIZE) / bs) as u16,
                block_size: bs as u32,
                class: c as u8,
                slice_count: n as u8,
                fresh,
                keys,
                ..Page::empty()
            };
            page
        }
    }

    /// Returns an empty page's slices to the segment. Returns true if the
    /// segment now has no pages.
    ///
    /// # Safety
    /// The caller owns the segment; the page has no live blocks and is on
    /// no queue.
    pub unsafe fn release_page(page: *mut Page) -> bool {
        let seg = Page::segment(page);
        // SAFETY: per contract. The page is read through `page` before the
        // segment is borrowed as a whole, so the two never overlap in time.
        unsafe {
            let (head, n, untouched_fresh) = {
                let p = &*page;
                let head = (p.start() as usize - seg as usize) >> SLICE_SHIFT;
                (head, p.slice_count as usize, p.capacity == 0 && p.fresh)
            };
            for i in head..head + n {
                *Segment::entry(seg, i) = Page::empty();
            }
            let s = &mut *seg;
            let mask = (u64::MAX >> (64 - n)) << head;
            s.free_slices |= mask;
            if untouched_fresh {
                // Never carved: still as clean as it was.
                s.dirty_slices &= !mask;
            }
            s.pages_in_use -= 1;
            s.pages_in_use == 0
        }
    }

    /// The metadata entry of slice `i` (`1 <= i < SLICES`).
    ///
    /// # Safety
    /// `seg` is a small segment.
    #[inline(always)]
    pub unsafe fn entry(seg: *mut Segment, i: usize) -> *mut Page {
        debug_assert!(i > 0 && i < SLICES);
        // SAFETY: per contract; entry `i` is `pages[i - 1]`.
        unsafe { seg.cast::<Page>().add(i) }
    }

    /// The page holding block `p` of this segment.
    ///
    /// # Safety
    /// `seg` must be a live small segment and `p` point inside it past
    /// slice 0.
    #[inline(always)]
    pub unsafe fn page_of(seg: *mut Segment, p: *mut u8) -> *mut Page {
        let slice = (p as usize - seg as usize) >> SLICE_SHIFT;
        // SAFETY: per contract, `0 < slice < SLICES`.
        unsafe {
            let head = *(*seg).head_of.get_unchecked(slice) as usize;
            Segment::entry(seg, head)
        }
    }

    /// The metadata entry of the slice holding `p`, where `seg` is
    /// `segment_of(p)`: the page itself if the slice is the page's first.
    /// Computed from the address bits alone (a shift and a mask), so it is
    /// also defined for a huge block: a huge block lies in slice 0 of its
    /// segment or exactly one segment past it (see `huge`), so its entry is
    /// entry 0, the huge header, whose tag is
    /// [`HUGE_OWNER`](owner::HUGE_OWNER), never a thread's heap. Used by the
    /// free fast path before it knows the segment's kind.
    ///
    /// # Safety
    /// `seg` is the segment of a live block `p`.
    #[inline(always)]
    pub unsafe fn slice_entry(seg: *mut SegmentHeader, p: *mut u8) -> *mut Page {
        seg.cast::<u8>()
            .wrapping_add(Segment::slice_offset(p))
            .cast()
    }

    /// The offset of `p`'s slice entry from its segment's start: [`ENTRY_SIZE`] times
    /// its slice index. Zero for null and for a huge block (see
    /// [`Segment::slice_entry`]), never for a small block (slice 0 holds
    /// the metadata): `malloc_usable_size`'s fast path branches on it (on
    /// the flags of the mask itself) instead of testing for null.
    #[inline(always)]
    pub fn slice_offset(p: *mut u8) -> usize {
        #[allow(unused_mut)]
        let mut x = p as usize >> (SLICE_SHIFT - ENTRY_SHIFT);
        // Hides the shift from the compiler, which would otherwise test
        // `p & 0x3f0000` for zero (a separate `test`) rather than branch
        // on the flags of the mask below. Pure: repeated computations of
        // the offset still merge into one.
        #[cfg(not(miri))]
        // SAFETY: an empty template; `x` passes through unchanged.
        unsafe {
            core::arch::asm!("/* {x} */", x = inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x & ((SLICES - 1) << ENTRY_SHIFT)
    }

    /// Whether the tag of `p`'s slice entry ([`Segment::slice_entry`]) is
    /// `owner`: the free fast path's ownership test.
    ///
    /// One `cmp` with a memory operand and a branch. The tag is an atomic
    /// (other threads read it while the owner writes it), and the compiler
    /// never folds an atomic load into another instruction, so a plain
    /// `load == owner` costs a separate `mov`; inline assembly reads the
    /// aligned word once, as a relaxed load does on x86_64.
    ///
    /// # Safety
    /// As for [`Segment::slice_entry`].
    #[inline(always)]
    pub unsafe fn tag_is(seg: *mut SegmentHeader, p: *mut u8, owner: *mut Owner) -> bool {
        // Miri runs no assembly.
        #[cfg(miri)]
        // SAFETY: per contract.
        return unsafe { (*Segment::slice_entry(seg, p)).tag.load(Ordering::Relaxed) == owner };
        #[cfg(not(miri))]
        {
            let off = Segment::slice_offset(p);
            // SAFETY: per contract the entry is mapped and readable; the
            // compare only reads it (`readonly`), and the label returns.
            unsafe {
                core::arch::asm!(
                    "cmp {owner}, qword ptr [{seg} + {off} + {tag}]",
                    "jne {differs}",
                    owner = in(reg) owner,
                    seg = in(reg) seg,
                    off = in(reg) off,
                    tag = const core::mem::offset_of!(Page, tag),
                    differs = label { return false },
                    options(nostack, readonly),
                );
            }
            true
        }
    }

    /// Free slices that still hold memory (and were not given back lazily).
    pub fn purgeable(&self) -> u64 {
        self.free_slices & self.dirty_slices & !self.lazy_slices & ALL_PAGE_SLICES
    }

    /// The ranges of free slices among `only` that still hold memory, for
    /// purging: calls `f(first, count)` for each maximal run and records
    /// what it reports: [`Purged::Zeroed`] slices are clean again,
    /// [`Purged::Lazily`] ones are not purged again until reused.
    pub fn for_dirty_free_runs(&mut self, only: u64, mut f: impl FnMut(usize, usize) -> Purged) {
        let mut todo = self.purgeable() & only;
        while todo != 0 {
            let first = todo.trailing_zeros() as usize;
            let len = (!(todo >> first)).trailing_zeros() as usize;
            let mask = (u64::MAX >> (64 - len)) << first;
            todo &= !mask;
            match f(first, len) {
                Purged::Zeroed => self.dirty_slices &= !mask,
                Purged::Lazily => self.lazy_slices |= mask,
                Purged::No => {}
            }
        }
    }
}

impl Segment {
    /// Re-checks the segment's slice bookkeeping (the invariants listed on
    /// [`Segment`]); returns a description of the first violation. Does not
    /// walk the pages' free lists: that is [`Page::check`], for the owner.
    ///
    /// # Safety
    /// `seg` is a small segment whose metadata nobody else changes
    /// meanwhile (its heap's thread, or the store's lock for a cached one).
    pub unsafe fn check(seg: *mut Segment) -> Result<(), &'static str> {
        // SAFETY: per contract.
        let s = unsafe { &*seg };
        if s.header.kind != Kind::Small as u32 {
            return Err("segment: kind is not Small");
        }
        if s.free_slices & 1 != 0 || s.dirty_slices & 1 == 0 {
            return Err("segment: the metadata slice is marked free or clean");
        }
        if s.lazy_slices & !(s.free_slices & s.dirty_slices) != 0 {
            return Err("segment: a lazily purged slice is in use or clean");
        }
        if s.purge_mark & !s.free_slices != 0 {
            return Err("segment: a slice marked for purging is in use");
        }
        let mut pages = 0;
        let mut i = 1;
        while i < SLICES {
            // SAFETY: `0 < i < SLICES`.
            let e = unsafe { &*Segment::entry(seg, i) };
            if s.free_slices & (1 << i) != 0 {
                if e.slice_count != 0 || e.in_queue() {
                    return Err("segment: a free slice has a page entry");
                }
                i += 1;
                continue;
            }
            let n = e.slice_count as usize;
            if n == 0 || i + n > SLICES || e.class as usize >= crate::size_class::CLASS_COUNT {
                return Err("segment: a used slice does not start a page");
            }
            let bs = class_size(e.class as usize);
            if e.block_size as usize != bs
                || e.reserved as usize != n * SLICE_SIZE / bs
                || e.capacity > e.reserved
                || n != page_slices(e.class as usize)
            {
                return Err("segment: page geometry does not match its class");
            }
            for j in i..i + n {
                // SAFETY: `0 < j < SLICES`.
                let f = unsafe { &*Segment::entry(seg, j) };
                if s.free_slices & (1 << j) != 0 || s.head_of[j] as usize != i {
                    return Err("segment: a page's slices are free or point elsewhere");
                }
                if j > i && (f.slice_count != 0 || f.block_size != e.block_size || f.in_queue()) {
                    return Err("segment: a page's inner slice entry is wrong");
                }
            }
            pages += 1;
            i += n;
        }
        if pages != s.pages_in_use {
            return Err("segment: pages_in_use does not count its pages");
        }
        Ok(())
    }
}

/// Whether the segment containing a block is a small one (else huge).
///
/// # Safety
/// `seg` is the segment of a live block.
#[inline(always)]
pub unsafe fn is_small(seg: *mut SegmentHeader) -> bool {
    // SAFETY: per contract the header is mapped.
    unsafe { (*seg).kind == Kind::Small as u32 }
}

/// Loads the owner of a segment (acquire: pairs with the release store of
/// a heap that takes the segment, so its pages are seen set up).
///
/// # Safety
/// `seg` is the header of a mapped segment: the segment of a live block,
/// or one the caller owns.
#[inline(always)]
pub unsafe fn owner_of(seg: *mut SegmentHeader) -> *mut Owner {
    // SAFETY: per contract the header is mapped.
    unsafe { (*seg).owner.load(Ordering::Acquire) }
}

#[cfg(test)]
mod tests;
