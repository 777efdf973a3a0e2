//! The end-of-block canary (`hardened`): every request is served with
//! [`SLACK`] extra bytes. The last 4 bytes of the block (the *trailer*)
//! hold how many bytes follow the requested size, masked with a per-block
//! secret; the [`CANARY`] bytes right after the requested size hold a
//! canary byte derived from the same secret (one unaligned word: written
//! and checked with one access each, no loop). Free, realloc and
//! `malloc_usable_size` decode the trailer (so the requested size is
//! known, and reported as the usable size: a correct program never writes
//! into the canary) and check the canary, so a write past the end, even by
//! one byte, aborts.
//!
//! The trailer stores the slack, not the size, so it fits in 32 bits even
//! for huge blocks (whose slack is less than a segment plus a few pages).

use crate::keys::{corrupted, Keys, JUNK};

/// Bytes added to every request: the canary and the trailer.
pub const SLACK: usize = if crate::keys::ENABLED {
    CANARY + TRAILER
} else {
    0
};
/// Bytes of the trailer.
const TRAILER: usize = 4;
/// Canary bytes after the requested size (the rest of a longer slack is
/// not checked: an overflow that runs past the end crosses these first).
pub const CANARY: usize = 8;

/// The canary byte for the block at `p`: never zero or [`JUNK`], so
/// neither a string terminator nor untouched junk passes for it.
#[inline]
fn canary_byte(secret: usize) -> u8 {
    match secret as u8 {
        0 | JUNK => 0x5a,
        b => b,
    }
}

/// Seals live block `p` of `raw` bytes as holding `n` requested bytes:
/// canary after `n`, trailer at the end.
///
/// # Safety
/// `p` is a live block of `raw` bytes owned by the caller, `n + SLACK <=
/// raw`, and `keys` are the keys [`requested`] will be given for it.
#[inline]
pub unsafe fn seal(p: *mut u8, n: usize, raw: usize, keys: Keys) {
    let secret = keys.block_secret(p as usize);
    let end = raw - TRAILER;
    let c = canary_byte(secret);
    // SAFETY: per contract `n + CANARY <= end <= raw`.
    unsafe {
        p.add(n)
            .cast::<u64>()
            .write_unaligned(u64::from_ne_bytes([c; 8]));
        p.add(end)
            .cast::<u32>()
            .write_unaligned((raw - n) as u32 ^ (secret >> 32) as u32);
    }
}

/// The requested size of live block `p` of `raw` bytes, after checking its
/// trailer and canary; aborts if either was overwritten.
///
/// # Safety
/// `p` is a live block of `raw` bytes sealed by [`seal`] with `keys`.
#[inline]
pub unsafe fn requested(p: *mut u8, raw: usize, keys: Keys) -> usize {
    let secret = keys.block_secret(p as usize);
    let end = raw - TRAILER;
    // SAFETY: per contract the trailer lies in the block (`raw >= SLACK`).
    let slack = unsafe { p.add(end).cast::<u32>().read_unaligned() } ^ (secret >> 32) as u32;
    let slack = slack as usize;
    if slack < CANARY + TRAILER || slack > raw {
        corrupted(
            "heap overflow: the size trailer at the end of a block was overwritten",
            p,
        );
    }
    let n = raw - slack;
    let c = canary_byte(secret);
    // SAFETY: `n + CANARY <= end < raw`: the canary lies inside the block.
    let intact = unsafe { p.add(n).cast::<u64>().read_unaligned() } == u64::from_ne_bytes([c; 8]);
    if !intact {
        corrupted("heap overflow: a write past the end of a block", p);
    }
    n
}
