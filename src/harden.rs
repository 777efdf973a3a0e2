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
//! - **Freed-block canary.** Freeing writes a key-derived pattern into the
//!   16 bytes after the link; allocating the block again checks it, so a
//!   write into a freed block is reported at its next reuse.
//! - **Guard pages** (see `segment` and `huge`): the last page of each
//!   segment's metadata slice and the page after each huge block's header
//!   are inaccessible, so a block underflow faults before it reaches
//!   metadata.
//!
//! Without the feature every function here is an identity or a no-op and
//! inlines away.

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

/// Bytes of the freed-block canary, after the link word.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub const CANARY_BYTES: usize = 16;

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

    /// The canary pattern for a freed block at `addr`.
    #[inline]
    pub fn canary(self, addr: usize) -> [usize; 2] {
        let a = (addr ^ self.k1()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        [a, a.rotate_left(32) ^ self.k0()]
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

    /// Writes the freed-block canary into block `b` of `bs` bytes.
    ///
    /// # Safety
    /// `b` is a free block of `bs` bytes owned by the caller.
    #[inline]
    pub unsafe fn seal_freed(b: *mut u8, bs: usize, keys: Keys) {
        if bs >= 8 + CANARY_BYTES {
            // SAFETY: per contract the bytes lie in the block.
            unsafe {
                b.add(8)
                    .cast::<[usize; 2]>()
                    .write_unaligned(keys.canary(b as usize))
            };
        }
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
            if bs >= 8 + CANARY_BYTES
                && b.cast::<u8>().add(8).cast::<[usize; 2]>().read_unaligned()
                    != p.keys.canary(b as usize)
            {
                corrupted(
                    "heap corruption: a freed block was written to (use after free)",
                    b.cast(),
                );
            }
        }
    }

    /// Clears the link word of a block just handed out, so a stale link
    /// cannot pass for a free block later. Called after the pop committed
    /// (`page.free` updated): a `fork` in between must not leave a child
    /// whose free list starts at a block with a cleared link.
    ///
    /// # Safety
    /// `b` was just popped by the caller.
    #[inline]
    pub unsafe fn clear_link(b: *mut Block) {
        // SAFETY: per contract the block is the caller's.
        unsafe { b.cast::<usize>().write(0) };
    }

    fn in_page(p: &Page, addr: usize) -> bool {
        let start = p.start() as usize;
        let bs = p.block_size as usize;
        addr.wrapping_sub(start) < p.capacity as usize * bs && (addr - start).is_multiple_of(bs)
    }

    /// Before a local free of block `b` into `page`: if its first word
    /// decodes as a link of this page, confirm by walking the page's lists
    /// and abort on a double free. Then seal the block.
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
            seal_freed(b, p.block_size as usize, p.keys);
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
