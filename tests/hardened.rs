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

// ---- use after free of huge blocks ------------------------------------------
//
// A freed huge span is emptied, made inaccessible and quarantined, so that a
// stale pointer faults instead of reaching whatever is allocated next. Its
// own child dispatcher, so these cases stay apart from the ones above.

emma::emma_instance!(HardHuge);

const HUGE: usize = 8 << 20;

fn huge_misuse(case: &str) {
    let h = Layout::from_size_align(HUGE, 16).unwrap();
    unsafe {
        let p = HardHuge.alloc(h);
        p.write_bytes(0x5A, HUGE);
        let stale = match case {
            "huge-use-after-free" => {
                HardHuge.dealloc(p, h);
                p
            }
            "huge-use-after-realloc" => {
                // Keep the kernel from growing the mapping in place: take
                // the address range right after it (its mapping is the
                // block rounded up to 4 MiB chunks, after the two lead pages).
                let end = (p as usize & !((4 << 20) - 1)) + HUGE + (4 << 20);
                let _ = mmap_fixed_noreplace(end);
                let q = HardHuge.realloc(p, h, 3 * HUGE);
                assert!(!q.is_null() && q != p, "realloc did not move");
                assert_eq!(q.add(HUGE - 1).read(), 0x5A);
                p
            }
            other => panic!("unknown case {other}"),
        };
        // Blocks of the same size allocated afterwards must not land on it.
        for _ in 0..4 {
            let q = HardHuge.alloc(h);
            q.write_bytes(1, HUGE);
        }
        eprintln!("reading through the stale pointer");
        let v = std::ptr::read_volatile(stale.add(HUGE / 2));
        eprintln!("UNCAUGHT: read {v:#x} through a stale pointer");
    }
}

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

/// Maps one page at `addr` unless something is there already.
fn mmap_fixed_noreplace(addr: usize) -> *mut u8 {
    const PROT_READ: i32 = 1;
    const MAP_PRIVATE: i32 = 2;
    const MAP_ANONYMOUS: i32 = 0x20;
    const MAP_FIXED_NOREPLACE: i32 = 0x10_0000;
    unsafe {
        mmap(
            addr as *mut u8,
            4096,
            PROT_READ,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    }
}

#[test]
fn huge_child() {
    if let Ok(case) = std::env::var("EMMA_HARDENED_HUGE_CASE") {
        huge_misuse(&case);
        std::process::exit(0);
    }
}

fn expect_huge_segv(case: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "huge_child", "--nocapture", "--test-threads=1"])
        .env("EMMA_HARDENED_HUGE_CASE", case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGSEGV),
        "case {case}: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("reading through the stale pointer"),
        "case {case} died too early:\n{stderr}"
    );
}

#[test]
fn use_after_free_of_a_huge_block_faults() {
    expect_huge_segv("huge-use-after-free");
}

#[test]
fn use_of_a_huge_block_after_a_moving_realloc_faults() {
    expect_huge_segv("huge-use-after-realloc");
}
