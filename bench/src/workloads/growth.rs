//! Vec growth through `realloc`, from a few bytes to hundreds of MiB.

use super::{mix, scaled};
use crate::rng::Rng;

/// Two phases, repeated:
/// 1. 2000 `Vec<u8>`s grown side by side by small pushes to random lengths up to 32 KiB: many
///    small and medium reallocs whose neighbours are also growing, so in-place growth is rare
///    and size-class changes must be cheap;
/// 2. four `Vec<u64>`s grown side by side by 4 KiB chunks to 64 MiB each (256 MiB live): huge
///    reallocs, which an allocator can do with `mremap` instead of copying, and fresh pages.
pub fn realloc_growth(scale: f64) -> u64 {
    let small_rounds = scaled(40, scale);
    let big_rounds = scaled(3, scale);
    let mut rng = Rng::new(5);
    let mut sum = 0u64;

    for round in 0..small_rounds {
        const VECS: usize = 2000;
        let targets: Vec<usize> = (0..VECS).map(|_| 1 << rng.range(0, 15)).collect();
        let mut vecs: Vec<Vec<u8>> = (0..VECS).map(|_| Vec::new()).collect();
        let fill = [round as u8; 4096];
        // Each pass over the still-growing Vecs appends about an eighth of a Vec's length, so a
        // Vec reallocates every few passes and all of them interleave in the heap.
        let mut active: Vec<usize> = (0..VECS).collect();
        while !active.is_empty() {
            active.retain(|&i| {
                let v = &mut vecs[i];
                let add = (v.len() / 8 + 1).min(targets[i] - v.len());
                v.extend_from_slice(&fill[..add]);
                v.len() < targets[i]
            });
        }
        for v in &vecs {
            sum = mix(sum, v.len() as u64 ^ u64::from(v[v.len() / 2]));
        }
    }

    const BIG: usize = 64 << 20; // bytes per Vec
    const CHUNK: usize = 512; // u64s per push: 4 KiB
    let chunk: Vec<u64> = (0..CHUNK as u64).collect();
    for _ in 0..big_rounds {
        let mut vecs: Vec<Vec<u64>> = (0..4).map(|_| Vec::new()).collect();
        while vecs[3].len() * 8 < BIG {
            for v in &mut vecs {
                v.extend_from_slice(&chunk);
            }
        }
        for v in &vecs {
            sum = mix(sum, v.len() as u64 ^ v[v.len() / 3]);
        }
    }
    sum
}
