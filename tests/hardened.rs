//! The `hardened` feature catches heap misuse early, without
//! `boundary-checks`: writes into freed blocks, forged free-list links,
//! double frees (local, remote, huge) and underflows into metadata.
//!
//! Each case runs in a child process (this test binary re-executed with
//! `EMMA_HARDENED_CASE=<case>`) and must die by SIGABRT with a message, or by
//! SIGSEGV for the guard page.
#![cfg(feature = "hardened")]
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

emma::emma_instance!(Hard);

const SIGABRT: i32 = 6;
const SIGSEGV: i32 = 11;

fn misuse(case: &str) {
    let l = Layout::from_size_align(64, 8).unwrap();
    unsafe {
        match case {
            "use-after-free-write" => {
                let p = Hard.alloc(l);
                Hard.dealloc(p, l);
                p.add(12).write(0x41); // inside the canary
                                       // Allocate until the block comes back: its canary is checked.
                for _ in 0..2000 {
                    let _ = Hard.alloc(l);
                }
            }
            "forged-link" => {
                let a = Hard.alloc(l);
                let b = Hard.alloc(l);
                Hard.dealloc(b, l);
                Hard.dealloc(a, l);
                // Overwrite the freed block's link with a plausible-looking
                // raw pointer, as an exploit would.
                a.cast::<usize>().write(b as usize + 4096);
                // Allocate until the forged link would be followed.
                for _ in 0..2000 {
                    let _ = Hard.alloc(l);
                }
            }
            "double-free" => {
                let p = Hard.alloc(l);
                Hard.dealloc(p, l);
                Hard.dealloc(p, l);
            }
            "double-free-remote" => {
                let p = Hard.alloc(l) as usize;
                std::thread::spawn(move || {
                    Hard.dealloc(p as *mut u8, l);
                    Hard.dealloc(p as *mut u8, l);
                })
                .join()
                .unwrap();
            }
            "double-free-remote-chain" => {
                // The freeing thread has a heap of its own, so its remote
                // frees wait in a chain of the page (links with the page's
                // keys) when the second free comes.
                let (p, q) = (Hard.alloc(l) as usize, Hard.alloc(l) as usize);
                std::thread::spawn(move || {
                    let own = Hard.alloc(l);
                    Hard.dealloc(q as *mut u8, l);
                    Hard.dealloc(p as *mut u8, l);
                    // `p`'s link now points at `q`, in the same page.
                    Hard.dealloc(p as *mut u8, l);
                    Hard.dealloc(own, l);
                })
                .join()
                .unwrap();
            }
            "double-free-huge" => {
                let h = Layout::from_size_align(4 << 20, 8).unwrap();
                let p = Hard.alloc(h);
                Hard.dealloc(p, h);
                Hard.dealloc(p, h);
            }
            "underflow" => {
                // The first block of a segment's first page sits right after
                // the metadata slice's guard page.
                let p = Hard.alloc(l);
                let first = (p as usize & !((4 << 20) - 1)) + (64 << 10);
                (first as *mut u8).sub(1).write(1);
            }
            other => panic!("unknown case {other}"),
        }
    }
}

#[test]
fn child() {
    if let Ok(case) = std::env::var("EMMA_HARDENED_CASE") {
        misuse(&case);
        std::process::exit(0);
    }
}

fn expect(case: &str, signal: i32, message: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("EMMA_HARDENED_CASE", case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "case {case}: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(message),
        "case {case}: expected \"{message}\" in:\n{stderr}"
    );
}

#[test]
fn writes_into_freed_blocks_are_caught_at_reuse() {
    expect(
        "use-after-free-write",
        SIGABRT,
        "a freed block was written to",
    );
}

#[test]
fn forged_free_list_links_are_caught() {
    expect("forged-link", SIGABRT, "free list overwritten");
}

#[test]
fn double_frees_are_caught() {
    expect("double-free", SIGABRT, "double free");
    expect("double-free-remote", SIGABRT, "double free");
    expect("double-free-remote-chain", SIGABRT, "double free");
    expect("double-free-huge", SIGABRT, "double free of a huge block");
}

#[test]
fn underflows_into_metadata_hit_a_guard_page() {
    expect("underflow", SIGSEGV, "");
}

#[test]
fn correct_programs_run_unchanged() {
    let mut v: Vec<Vec<u8>> = Vec::new();
    unsafe {
        for i in 0..20_000usize {
            let size = 1 + (i * 37) % 3000;
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = Hard.alloc(l);
            p.write_bytes(i as u8, size);
            v.push(std::slice::from_raw_parts(p, size).to_vec());
            if i % 3 == 0 {
                Hard.dealloc(p, l);
            }
        }
    }
    assert_eq!(v.len(), 20_000);
}
