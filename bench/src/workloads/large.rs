//! Large blocks of several MiB allocated and freed in a loop.

use super::{mix, scaled};
use crate::blob::Blob;
use crate::rng::Rng;

/// Modelled on the classic malloc-large benchmark: a handful of live buffers of 1–32 MiB, one
/// replaced at random each step, every page of a new buffer touched (as a program filling it
/// would). An allocator that maps and unmaps each buffer pays a `mmap`, a `munmap` and a page
/// fault per 4 KiB every time; one that keeps freed spans reuses them warm.
pub fn malloc_large(scale: f64) -> u64 {
    const SLOTS: usize = 6;
    const MIB: usize = 1 << 20;
    let steps = scaled(800, scale);
    let mut rng = Rng::new(11);
    let mut slots: Vec<Option<Blob>> = (0..SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for step in 0..steps {
        let slot = &mut slots[rng.below(SLOTS)];
        if let Some(old) = slot.take() {
            sum = mix(sum, old.digest());
        }
        let size = rng.range(MIB, 32 * MIB);
        *slot = Some(Blob::new_touched(size, step as u8));
    }
    for b in slots.iter().flatten() {
        sum = mix(sum, b.digest());
    }
    sum
}
