//! Pointer checks (features `boundary-checks` and `hardened`): misuse at
//! the API boundary ends the process with a message naming the problem and
//! the pointer.
//!
//! Both features check every pointer given to free, realloc and
//! `malloc_usable_size` (double free, interior, misaligned, stale, foreign
//! and wrong-instance pointers); `boundary-checks` adds the layout checks
//! of `GlobalAlloc` (zero size, size, class and alignment mismatches),
//! which `hardened` replaces by the exact requested size it keeps.
//!
//! A `GlobalAlloc` must not unwind, so a failed check writes one line to
//! stderr with a raw `write(2)` (no allocation, no formatting machinery)
//! and aborts with SIGABRT.
//!
//! Double frees and interior pointers are caught exactly: each small
//! segment keeps one bit per 16-byte granule, set while a block starting
//! there is live (the bitmap sits in the otherwise unused rest of the
//! metadata slice and is touched only with these features). Huge blocks have
//! a `live` flag. Foreign pointers are recognised with the instance's
//! segment map; a pointer of another emma instance is told apart by
//! reading its would-be header with `process_vm_readv`, which cannot fault.
//!
//! Without either feature every function here is empty and inlined away.

use crate::instance::InstanceState;
use crate::segment::Kind;

/// Whether the pointer checks are compiled in.
pub const ENABLED: bool = cfg!(any(feature = "boundary-checks", feature = "hardened"));

#[cfg(any(feature = "boundary-checks", feature = "hardened"))]
mod enabled {
    use super::*;
    use crate::fatal::fatal;
    use crate::huge::HugeHeader;
    use crate::segmap::Chunk;
    use crate::segment::{segment_of, Segment, SegmentHeader, SEGMENT_SIZE, SLICE_SIZE};
    use crate::size_class::{class_of_aligned, MAX_CLASS_SIZE};
    use crate::sys;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// Whether the layout checks are on.
    const LAYOUTS: bool = cfg!(feature = "boundary-checks");

    /// Granule of the live-block bitmap.
    const GRANULE: usize = 16;
    const WORDS: usize = SEGMENT_SIZE / GRANULE / 64;
    /// Where the bitmap starts in the metadata slice: just below the last
    /// page, which `hardened` makes a guard page.
    const BITMAP_OFFSET: usize = SLICE_SIZE - crate::sys::PAGE_SIZE - WORDS * 8;

    const _: () = assert!(core::mem::size_of::<Segment>() <= BITMAP_OFFSET);

    /// The bitmap word and bit of block `p`.
    ///
    /// # Safety
    /// `p` lies in a small segment of the instance, mapped for as long as
    /// the word is used.
    unsafe fn bit(p: *mut u8) -> (&'static AtomicU64, u64) {
        let seg = segment_of(p) as usize;
        let g = (p as usize - seg) / GRANULE;
        let word = (seg + BITMAP_OFFSET + (g / 64) * 8) as *const AtomicU64;
        // SAFETY: per contract; the bitmap lies in the segment's metadata
        // slice.
        (unsafe { &*word }, 1u64 << (g % 64))
    }

    /// Rejects layouts `GlobalAlloc` forbids (zero size).
    #[inline]
    pub fn global_layout(size: usize) {
        if LAYOUTS && size == 0 {
            fatal(
                "bad layout: GlobalAlloc called with a zero-sized layout",
                core::ptr::null(),
            );
        }
    }

    /// Marks a new small block live.
    ///
    /// # Safety
    /// `p` is a block just handed out by the instance.
    #[inline]
    pub unsafe fn on_alloc(p: *mut u8) {
        // SAFETY: per contract its segment is mapped.
        unsafe {
            if crate::segment::is_small(segment_of(p)) {
                let (w, m) = bit(p);
                w.fetch_or(m, Ordering::Relaxed);
            }
        }
    }

    /// Marks a new block live that is known to be small.
    ///
    /// # Safety
    /// `p` is a small block just handed out by the instance.
    #[inline]
    pub unsafe fn on_alloc_small(p: *mut u8) {
        // SAFETY: per contract.
        let (w, m) = unsafe { bit(p) };
        w.fetch_or(m, Ordering::Relaxed);
    }

    /// Checks that `p` is a live block of instance `st` allocated with
    /// `layout`.
    /// Returns true if it is a zero-size block (`hardened`) instead, whose
    /// liveness the caller checks with [`crate::harden::zero::check`].
    pub fn validate(st: &InstanceState, p: *mut u8, layout: Option<(usize, usize)>) -> bool {
        check(st, p, layout, false) == Kind::Zero
    }

    /// `layout` if the layout checks are on, else `None`: what a caller
    /// passes to a function that checks (a constant `None` costs the call
    /// no registers).
    #[inline(always)]
    pub fn layout_arg(layout: Option<(usize, usize)>) -> Option<(usize, usize)> {
        layout.filter(|_| LAYOUTS)
    }

