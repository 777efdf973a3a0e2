//! Single-threaded micro-workloads on raw blocks: the allocator's fast paths and size classes.

use super::{mix, scaled};
use crate::blob::Blob;
use crate::rng::Rng;

/// Small blocks freed in exactly the reverse order of allocation: the friendliest pattern there
/// is (a free list used as a stack), so this measures the bare fast path.
pub fn small_lifo(scale: f64) -> u64 {
    const DEPTH: usize = 1000;
    let rounds = scaled(120_000, scale);
    let mut stack: Vec<Blob> = Vec::with_capacity(DEPTH);
    let mut sum = 0u64;
    for r in 0..rounds {
        for i in 0..DEPTH {
            // 16..=128 bytes in steps of 8: several neighbouring size classes in use at once.
            let size = 16 + ((i * 7 + r) % 15) * 8;
            stack.push(Blob::new(size, (i ^ r) as u8));
        }
        while let Some(b) = stack.pop() {
            sum = sum.wrapping_add(b.digest());
        }
    }
    sum
}

/// Small blocks freed in random order: free lists get shuffled, pages become partly free, and
/// locality is poor — closer to what long-running programs do than LIFO.
pub fn small_random(scale: f64) -> u64 {
    const SLOTS: usize = 20_000;
    let steps = scaled(40_000_000, scale);
    let mut rng = Rng::new(2);
    let mut slots: Vec<Option<Blob>> = (0..SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for step in 0..steps {
        let slot = &mut slots[rng.below(SLOTS)];
        if let Some(old) = slot.take() {
            sum = sum.wrapping_add(old.digest());
        }
        *slot = Some(Blob::new(rng.range(8, 256), step as u8));
    }
    sum
}

/// A size drawn log-uniformly: 90% between 16 B and 32 KiB, 10% between 32 KiB and 1 MiB.
/// Equal weight per power of two is how real size distributions look after the small end.
fn mixed_size(rng: &mut Rng) -> usize {
    let bits = if rng.below(10) < 9 {
        rng.range(4, 14)
    } else {
        rng.range(15, 19)
    };
    let lo = 1usize << bits;
    rng.range(lo, 2 * lo)
}

/// Random replacement over the whole size range, small to 1 MiB: medium and large blocks must be
/// as cheap as small ones, and freed large spans must be reused rather than unmapped and
/// re-faulted (each block gets one byte written per page).
pub fn mixed_sizes(scale: f64) -> u64 {
    const SLOTS: usize = 1000;
    let steps = scaled(3_000_000, scale);
    let mut rng = Rng::new(3);
    let mut slots: Vec<Option<Blob>> = (0..SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for step in 0..steps {
        let slot = &mut slots[rng.below(SLOTS)];
        if let Some(old) = slot.take() {
            sum = mix(sum, old.digest());
        }
        *slot = Some(Blob::new_touched(mixed_size(&mut rng), step as u8));
    }
    sum
}
