//! The `hardened` feature: heap misuse is caught early, cheaply.
//!
//! - **Encoded free lists.** Every free-list link is stored as
//!   `rotl(next ^ k1, k0) + k0` with keys drawn from `getrandom` per
//!   instance and mixed with each page's address, so a use-after-free or
//!   overflow write cannot plant a pointer the allocator will follow:
//!   popping a link that does not decode into the same page aborts.
//! - **Double free in O(1).** A freed block's first word is a valid encoded
//!   link; a live block's first word almost never is (odds ~ page size /
//!   2^64). A free whose block already holds a plausible link walks the
//!   page's lists to confirm, and aborts on a real double free.
//! - **Junk-filled freed blocks.** Freeing (and carving) fills a block's
//!   first [`JUNK_SPAN`] bytes (all of a block up to 1 KiB) with [`JUNK`];
//!   allocating it again checks every one of them past the link word, so a
//!   write anywhere into a freed small block is reported at its next reuse,
//!   and a new small block never shows an earlier block's data.
//! - **Quarantine** ([`quarantine`]): freed blocks of up to 16 KiB wait
//!   behind 32 others of the same thread before they can be reused, so a
//!   dangling pointer does not alias the next object at once.
//! - **End-of-block canary** ([`canary`]): every request gets
//!   [`SLACK`] more bytes; the requested size is kept in a trailer at the
//!   block's end and the bytes after it hold a canary, checked on free,
//!   realloc and `malloc_usable_size`, so an overflow by even one byte is
//!   caught.
//! - **Faulting zero-size blocks** ([`zero`]): `malloc(0)` returns a
//!   unique address in an inaccessible region.
//! - **Bad pointers** are caught by the live-block bitmap and the pointer
//!   checks of [`crate::check`], which `hardened` turns on (`boundary-checks`
//!   adds the layout checks).
//! - **Guard pages** (see `segment` and `huge`): the last page of each
//!   segment's metadata slice and the page after each huge block's header
//!   are inaccessible, so a block underflow faults before it reaches
//!   metadata.
//!
//! Without the feature every function here is an identity or a no-op and
//! inlines away.

pub mod canary;
pub mod quarantine;
pub mod zero;

pub use canary::SLACK;
pub use quarantine::Quarantine;

/// A free-list key (zero without `hardened`): one word, so it fits in
/// the 64-byte page entry; the rotation/offset and XOR halves of the
/// encoding are derived from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// The key.
    pub k: usize,
}

/// Whether the feature is on.
pub const ENABLED: bool = cfg!(feature = "hardened");

/// The byte freed and fresh blocks are filled with: not zero, so reading
/// uninitialised memory does not look like a valid empty value, and not a
/// plausible pointer.
pub const JUNK: u8 = 0xdb;
/// Bytes at the start of a block that are junk-filled when it is freed and
/// checked when it is handed out again: all of a small block (up to 1 KiB,
/// the sizes most objects have), the head of a larger one. Filling and
/// checking whole medium blocks (up to 1 MiB) cost up to 18 times the
/// time of a workload that churns them (measured); their heads are where
/// a stale object's fields are written.
pub const JUNK_SPAN: usize = 1024;
/// [`JUNK`] in every byte of a word.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub const JUNK_WORD: usize = usize::from_ne_bytes([JUNK; 8]);

impl Keys {
    /// Fresh random keys for an instance (getrandom; if refused, a mix of
    /// addresses and the time-stamp counter, which still differs per run).
    pub fn random(seed: usize) -> Keys {
        if !ENABLED {
            return Keys::default();
        }
        let mut buf = [0u8; 8];
        if crate::sys::getrandom(&mut buf).is_err() {
            // SAFETY: rdtsc has no preconditions.
            let t = unsafe { core::arch::x86_64::_rdtsc() } as usize;
            let a = (seed ^ t).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            buf.copy_from_slice(&a.to_ne_bytes());
        }
        let k = usize::from_ne_bytes(buf[..8].try_into().unwrap_or([1; 8]));
        Keys { k: k | 1 }
    }

    #[inline(always)]
    fn k0(self) -> usize {
        self.k
    }

    #[inline(always)]
    fn k1(self) -> usize {
        self.k.rotate_left(29) ^ 0x5bd1_e995_9e37_79b9
    }

    /// The keys of one page (or heap): the instance keys tweaked by its
    /// address, so links cannot be moved between pages.
    #[inline]
    pub fn tweak(self, addr: usize) -> Keys {
        Keys {
            k: self.k ^ addr.rotate_left(17).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Encodes a free-list link.
    #[inline(always)]
    pub fn encode(self, next: usize) -> usize {
        if ENABLED {
            (next ^ self.k1())
                .rotate_left((self.k0() & 63) as u32)
                .wrapping_add(self.k0())
        } else {
            next
        }
    }

    /// Decodes a free-list link.
    #[inline(always)]
    pub fn decode(self, stored: usize) -> usize {
        if ENABLED {
            stored
                .wrapping_sub(self.k0())
                .rotate_right((self.k0() & 63) as u32)
                ^ self.k1()
        } else {
            stored
        }
    }

    /// A per-block secret word for the live block at `addr`: its low byte
    /// is the end canary, its high half masks the size trailer.
    #[inline]
    pub fn block_secret(self, addr: usize) -> usize {
        (addr ^ self.k1()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Reports heap corruption found by the hardened checks and aborts.
#[cold]
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub fn corrupted(what: &str, p: *const u8) -> ! {
    crate::check::fatal(what, p)
}

#[cfg(feature = "hardened")]
mod checks {
    use super::*;
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
mod checks {
    use super::*;
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

pub use checks::*;