    /// [`validate`], and if `free`, marks a small block free in the same
    /// step (one atomic update that both tests and clears its bit).
    /// Returns the kind of `p`'s segment.
    #[inline(always)]
    fn check(st: &InstanceState, p: *mut u8, layout: Option<(usize, usize)>, free: bool) -> Kind {
        // Null is told apart in `foreign`: its segment (`segment_of` wraps)
        // is above the user address space, which the map never records.
        let seg = segment_of(p);
        if st.store.segmap.get(seg as usize) != Chunk::Header {
            foreign(st, p);
        }
        // SAFETY: the segment map says a header of ours is mapped there.
        unsafe {
            if (*seg).kind == Kind::Zero as u32 {
                // Its liveness is checked by the caller, which knows
                // whether it frees (`harden::zero::check`).
                return Kind::Zero;
            }
            if (*seg).kind == Kind::Small as u32 {
                // Only the start of a live block has its bit set: one load
                // proves the pointer good; the rest is diagnosis. The
                // offset must lie past the metadata slice. It is taken
                // modulo the segment size, not from `seg`: a pointer at the
                // segment's end (the next 4 MiB boundary) is taken for this
                // segment's too (`segment_of` rounds `p - 1`), its bit
                // would lie past the bitmap, and its offset so is 0.
                let offset = (p as usize) & (SEGMENT_SIZE - 1);
                let live = offset >= SLICE_SIZE && (p as usize).is_multiple_of(GRANULE) && {
                    let (w, m) = bit(p);
                    let old = if free {
                        w.fetch_and(!m, Ordering::Relaxed)
                    } else {
                        w.load(Ordering::Relaxed)
                    };
                    old & m != 0
                };
                if !live {
                    not_live(seg.cast(), p);
                }
                let page = Segment::page_of(seg.cast(), p);
                if let Some((size, align)) = layout.filter(|_| LAYOUTS) {
                    check_layout(
                        p,
                        size,
                        align,
                        (*page).block_size as usize,
                        (*page).class as usize,
                    );
                }
            } else {
                let h = seg.cast::<HugeHeader>();
                if (*h).block != p {
                    fatal("interior pointer into a huge block", p);
                }
                if !(*h).live.load(Ordering::Relaxed) {
                    fatal("double free of a huge block", p);
                }
                if let Some((size, align)) = layout.filter(|_| LAYOUTS) {
                    if size > (*h).usable() || align > (*h).align.max(crate::size_class::MIN_ALIGN)
                    {
                        fatal("layout does not match the allocation (huge block)", p);
                    }
                }
                return Kind::Huge;
            }
        }
        Kind::Small
    }

    /// Reports what is wrong with `p`, a pointer into small segment `seg`
    /// that is not the start of a live block.
    ///
    /// # Safety
    /// `seg` is a mapped small segment of the instance and `p` lies in it
    /// or at its end.
    #[cold]
    unsafe fn not_live(seg: *mut Segment, p: *mut u8) -> ! {
        let offset = (p as usize) - (seg as usize);
        if offset < SLICE_SIZE {
            fatal("pointer into segment metadata: not a block", p);
        }
        if offset >= SEGMENT_SIZE {
            // The segment's end: no block of ours starts there.
            fatal(FOREIGN, p);
        }
        // SAFETY: per contract, past the metadata slice.
        let page = unsafe { &*Segment::page_of(seg, p) };
        if page.slice_count == 0 {
            fatal("stale pointer: its page holds no blocks", p);
        }
        if !page.is_block_start(p) {
            fatal(
                if (p as usize).is_multiple_of(crate::size_class::MIN_ALIGN) {
                    "interior pointer: not the start of a block"
                } else {
                    "misaligned pointer: not the start of a block"
                },
                p,
            );
        }
        fatal("double free (block is not live)", p)
    }

    fn check_layout(p: *mut u8, size: usize, align: usize, block: usize, class: usize) {
        if size == 0 || !align.is_power_of_two() {
            fatal("bad layout: zero size or alignment not a power of two", p);
        }
        // What the block holds for the caller (`hardened` keeps a slack).
        let room = block - crate::harden::SLACK;
        if !(p as usize).is_multiple_of(align) || size > room {
            fatal(
                "layout does not match the allocation (size or alignment)",
                p,
            );
        }
        // The block's class must be what `size` asks for, unless an in-place
        // realloc shrank it (then the block is at most twice the size).
        let padded = size + crate::harden::SLACK;
        let expected = if padded <= MAX_CLASS_SIZE {
            class_of_aligned(padded, align.max(16))
        } else {
            None
        };
        if expected != Some(class) && size * 2 < room && room > 128 {
            fatal("layout does not match the allocation (size class)", p);
        }
    }

