//! The end-of-block canary (`hardened`): every request is served with
//! [`SLACK`] extra bytes. The last 4 bytes of the block (the *trailer*)
//! hold how many bytes follow the requested size, masked with a per-block
//! secret; the [`CANARY`] bytes right after the requested size hold a
//! canary word derived from the same secret, none of its bytes below 0x80 or
//! junk (one unaligned word: written and checked with one access each, no
//! loop). Free, realloc and
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

/// The canary word for a block with per-block secret `secret`: the secret
/// with bits 7 and 2 set in every byte, so no byte is below 0x80 or
/// [`JUNK`]: no string terminator, ASCII text or small integer written
/// past the end passes for it, nor does untouched junk. (With bit 7 clear
/// instead, a byte was an odd value below 0x80, and writing 1 past the end
/// went unseen once in 64 blocks.) No branch and no multiplication: it is
/// computed on every allocation and every free.
#[inline]
fn canary_word(secret: usize) -> u64 {
    const _: () = assert!(JUNK & 0x84 != 0x84);
    secret as u64 | 0x8484_8484_8484_8484
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
    // SAFETY: per contract `n + CANARY <= end <= raw`.
    unsafe {
        p.add(n).cast::<u64>().write_unaligned(canary_word(secret));
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
    // `CANARY + TRAILER <= slack <= raw` in one compare: below the
    // minimum, `over` wraps to a huge value. (`raw >= SLACK`: no wrap.)
    let over = (slack as usize).wrapping_sub(CANARY + TRAILER);
    let room = raw - (CANARY + TRAILER);
    if over > room {
        corrupted(
            "heap overflow: the size trailer at the end of a block was overwritten",
            p,
        );
    }
    let n = room - over;
    // SAFETY: `n + CANARY <= end < raw`: the canary lies inside the block.
    let intact = unsafe { p.add(n).cast::<u64>().read_unaligned() } == canary_word(secret);
    if !intact {
        corrupted("heap overflow: a write past the end of a block", p);
    }
    n
}
