//! The `hardened` checks of a page's free lists: junk-filling freed
//! blocks, checking links and junk when a block is popped, and finding
//! double frees, local and remote. They know only the page and the keys,
//! so they sit with the page; see [`crate::harden`] for the whole feature.
//! Without `hardened` every function here is empty and inlines away.

#[cfg(feature = "hardened")]
mod imp {
    use crate::keys::{corrupted, Keys, JUNK, JUNK_SPAN, JUNK_WORD};
    use crate::segment::{Block, Page};

    /// Fills block `b` of `bs` bytes with [`JUNK`] past its link word, up
    /// to [`JUNK_SPAN`].
    ///
    /// # Safety
    /// `b` is a free block of `bs` bytes owned by the caller.
    #[inline]
    pub unsafe fn seal_freed(b: *mut u8, bs: usize, _keys: Keys) {
        // SAFETY: per contract the bytes lie in the block.
        unsafe { b.add(8).write_bytes(JUNK, bs.min(JUNK_SPAN) - 8) };
    }

    /// Whether bytes `8..bs` of block `b` (up to [`JUNK_SPAN`]) all hold
    /// [`JUNK`].
    ///
    /// # Safety
    /// `b` is a block of `bs` bytes (a multiple of 16).
    #[inline(never)]
    unsafe fn junk_intact(b: *const u8, bs: usize) -> bool {
        let w = b.cast::<usize>();
        let mut acc = 0;
        // SAFETY: per contract; blocks are 16-byte aligned.
        unsafe {
            for i in 1..bs.min(JUNK_SPAN) / 8 {
                acc |= w.add(i).read() ^ JUNK_WORD;
            }
        }
        acc == 0
    }

    /// Checks a block being popped from `page`'s free list: its successor
    /// must decode into the page, its canary must be intact.
    ///
    /// # Safety
    /// `b` was the head of `page.free`; `next` its decoded link.
    #[inline]
    pub unsafe fn check_pop(page: *mut Page, b: *mut Block, next: *mut Block) {
        // SAFETY: per contract.
        unsafe {
            let p = &*page;
            let bs = p.block_size as usize;
            if !next.is_null() && !in_page(p, next as usize) {
                corrupted(
                    "heap corruption: free list overwritten (use after free or overflow)",
                    b.cast(),
                );
            }
            if !junk_intact(b.cast(), bs) {
                corrupted(
                    "heap corruption: a freed block was written to (use after free)",
                    b.cast(),
                );
            }
        }
    }

    /// Overwrites the link word of a block just handed out with junk, so a
    /// stale link cannot pass for a free block later and the whole block
    /// reads as junk. Called after the pop committed (`page.free` updated):
    /// a `fork` in between must not leave a child whose free list starts at
    /// a block with a cleared link.
    ///
    /// # Safety
    /// `b` was just popped by the caller.
    #[inline]
    pub unsafe fn clear_link(b: *mut Block) {
        // SAFETY: per contract the block is the caller's.
        unsafe { b.cast::<usize>().write(JUNK_WORD) };
    }

    /// Whether `addr` may be a block of `p`: inside its carved part and
    /// 16-byte aligned. (Not checked against the block size: a division on
    /// every pop costs too much, and a forged link decodes to a random
    /// value, which this range check rejects but for about one in 2^40.)
    fn in_page(p: &Page, addr: usize) -> bool {
        let start = p.start() as usize;
        addr.wrapping_sub(start) < p.capacity as usize * p.block_size as usize
            && addr.is_multiple_of(crate::size_class::MIN_ALIGN)
    }

    /// Before a local free of block `b` into `page`: if its first word
    /// decodes as a link of this page, confirm by walking the page's lists
    /// and abort on a double free. (The block was junk-filled by the
    /// hardened free path before it got here.)
    ///
    /// # Safety
    /// The caller owns `page`; `b` is claimed to be a live block of it.
    #[inline]
    pub unsafe fn check_local_free(page: *mut Page, b: *mut u8) {
        // SAFETY: per contract.
        unsafe {
            let p = &*page;
            let link = p.keys.decode(b.cast::<usize>().read());
            if link == 0 || in_page(p, link) {
                for list in [p.free, p.local_free] {
                    let mut x = list;
                    let mut n = 0;
                    while !x.is_null() && n <= p.capacity {
                        if x.cast::<u8>() == b {
                            corrupted("double free", b);
                        }
                        x = Block::next(x, p.keys);
                        n += 1;
                    }
                }
            }
        }
    }

    /// Before a remote free of `b` to a heap whose remote links use `keys`:
    /// a first word that decodes as a remote link of this instance means
    /// the block is already on a remote list.
    ///
    /// # Safety
    /// `b` is claimed to be a live block.
    #[inline]
    pub unsafe fn check_remote_free(b: *mut u8, keys: Keys, plausible: impl Fn(usize) -> bool) {
        // SAFETY: per contract the first word is readable.
        let link = keys.decode(unsafe { b.cast::<usize>().read() });
        if link == 0 || plausible(link) {
            corrupted("double free (block already freed by another thread)", b);
        }
    }
}

#[cfg(not(feature = "hardened"))]
mod imp {
    use crate::keys::Keys;
    use crate::segment::{Block, Page};

    /// No canary without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn seal_freed(_b: *mut u8, _bs: usize, _keys: Keys) {}

    /// No check without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn check_pop(_page: *mut Page, _b: *mut Block, _next: *mut Block) {}

    /// Nothing to clear without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn clear_link(_b: *mut Block) {}

    /// No check without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn check_local_free(_page: *mut Page, _b: *mut u8) {}

    /// No check without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn check_remote_free(_b: *mut u8, _keys: Keys, _plausible: impl Fn(usize) -> bool) {}
}

pub use imp::*;
