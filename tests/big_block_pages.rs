//! Pages of big blocks do not hold freed blocks' memory: a block over
//! 64 KiB gets a page of its own, and no page of smaller blocks spans more
//! than 128 KiB, so a few live blocks keep little more than themselves
//! committed once the rest are freed and free memory is given back.
//!
//! With pages of eight blocks (up to a whole segment, the old geometry),
//! one live 512 KiB block kept its page of 63 × 64 KiB committed, and a
//! random mix of blocks from 16 B to 1 MiB peaked at 138 MiB for at most
//! 53 MiB live (the mixed-sizes benchmark; 76 MiB now). The figure checked is the instance's
//! own `committed` statistic (exact at 64 KiB granularity), not RSS, so
//! nothing else in the process can disturb it.
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout};

const KIB: usize = 1024;
/// Committed bytes per segment for its metadata slice.
const SEGMENT_META: usize = 64 * KIB;

emma::emma_instance!(Big);

/// Allocates `n` blocks of `size` bytes, writes every page of each, frees
/// all but every eighth, gives free memory back, and returns the committed
/// bytes beyond the metadata, and the blocks kept.
fn keep_every_eighth(size: usize, n: usize) -> (usize, usize) {
    // `hardened` adds 12 bytes to each request (canary and size): ask for
    // that much less, so every block still takes exactly its class.
    const PAD: usize = if cfg!(feature = "hardened") { 12 } else { 0 };
    let l = Layout::from_size_align(size - PAD, 16).unwrap();
    let blocks: Vec<*mut u8> = (0..n)
        .map(|_| {
            let p = unsafe { Big.alloc(l) };
            assert!(!p.is_null());
            for off in (0..l.size()).step_by(4096) {
                unsafe { p.add(off).write(1) };
            }
            p
        })
        .collect();
    let mut kept = Vec::new();
    for (i, &p) in blocks.iter().enumerate() {
        if i % 8 == 0 {
            kept.push(p);
        } else {
            unsafe { Big.dealloc(p, l) };
        }
    }
    Big.trim();
    let s = Big.stats();
    let overhead = s.meta + s.segments * SEGMENT_META;
    let held = s.committed - overhead;
    for p in &kept {
        unsafe { Big.dealloc(*p, l) };
    }
    Big.trim();
    (held, kept.len())
}

#[test]
fn a_few_live_big_blocks_keep_little_committed() {
    // Class sizes (blocks of these sizes fill their class exactly).
    for size in [
        40 * KIB,
        96 * KIB,
        320 * KIB,
        512 * KIB,
        768 * KIB,
        1024 * KIB,
    ] {
        let (held, kept) = keep_every_eighth(size, 32);
        // Each kept block holds at most its own page: 128 KiB, or the
        // block rounded up to 64 KiB slices if that is more.
        let page = (size.div_ceil(64 * KIB) * 64 * KIB).max(128 * KIB);
        println!(
            "{size:>8} B blocks: {kept} kept, {} KiB held (bound {} KiB)",
            held / KIB,
            kept * page / KIB
        );
        assert!(
            held <= kept * page,
            "{size} B blocks: {kept} kept hold {held} B committed, more than {} B",
            kept * page
        );
    }
}