    /// Marks block `p` free; aborts if it was not live.
    ///
    /// # Safety
    /// `p` passed [`validate`] for this instance (so its segment is one of
    /// ours, small or huge).
    #[inline]
    pub unsafe fn on_free(p: *mut u8) {
        let seg = segment_of(p);
        // SAFETY: per contract.
        if unsafe { crate::segment::is_small(seg) } {
            // SAFETY: per contract, a small segment of ours.
            let (w, m) = unsafe { bit(p) };
            if w.fetch_and(!m, Ordering::Relaxed) & m == 0 {
                fatal("double free (block is not live)", p);
            }
        } else {
            // SAFETY: validated before: a huge header of ours. (`huge::free`
            // clears `live` itself.)
            let h = unsafe { &*seg.cast::<HugeHeader>() };
            if !h.live.load(Ordering::Relaxed) {
                fatal("double free of a huge block", p);
            }
        }
    }

    /// Validates then marks free. Returns true if `p` was a zero-size
    /// block, which is then already freed.
    #[inline]
    pub fn on_dealloc(st: &InstanceState, p: *mut u8, layout: Option<(usize, usize)>) -> bool {
        on_dealloc_kind(st, p, layout) == Kind::Zero
    }

    /// [`on_dealloc`], returning the kind of `p`'s segment: a small or a
    /// huge block, now marked free, or a zero-size block, already freed.
    #[inline(always)]
    pub fn on_dealloc_kind(st: &InstanceState, p: *mut u8, layout: Option<(usize, usize)>) -> Kind {
        let kind = check(st, p, layout, true);
        if kind == Kind::Zero {
            crate::harden::zero::check(p, true);
        }
        kind
    }

    /// `p` is not in any segment of `st`: tell null and another emma
    /// instance's block from anything else.
    #[cold]
    fn foreign(st: &InstanceState, p: *mut u8) -> ! {
        if p.is_null() {
            fatal("null pointer freed or reallocated", p);
        }
        let seg = segment_of(p) as usize;
        let mut hdr = [0u8; core::mem::size_of::<SegmentHeader>()];
        if sys::read_own_memory(seg, &mut hdr).is_ok() {
            let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let mut inst = [0u8; 8];
            inst.copy_from_slice(&hdr[8..16]);
            let inst = usize::from_ne_bytes(inst);
            let is_emma = [Kind::Small, Kind::Huge, Kind::Zero]
                .iter()
                .any(|&k| kind == k as u32);
            if is_emma && inst != st.id() {
                fatal("wrong instance: block belongs to another emma instance", p);
            }
        }
        fatal(FOREIGN, p)
    }

    /// What a pointer emma did not hand out is reported as.
    const FOREIGN: &str = "foreign pointer: not allocated by this emma instance";
}

#[cfg(not(any(feature = "boundary-checks", feature = "hardened")))]
mod enabled {
    use super::*;

    /// Nothing to check without the checks.
    #[inline(always)]
    pub fn global_layout(_size: usize) {}

    /// Nothing to record without the checks.
    ///
    /// # Safety
    /// As with the checks: `p` is a block just handed out.
    #[inline(always)]
    pub unsafe fn on_alloc(_p: *mut u8) {}

    /// Nothing to record without the checks.
    ///
    /// # Safety
    /// As with the checks: `p` is a small block just handed out.
    #[inline(always)]
    pub unsafe fn on_alloc_small(_p: *mut u8) {}

    /// Nothing to check without the checks (and no zero-size blocks).
    #[inline(always)]
    pub fn validate(_st: &InstanceState, _p: *mut u8, _layout: Option<(usize, usize)>) -> bool {
        false
    }

    /// Nothing to record without the checks.
    ///
    /// # Safety
    /// As with the checks: `p` passed `validate`.
    #[inline(always)]
    pub unsafe fn on_free(_p: *mut u8) {}

    /// Nothing to check without the checks.
    #[inline(always)]
    pub fn on_dealloc(_st: &InstanceState, _p: *mut u8, _layout: Option<(usize, usize)>) -> bool {
        false
    }

    /// No layouts are checked without the checks.
    #[inline(always)]
    pub fn layout_arg(_layout: Option<(usize, usize)>) -> Option<(usize, usize)> {
        None
    }

    /// Only `hardened` builds, which have the checks, call this: without
    /// them it is never reached, and claims nothing it could not know
    /// (the caller's path for a checked block of unknown kind).
    #[inline(always)]
    pub fn on_dealloc_kind(
        _st: &InstanceState,
        _p: *mut u8,
        _layout: Option<(usize, usize)>,
    ) -> Kind {
        Kind::Huge
    }
}

pub use enabled::*;
