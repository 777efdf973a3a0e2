//! Who owns a segment or a page, as far as the segment layer knows.

use core::ptr;
use core::sync::atomic::AtomicUsize;
#[cfg(miri)]
use core::sync::atomic::Ordering;

/// What the segment layer knows of the heap that owns a segment or a
/// page: the start of it. A heap begins with an `Owner` (the heap type is
/// `#[repr(C)]` with it first), so the pointers stored here are the heaps'
/// own addresses, and the free fast path compares them with the calling
/// thread's heap without knowing what a heap is.
#[repr(C)]
pub struct Owner {
    /// Thread pointer of the owning thread (0: none).
    pub tp: AtomicUsize,
}

impl Owner {
    /// Whether `o`'s thread pointer is `tp`: one `cmp` with a memory
    /// operand and a branch, where a relaxed load (which the compiler never
    /// folds into another instruction) costs a separate `mov` (see
    /// [`Segment::tag_is`](super::Segment::tag_is)).
    ///
    /// # Safety
    /// `o` points to a live `Owner` (a heap, or [`HUGE_OWNER`]).
    #[inline(always)]
    pub unsafe fn tp_is(o: *const Owner, tp: usize) -> bool {
        // Miri runs no assembly.
        #[cfg(miri)]
        // SAFETY: per contract.
        return unsafe { (*o).tp.load(Ordering::Relaxed) == tp };
        #[cfg(not(miri))]
        {
            // SAFETY: per contract `o` is readable; the compare only reads
            // it (`readonly`), and the label returns.
            unsafe {
                core::arch::asm!(
                    "cmp {tp}, qword ptr [{o}]",
                    "jne {differs}",
                    tp = in(reg) tp,
                    o = in(reg) o,
                    differs = label { return false },
                    options(nostack, readonly),
                );
            }
            true
        }
    }
}

/// The `owner` of every huge segment and the [`Page::tag`](super::Page::tag) of every page
/// the free fast path must not handle inline: an owner no thread ever is
/// (its `tp` is 0), so a free of a huge block always takes the non-local
/// branch, where it is told apart from a remote free by this address (no
/// `kind` test on the local free path). Never written.
pub static HUGE_OWNER: Owner = Owner {
    tp: AtomicUsize::new(0),
};

/// The [`Page::tag`](super::Page::tag) of every entry the free fast path must not handle
/// inline: [`HUGE_OWNER`].
#[inline(always)]
pub const fn slow_tag() -> *mut Owner {
    ptr::addr_of!(HUGE_OWNER).cast_mut()
}
