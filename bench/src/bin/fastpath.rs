//! `fastpath <pairs|sized|baseline> <N>`: N alloc+free pairs of 32 bytes through the selected
//! allocator's instance, called directly (not through `std::alloc`), for counting instructions
//! with callgrind (see `bench/fastpath.sh`).
//!
//! `pairs` hides the whole layout from the compiler (size and alignment are tested at run
//! time); `sized` hides only the size and keeps the alignment a constant, as in `Box::new` or
//! `Vec<T>` growth, where Rust always knows the alignment at compile time. `baseline` runs the
//! same loop without the allocator calls, so the script can subtract the loop's own
//! instructions (the two pair loops differ from it by the same amount: one layout through
//! `black_box`); running two values of N and taking the difference removes set-up costs
//! (process start, first-use heap creation).

use emma_bench::selected::{GLOBAL, NAME};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, n) = match (
        args.get(1).map(String::as_str),
        args.get(2).map(|s| s.parse::<u64>()),
    ) {
        (Some(m @ ("pairs" | "sized" | "baseline")), Some(Ok(n))) => (m, n),
        _ => {
            eprintln!("usage: fastpath <pairs|sized|baseline> <N>   (alloc: {NAME})");
            std::process::exit(2);
        }
    };
    let layout = Layout::from_size_align(32, 8).unwrap();
    // One pair up front, so lazy initialisation happens before the loop in both modes.
    // SAFETY: non-zero size; the block is freed with the layout it was allocated with.
    unsafe { GLOBAL.dealloc(GLOBAL.alloc(layout), layout) };
    let mut dummy = [0u8; 32];
    if mode == "pairs" {
        for _ in 0..n {
            // SAFETY: as above; a null result would be passed to black_box and dealloc only
            // after a failed allocation, which does not happen for 32 bytes here.
            unsafe {
                let p = GLOBAL.alloc(black_box(layout));
                GLOBAL.dealloc(black_box(p), layout);
            }
        }
    } else if mode == "sized" {
        for _ in 0..n {
            // SAFETY: as above.
            unsafe {
                let l = Layout::from_size_align_unchecked(black_box(layout).size(), 8);
                let p = GLOBAL.alloc(l);
                GLOBAL.dealloc(black_box(p), l);
            }
        }
    } else {
        for _ in 0..n {
            black_box(black_box(layout).size());
            black_box(black_box(dummy.as_mut_ptr()));
        }
    }
    black_box(&mut dummy);
}
