//! `boundary-checks`: every kind of misuse ends the process with SIGABRT and
//! a one-line message on stderr naming the problem and the pointer.
//!
//! Each case runs in a child process (this test binary re-executed with
//! `EMMA_MISUSE=<case>`), because the expected outcome is an abort.
#![cfg(feature = "boundary-checks")]
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

emma::emma_instance!(Checked);
emma::emma_instance!(Other);

const SIGABRT: i32 = 6;

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
                // 48-byte blocks sit at multiples of 48: of two neighbours,
                // one is not 32-aligned.
                let a = Checked.alloc(l);
                let b = Checked.alloc(l);
                let p = if !(a as usize).is_multiple_of(32) {
                    a
                } else {
                    b
                };
                Checked.dealloc(p, layout(48, 32));
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

/// The child side: runs when `EMMA_MISUSE` is set.
#[test]
fn child() {
    if let Ok(case) = std::env::var("EMMA_MISUSE") {
        misuse(&case);
        // Reaching this line means the misuse was not caught.
        std::process::exit(0);
    }
}

fn expect_abort(case: &str, message: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("EMMA_MISUSE", case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "case {case}: expected SIGABRT, got {:?}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("emma: {message}")) && stderr.contains("(pointer 0x"),
        "case {case}: expected \"{message}\" in stderr:\n{stderr}"
    );
}

#[test]
fn double_free_is_caught() {
    expect_abort("double-free", "double free");
}

#[test]
fn double_free_from_another_thread_is_caught() {
    expect_abort("double-free-remote", "double free");
}

#[test]
fn double_free_of_a_huge_block_is_caught() {
    expect_abort("double-free-huge", "double free of a huge block");
}

#[test]
fn interior_pointers_are_caught() {
    expect_abort("interior", "interior or stale pointer");
    expect_abort("interior-huge", "interior pointer into a huge block");
}

#[test]
fn foreign_pointers_are_caught() {
    expect_abort("stack", "foreign pointer");
    expect_abort("glibc", "foreign pointer");
}

#[test]
fn pointers_of_another_instance_are_caught() {
    expect_abort("other-instance", "wrong instance");
}

#[test]
fn mismatched_layouts_are_caught() {
    expect_abort("wrong-size", "layout does not match");
    expect_abort("wrong-class", "layout does not match");
    expect_abort("wrong-align", "layout does not match");
}

#[test]
fn forbidden_layouts_are_caught() {
    expect_abort("zero-size", "bad layout");
}

#[test]
fn realloc_of_a_freed_block_is_caught() {
    expect_abort("realloc-freed", "double free");
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
