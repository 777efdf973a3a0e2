//! The instance's secrets and the `hardened` switch, at the bottom of the
//! layers: the free-list keys every page, heap and segment encodes its
//! links with, their derivation, the junk byte freed blocks are filled
//! with, and the abort for corruption the hardened checks find. See
//! [`crate::harden`] for what the feature does with them.

/// A free-list key (zero without `hardened`): one word, so it fits in
/// the first line of the page entry; the rotation/offset and XOR halves
/// of the encoding are derived from it.
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
/// checked (sampled beyond 128 bytes, see `segment::checks`) when it is
/// handed out again: all of a small block (up to 1 KiB,
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
    crate::fatal::fatal(what, p)
}
