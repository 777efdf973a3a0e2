//! `boundary-checks`: every kind of misuse ends the process with SIGABRT and
//! a one-line message on stderr naming the problem and the pointer.
//!
//! Each case runs in a child process (the test re-executed alone, see
//! `common::must_die`), because the expected outcome is an abort. Messages
//! are matched in full: with `hardened` on as well, the pointer checks are
//! the same code, and the layout checks stay `boundary-checks`' own.
#![cfg(feature = "boundary-checks")]
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{must_die, SIGABRT};
use std::alloc::{GlobalAlloc, Layout, System};

emma::emma_instance!(Checked);
emma::emma_instance!(Other);

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Performs one misuse; returns only if the misuse went undetected.
fn misuse(case: &str) {
    let l = layout(48, 8);
    unsafe {
        match case {
            "double-free" => {
                let p = Checked.alloc(l);
                Checked.dealloc(p, l);
                Checked.dealloc(p, l);
            }
            "double-free-remote" => {
                let p = Checked.alloc(l) as usize;
                std::thread::spawn(move || Checked.dealloc(p as *mut u8, l))
                    .join()
                    .unwrap();
                Checked.dealloc(p as *mut u8, l);
            }
            "double-free-huge" => {
                let h = layout(8 << 20, 8);
                let p = Checked.alloc(h);
                Checked.dealloc(p, h);
                Checked.dealloc(p, h);
            }
            "interior" => {
                let p = Checked.alloc(l);
                Checked.dealloc(p.add(16), l);
            }
            "interior-huge" => {
                let h = layout(8 << 20, 8);
                let p = Checked.alloc(h);
                Checked.dealloc(p.add(4096), h);
            }
            "segment-end" => {
                // The first address past a segment of small blocks: the
                // segment's own bookkeeping must not be consulted for it.
                let p = Checked.alloc(l) as usize;
                let end = (p & !((4 << 20) - 1)) + (4 << 20);
                Checked.dealloc(end as *mut u8, l);
            }
            "stack" => {
                let mut x = [0u8; 64];
                Checked.dealloc(x.as_mut_ptr(), l);
            }
            "glibc" => {
                let p = System.alloc(l);
                Checked.dealloc(p, l);
            }
            "other-instance" => {
                let p = Other.alloc(l);
                Checked.dealloc(p, l);
            }
            "wrong-size" => {
                let p = Checked.alloc(l);
                Checked.dealloc(p, layout(4000, 8));
            }
            "wrong-class" => {
                let p = Checked.alloc(layout(3000, 8));
                Checked.dealloc(p, layout(100, 8));
            }
            "wrong-align" => {
                // 112-byte blocks (100 bytes, with or without `hardened`'s
                // slack) sit at multiples of 112: of a few neighbours, one
                // is not 64-aligned.
                let l = layout(100, 8);
                let p = (0..4)
                    .map(|_| Checked.alloc(l))
                    .find(|p| !(*p as usize).is_multiple_of(64))
                    .unwrap();
                Checked.dealloc(p, layout(100, 64));
            }
            "sized-free" => {
                emma::c::free_sized::<Checked, emma::c::NoErrno>(
                    Checked.alloc(layout(3000, 8)),
                    100,
                );
            }
            "zero-size" => {
                Checked.alloc(Layout::from_size_align_unchecked(0, 8));
            }
            "realloc-freed" => {
                let p = Checked.alloc(l);
                Checked.dealloc(p, l);
                Checked.realloc(p, l, 100);
            }
            other => panic!("unknown case {other}"),
        }
    }
}

const DOUBLE: &str = "double free (block is not live)";
const FOREIGN: &str = "foreign pointer: not allocated by this emma instance";

/// Runs `case` in a child, which must abort with `message`.
fn expect_abort(test: &str, case: &str, message: &str) {
    must_die(test, case, SIGABRT, message, || misuse(case));
}

#[test]
fn double_free_is_caught() {
    expect_abort("double_free_is_caught", "double-free", DOUBLE);
}

#[test]
fn double_free_from_another_thread_is_caught() {
    expect_abort(
        "double_free_from_another_thread_is_caught",
        "double-free-remote",
        DOUBLE,
    );
}

#[test]
fn double_free_of_a_huge_block_is_caught() {
    expect_abort(
        "double_free_of_a_huge_block_is_caught",
        "double-free-huge",
        "double free of a huge block",
    );
}

#[test]
fn interior_pointers_are_caught() {
    expect_abort(
        "interior_pointers_are_caught",
        "interior",
        "interior pointer: not the start of a block",
    );
    expect_abort(
        "interior_pointers_are_caught",
        "interior-huge",
        "interior pointer into a huge block",
    );
}

#[test]
fn foreign_pointers_are_caught() {
    expect_abort("foreign_pointers_are_caught", "stack", FOREIGN);
    expect_abort("foreign_pointers_are_caught", "glibc", FOREIGN);
    expect_abort("foreign_pointers_are_caught", "segment-end", FOREIGN);
}

#[test]
fn pointers_of_another_instance_are_caught() {
    expect_abort(
        "pointers_of_another_instance_are_caught",
        "other-instance",
        "wrong instance: block belongs to another emma instance",
    );
}

#[test]
fn mismatched_layouts_are_caught() {
    expect_abort(
        "mismatched_layouts_are_caught",
        "wrong-size",
        "layout does not match the allocation (size or alignment)",
    );
    expect_abort(
        "mismatched_layouts_are_caught",
        "wrong-class",
        "layout does not match the allocation (size class)",
    );
    expect_abort(
        "mismatched_layouts_are_caught",
        "wrong-align",
        "layout does not match the allocation (size or alignment)",
    );
}

#[test]
fn mismatched_sized_frees_are_caught() {
    // `hardened` knows the exact size; `boundary-checks` alone the class.
    let message = if cfg!(feature = "hardened") {
        "sized free: the size does not match the allocation"
    } else {
        "layout does not match the allocation (size class)"
    };
    expect_abort("mismatched_sized_frees_are_caught", "sized-free", message);
}

#[test]
fn forbidden_layouts_are_caught() {
    expect_abort(
        "forbidden_layouts_are_caught",
        "zero-size",
        "bad layout: GlobalAlloc called with a zero-sized layout",
    );
}

#[test]
fn realloc_of_a_freed_block_is_caught() {
    expect_abort(
        "realloc_of_a_freed_block_is_caught",
        "realloc-freed",
        DOUBLE,
    );
}

#[test]
fn correct_use_passes_the_checks() {
    // The same operations done right: nothing aborts.
    unsafe {
        for size in [1, 48, 3000, 70_000, 8 << 20] {
            let l = layout(size, 8);
            let p = Checked.alloc(l);
            let q = Checked.realloc(p, l, size * 2);
            Checked.dealloc(q, layout(size * 2, 8));
        }
        let l = layout(64, 64);
        let p = Checked.alloc(l);
        Checked.dealloc(p, l);
    }
}
