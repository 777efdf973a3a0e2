//! The `hardened` checks of a page's free lists: junk-filling freed
//! blocks, checking links and junk when a block is popped (double frees
//! are the live-block bitmap's, in `check`). They know only the page and the keys,
//! so they sit with the page; see [`crate::harden`] for the whole feature.
//! Without `hardened` every function here is empty and inlines away.

#[cfg(feature = "hardened")]
mod imp {
    use crate::keys::{corrupted, JUNK, JUNK_SPAN, JUNK_WORD};
    use crate::segment::{Block, Page, SEGMENT_SIZE};

    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128, _mm_store_si128, _mm_xor_si128,
    };

    /// Blocks up to this size are junk-filled by [`seal_freed`] with
    /// inline stores; larger ones call `memset`.
    pub const SEAL_INLINE_MAX: usize = 4 * WINDOW;

    /// Bytes in each window [`junk_intact`] checks.
    const WINDOW: usize = 64;
    /// 16-byte chunks in a window.
    const CHUNKS: usize = WINDOW / 16;

    /// [`JUNK`] in all 16 bytes of a vector.
    #[inline(always)]
    fn junk16() -> __m128i {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { _mm_set1_epi8(JUNK as i8) }
    }

    /// Fills block `b` of `bs` bytes with [`JUNK`] from byte 8 (past its
    /// link word) to the end of its junk span (`bs` up to [`JUNK_SPAN`]):
    /// inline 16-byte stores up to four [`WINDOW`]s (256 bytes), a
    /// `memset` for the middle of larger blocks.
    ///
    /// # Safety
    /// `b` is a free block of `bs` bytes (16-byte aligned, a multiple of
    /// 16) owned by the caller.
    #[inline]
    pub unsafe fn seal_freed(b: *mut u8, bs: usize) {
        let span = bs.min(JUNK_SPAN);
        let j = junk16();
        // SAFETY: per contract every byte written lies in the block and
        // every 16-byte store is aligned.
        unsafe {
            b.add(8).cast::<usize>().write(JUNK_WORD);
            // No loops: the compiler would turn them into `memset` calls.
            if span >= WINDOW {
                for i in 1..CHUNKS {
                    _mm_store_si128(b.add(16 * i).cast(), j);
                }
                if span > WINDOW {
                    // From byte 16 on at least (the link stays).
                    let tail = b.add(span - WINDOW);
                    for i in 0..CHUNKS {
                        _mm_store_si128(tail.add(16 * i).cast(), j);
                    }
                }
                if span > 4 * WINDOW {
                    b.add(WINDOW).write_bytes(JUNK, span - 2 * WINDOW);
                } else if span > 2 * WINDOW {
                    // A middle of at most two windows: the window after the
                    // first and the one before the last cover it (they
                    // overlap when it is shorter), still without a call.
                    let mid = b.add(span - 2 * WINDOW);
                    for i in 0..CHUNKS {
                        _mm_store_si128(b.add(WINDOW + 16 * i).cast(), j);
                        _mm_store_si128(mid.add(16 * i).cast(), j);
                    }
                }
            } else {
                if span > 16 {
                    _mm_store_si128(b.add(16).cast(), j);
                }
                if span > 32 {
                    _mm_store_si128(b.add(32).cast(), j);
                }
            }
        }
    }

    /// Puts back the junk of the word after the link of block `b`, which
    /// served as a remote-free message (see `heap::remote`).
    ///
    /// # Safety
    /// `b` is a free block owned by the caller.
    #[inline]
    pub unsafe fn reseal_message(b: *mut u8) {
        // SAFETY: per contract; blocks are at least 16 bytes.
        unsafe { b.add(8).cast::<usize>().write(JUNK_WORD) };
    }

    /// The OR of `chunk ^ junk` over the [`CHUNKS`] chunks at `p`, the first
    /// one being `first`.
    ///
    /// # Safety
    /// `p` is 16-byte aligned, with [`WINDOW`] readable bytes.
    #[inline(always)]
    unsafe fn window(p: *const u8, first: __m128i, j: __m128i) -> __m128i {
        // SAFETY: per contract.
        unsafe {
            let mut acc = first;
            for i in 1..CHUNKS {
                acc = _mm_or_si128(acc, _mm_xor_si128(_mm_load_si128(p.add(16 * i).cast()), j));
            }
            acc
        }
    }

    /// Whether block `b` of `bs` bytes, its link word still in place (and
    /// not checked), holds [`JUNK`] where it is checked: every byte of
    /// a block up to two [`WINDOW`]s (128 bytes); for larger ones the
    /// first and the last window of the junk span and one more window at
    /// an offset drawn from `salt` (which changes from one reuse of the
    /// block to the next).
    ///
    /// The word after the link is compared on its own, as a word: the
    /// 16-byte chunk it shares with the link would need the link masked
    /// out, and its load would wait for the link's store to complete (an
    /// 8-byte store cannot forward to a 16-byte load; that stall was once a
    /// third of the hardened pair's time). The vector compares start at
    /// byte 16.
    ///
    /// # Safety
    /// `b` is a block of `bs` bytes (16-byte aligned, a multiple of 16).
    #[inline(always)]
    unsafe fn junk_intact(b: *const u8, bs: usize, salt: usize) -> bool {
        let j = junk16();
        // SAFETY: per contract every chunk read lies in the block.
        unsafe {
            if b.add(8).cast::<usize>().read() != JUNK_WORD {
                return false;
            }
            let diff = |o: *const u8| _mm_xor_si128(_mm_load_si128(o.cast()), j);
            let acc = if bs >= WINDOW {
                // Computed here: the smaller blocks do not need it.
                let span = bs.min(JUNK_SPAN);
                // The first window past its first chunk (the word above).
                let mut acc = window(b, _mm_setzero_si128(), j);
                if span > WINDOW {
                    let tail = b.add(span - WINDOW);
                    acc = _mm_or_si128(acc, window(tail, diff(tail), j));
                }
                if span > 2 * WINDOW {
                    // A window among the `positions` 16-byte aligned ones
                    // between the first and the last.
                    let positions =
                        (span - 2 * WINDOW) / 16 - (CHUNKS - 1).min((span - 2 * WINDOW) / 16 - 1);
                    let r = (salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 as usize;
                    let at = WINDOW + 16 * ((r * positions) >> 32);
                    let mid = b.add(at);
                    acc = _mm_or_si128(acc, window(mid, diff(mid), j));
                }
                acc
            } else if bs > 16 {
                // Two chunks, overlapping in a 32-byte block, rather than a
                // loop.
                _mm_or_si128(diff(b.add(16)), diff(b.add(bs - 16)))
            } else {
                // A 16-byte block: the word is all there is.
                return true;
            };
            _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_setzero_si128())) == 0xffff
        }
    }

    /// Checks the link of a block being popped from a page's free list:
    /// its successor must decode to a 16-byte aligned address in the same
    /// segment. A link overwritten with anything but the page's encoding
    /// of such an address (the keys are secret and mixed with the page's
    /// address) decodes to a random value, which passes about once in
    /// 2^46; a link moved from another page decodes to one as well. (The
    /// page's own bounds cost a multiplication more on every pop, and the
    /// segment alone suffices for that rate.)
    ///
    /// # Safety
    /// None beyond the arguments' meaning: `b` was the head of the list,
    /// `next` its decoded link.
    #[inline]
    pub unsafe fn check_link(_page: *mut Page, b: *mut Block, next: *mut Block) {
        // Both conditions in one test: `b` is 16-byte aligned (a block
        // start), so the low bits of `next ^ b` are those of `next`, and
        // the bits above the segment offset are zero only in `b`'s segment.
        const OUTSIDE: usize = !(SEGMENT_SIZE - 1) | (crate::size_class::MIN_ALIGN - 1);
        debug_assert!((b as usize).is_multiple_of(crate::size_class::MIN_ALIGN));
        if !next.is_null() && (next as usize ^ b as usize) & OUTSIDE != 0 {
            corrupted(
                "heap corruption: free list overwritten (use after free or overflow)",
                b.cast(),
            );
        }
    }

    /// Checks the junk of block `b` just popped from `page`, before
    /// [`clear_link`] overwrites its link; `next` was its link.
    ///
    /// # Safety
    /// `b` is a block of `page` the caller just popped.
    #[inline]
    pub unsafe fn check_junk(page: *mut Page, b: *mut Block, next: *mut Block) {
        // SAFETY: per contract.
        unsafe {
            let bs = (*page).block_size as usize;
            if !junk_intact(b.cast(), bs, b as usize ^ next as usize) {
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
}

#[cfg(not(feature = "hardened"))]
mod imp {
    use crate::segment::{Block, Page};

    /// Nothing is junk-filled without `hardened` (the value is unused).
    pub const SEAL_INLINE_MAX: usize = 256;

    /// No junk without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn seal_freed(_b: *mut u8, _bs: usize) {}

    /// No junk without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn reseal_message(_b: *mut u8) {}

    /// No check without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn check_link(_page: *mut Page, _b: *mut Block, _next: *mut Block) {}

    /// No check without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn check_junk(_page: *mut Page, _b: *mut Block, _next: *mut Block) {}

    /// Nothing to clear without `hardened`.
    ///
    /// # Safety
    /// None needed.
    #[inline(always)]
    pub unsafe fn clear_link(_b: *mut Block) {}
}

pub use imp::*;
