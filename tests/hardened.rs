//! The `hardened` feature catches heap misuse, each case twice: in a C
//! program (`tests/embed/misuse/misuse.c`, compiled against plain malloc)
//! run with emma's preload library built with this test's features, and
//! in Rust against an instance of this binary, through the same C entry
//! points (`emma::c`). Every case runs in a child process that must die by
//! the expected signal with the expected message.
//!
//! And the other half of the contract: correct programs (python3, git,
//! gcc, a threaded C++ program) run under the hardened preload with the
//! same output as without it.
#![cfg(feature = "hardened")]
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
#[path = "embed/util.rs"]
mod util;

use common::{assert_died, must_die, proc_maps, SIGABRT, SIGSEGV};
use emma::c::{self, NoErrno};
use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::process::Command;

emma::emma_instance!(Hard);

/// The preload library the C cases and the real programs run under, built
/// with this test's profile and features (`hardened` among them) into a
/// target directory of its own: the one place that names it.
fn preload_lib() -> PathBuf {
    util::libemma()
}

/// The misuse program.
fn misuse_exe() -> PathBuf {
    util::compile(
        "gcc",
        &["misuse/misuse.c"],
        "misuse",
        &["-O0", "-fno-builtin", "-w"],
    )
}

fn malloc(n: usize) -> *mut u8 {
    c::malloc::<Hard, NoErrno>(n)
}

unsafe fn free(p: *mut u8) {
    unsafe { c::free::<Hard>(p) }
}

/// Frees `n` blocks of `size` bytes: pushes a quarantined block out.
fn churn(size: usize, n: usize) {
    for _ in 0..n {
        unsafe { free(malloc(size)) };
    }
}

unsafe fn overflow(n: usize) {
    let p = malloc(n);
    unsafe {
        p.write_bytes(b'a', n);
        p.add(n).write(b'b');
        free(p);
    }
}

/// The Rust twin of `misuse.c`: performs case `case`.
fn misuse(case: &str) {
    let sink = |v: u8| {
        std::hint::black_box(v);
    };
    let mut buf = [0u8; 64];
    let stack = std::hint::black_box(buf.as_mut_ptr());
    unsafe {
        match case {
            "overflow-small" => overflow(24),
            "overflow-exact" => overflow(32),
            "overflow-medium" => overflow(50_000),
            "overflow-large" => overflow(3 << 20),
            "overflow-realloc" => {
                let p = malloc(40);
                p.add(40).write(1);
                free(c::realloc::<Hard, NoErrno>(p, 4000));
            }
            "use-after-free" => {
                let p = malloc(64);
                free(p);
                p.add(40).write(1);
                churn(64, 200);
                for _ in 0..2000 {
                    sink(malloc(64).read());
                }
            }
            "use-after-free-sampled" => {
                // A 600-byte block's junk is sampled; its first 64 bytes
                // (and its last) are always checked.
                let p = malloc(600);
                free(p);
                p.add(20).write(1);
                churn(600, 200);
                for _ in 0..2000 {
                    sink(malloc(600).read());
                }
            }
            "zero-read" => sink(std::ptr::read_volatile(malloc(0))),
            "zero-write" => std::ptr::write_volatile(malloc(0), 1),
            "double-free" => {
                let p = malloc(64);
                free(p);
                free(p);
            }
            "double-free-quarantined" => {
                let p = malloc(64);
                free(p);
                churn(64, 200);
                free(p);
            }
            "double-free-medium" => {
                let p = malloc(100_000);
                free(p);
                free(p);
            }
            "double-free-large" => {
                let p = malloc(8 << 20);
                free(p);
                free(p);
            }
            "double-free-zero" => {
                let p = malloc(0);
                free(p);
                free(p);
            }
            "double-free-remote" => {
                let p = malloc(64) as usize;
                std::thread::spawn(move || {
                    free(p as *mut u8);
                    free(p as *mut u8);
                })
                .join()
                .unwrap();
            }
            "double-free-remote-chain" => {
                // The freeing thread has a heap of its own, so its remote
                // frees wait in a chain of the page (links with the page's
                // keys) when the second free comes.
                let (p, q) = (malloc(64) as usize, malloc(64) as usize);
                std::thread::spawn(move || {
                    let own = malloc(64);
                    free(q as *mut u8);
                    free(p as *mut u8);
                    free(p as *mut u8);
                    free(own);
                })
                .join()
                .unwrap();
            }
            "free-interior" => free(malloc(64).add(16)),
            "free-misaligned" => free(malloc(64).add(1)),
            "free-foreign" => free(stack.add(16)),
            "realloc-interior" => {
                c::realloc::<Hard, NoErrno>(malloc(64).add(32), 100);
            }
            "realloc-freed" => {
                let p = malloc(64);
                free(p);
                c::realloc::<Hard, NoErrno>(p, 100);
            }
            "usable-size-interior" => {
                c::malloc_usable_size::<Hard>(malloc(64).add(16));
            }
            "usable-size-freed" => {
                let p = malloc(64);
                free(p);
                c::malloc_usable_size::<Hard>(p);
            }
            "usable-size-foreign" => {
                c::malloc_usable_size::<Hard>(stack);
            }
            "sized-free-smaller" => c::free_sized::<Hard, NoErrno>(malloc(48), 40),
            "sized-free-larger" => c::free_sized::<Hard, NoErrno>(malloc(100_000), 100_016),
            "sized-free-array" => {
                // `delete` of a `new T[4]` block: the size of one element.
                c::free_sized::<Hard, NoErrno>(malloc(4 * 24), 24)
            }
            "aligned-free-misaligned" => {
                // Of a few neighbouring 100-byte blocks, one is not
                // 64-byte aligned.
                let p = (0..4)
                    .map(|_| c::aligned_alloc::<Hard, NoErrno>(16, 100))
                    .find(|p| !(*p as usize).is_multiple_of(64))
                    .unwrap();
                c::free_aligned::<Hard>(p, 64);
            }
            other => panic!("unknown case {other}"),
        }
    }
    std::hint::black_box(&mut buf);
}

const OVERFLOW: &str = "heap overflow: a write past the end of a block";
const DOUBLE: &str = "double free (block is not live)";

/// Runs each case in Rust, then in C under the preload (unless
/// `rust_only`), asserting the signal and message.
fn both(test: &str, cases: &[(&str, i32, &str)], rust_only: bool) {
    for &(case, signal, message) in cases {
        must_die(test, case, signal, message, || misuse(case));
    }
    if rust_only || std::env::var_os("EMMA_TEST_MISUSE").is_some() {
        return;
    }
    let (lib, exe) = (preload_lib(), misuse_exe());
    for &(case, signal, message) in cases {
        let out = util::run(Command::new(&exe).arg(case).env("LD_PRELOAD", &lib));
        assert_died(&out, signal, message, &format!("C case {case}"));
    }
}

#[test]
fn writes_past_the_end_are_caught() {
    both(
        "writes_past_the_end_are_caught",
        &[
            ("overflow-small", SIGABRT, OVERFLOW),
            ("overflow-exact", SIGABRT, OVERFLOW),
            ("overflow-medium", SIGABRT, OVERFLOW),
            ("overflow-large", SIGABRT, OVERFLOW),
            ("overflow-realloc", SIGABRT, OVERFLOW),
        ],
        false,
    );
}

#[test]
fn writes_into_freed_blocks_are_caught_at_reuse() {
    both(
        "writes_into_freed_blocks_are_caught_at_reuse",
        &[(
            "use-after-free",
            SIGABRT,
            "heap corruption: a freed block was written to (use after free)",
        )],
        false,
    );
}

#[test]
fn writes_into_the_checked_windows_of_larger_freed_blocks_are_caught() {
    both(
        "writes_into_the_checked_windows_of_larger_freed_blocks_are_caught",
        &[(
            "use-after-free-sampled",
            SIGABRT,
            "heap corruption: a freed block was written to (use after free)",
        )],
        true,
    );
}

#[test]
fn zero_size_blocks_fault_on_access() {
    both(
        "zero_size_blocks_fault_on_access",
        &[("zero-read", SIGSEGV, ""), ("zero-write", SIGSEGV, "")],
        false,
    );
}

#[test]
fn double_frees_of_every_kind_are_caught() {
    both(
        "double_frees_of_every_kind_are_caught",
        &[
            ("double-free", SIGABRT, DOUBLE),
            ("double-free-quarantined", SIGABRT, DOUBLE),
            ("double-free-medium", SIGABRT, DOUBLE),
            ("double-free-large", SIGABRT, "double free of a huge block"),
            (
                "double-free-zero",
                SIGABRT,
                "double free of a zero-size block",
            ),
        ],
        false,
    );
    both(
        "double_frees_of_every_kind_are_caught",
        &[
            ("double-free-remote", SIGABRT, DOUBLE),
            ("double-free-remote-chain", SIGABRT, DOUBLE),
        ],
        true,
    );
}

#[test]
fn bad_pointers_are_caught_everywhere() {
    let interior = "interior pointer: not the start of a block";
    let foreign = "foreign pointer: not allocated by this emma instance";
    both(
        "bad_pointers_are_caught_everywhere",
        &[
            ("free-interior", SIGABRT, interior),
            (
                "free-misaligned",
                SIGABRT,
                "misaligned pointer: not the start of a block",
            ),
            ("free-foreign", SIGABRT, foreign),
            ("realloc-interior", SIGABRT, interior),
            ("realloc-freed", SIGABRT, DOUBLE),
            ("usable-size-interior", SIGABRT, interior),
            ("usable-size-freed", SIGABRT, DOUBLE),
            ("usable-size-foreign", SIGABRT, foreign),
        ],
        false,
    );
}

#[test]
fn mismatched_sized_and_aligned_frees_are_caught() {
    let sized = "sized free: the size does not match the allocation";
    both(
        "mismatched_sized_and_aligned_frees_are_caught",
        &[
            ("sized-free-smaller", SIGABRT, sized),
            ("sized-free-larger", SIGABRT, sized),
            ("sized-free-array", SIGABRT, sized),
            (
                "aligned-free-misaligned",
                SIGABRT,
                "aligned free: the pointer does not have the alignment given",
            ),
        ],
        true,
    );
}

#[test]
fn correct_use_is_never_reported() {
    unsafe {
        // New blocks hold junk, not zeros and not old data; calloc zeroes.
        let p = malloc(200);
        assert!(std::slice::from_raw_parts(p, 200)
            .iter()
            .all(|&b| b == 0xdb));
        assert_eq!(c::malloc_usable_size::<Hard>(p), 200);
        p.write_bytes(7, 200);
        free(p);
        let z = c::calloc::<Hard, NoErrno>(50, 4);
        assert!(std::slice::from_raw_parts(z, 200).iter().all(|&b| b == 0));
        free(z);
        // A freed block is not handed out again at once.
        let a = malloc(64);
        free(a);
        assert_ne!(malloc(64), a);
        // Zero-size blocks are unique, freeable, reallocable.
        let (z1, z2) = (malloc(0), malloc(0));
        assert!(!z1.is_null() && z1 != z2);
        assert_eq!(c::malloc_usable_size::<Hard>(z1), 0);
        free(z1);
        let z2 = c::realloc::<Hard, NoErrno>(z2, 10);
        z2.write_bytes(1, 10);
        free(z2);
        // Exact sized frees, including C++'s `new` of 0 bytes as malloc(1).
        for n in [1, 16, 48, 1000, 100_000, 2 << 20] {
            c::free_sized::<Hard, NoErrno>(malloc(n), n);
        }
        c::free_sized::<Hard, NoErrno>(malloc(1), 0);
        c::free_sized::<Hard, NoErrno>(malloc(0), 0);
        let q = c::aligned_alloc::<Hard, NoErrno>(64, 100);
        c::free_aligned_sized::<Hard, NoErrno>(q, 64, 100);
        // Realloc keeps the contents and the canary moves with the size.
        let mut r = malloc(10);
        for n in [20, 13, 100, 5000, 40, 3 << 20, 7] {
            r.write_bytes(n as u8, c::malloc_usable_size::<Hard>(r));
            r = c::realloc::<Hard, NoErrno>(r, n);
            assert_eq!(c::malloc_usable_size::<Hard>(r), n);
        }
        free(r);
    }
    // GlobalAlloc users: a mix of sizes, all written to the last byte.
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

/// Many zero-size blocks and quarantined frees on several threads add a
/// handful of mappings, not one per block (`vm.max_map_count` is finite).
#[test]
fn protection_does_not_exhaust_mappings() {
    let before = proc_maps().len();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let zs: Vec<usize> = (0..50_000).map(|_| malloc(0) as usize).collect();
                churn(64, 10_000);
                for z in zs {
                    unsafe { free(z as *mut u8) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = proc_maps().len();
    assert!(after < before + 40, "{before} mappings grew to {after}");
}

#[test]
fn c_programs_run_clean_under_the_hardened_preload() {
    let (lib, exe) = (preload_lib(), misuse_exe());
    let out = util::run_ok(Command::new(&exe).arg("correct").env("LD_PRELOAD", &lib));
    assert_eq!(out, "ok\n");
}

/// Runs `make()` plainly and with the hardened preload: same stdout, and
/// the preloaded run succeeds.
fn same_output(make: impl Fn() -> Command) {
    let expected = util::run_ok(&mut make());
    let mut cmd = make();
    cmd.env("LD_PRELOAD", preload_lib());
    assert_eq!(util::run_ok(&mut cmd), expected, "{cmd:?}");
}

#[test]
fn real_programs_run_clean_under_the_hardened_preload() {
    let root = util::root();
    same_output(|| {
        let mut c = Command::new("python3");
        c.arg(root.join("tests/embed/alloc_heavy.py"));
        c
    });
    same_output(|| {
        let mut c = Command::new("git");
        c.arg("-C").arg(&root).args(["log", "--stat", "-30"]);
        c
    });
    let cpp = util::compile(
        "g++",
        &["threads.cpp"],
        "threads_cpp",
        &["-O2", "-pthread", "-std=c++17"],
    );
    same_output(|| {
        let mut c = Command::new(&cpp);
        c.args(["4", "3000"]);
        c
    });
    let obj = util::embed_dir().join("hardened_gcc.o");
    let mut gcc = Command::new("gcc");
    gcc.args(["-O2", "-c"])
        .arg(root.join("tests/embed/c_contract.c"))
        .arg("-o")
        .arg(&obj)
        .env("LD_PRELOAD", preload_lib());
    util::run_ok(&mut gcc);
    let mut gxx = Command::new("g++");
    gxx.args(["-O2", "-std=c++17", "-c"])
        .arg(root.join("tests/embed/threads.cpp"))
        .arg("-o")
        .arg(util::embed_dir().join("hardened_gxx.o"))
        .env("LD_PRELOAD", preload_lib());
    util::run_ok(&mut gxx);
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
fn use_after_free_of_a_huge_block_faults() {
    let test = "use_after_free_of_a_huge_block_faults";
    let case = "huge-use-after-free";
    must_die(test, case, SIGSEGV, "", || huge_misuse(case));
}

#[test]
fn use_of_a_huge_block_after_a_moving_realloc_faults() {
    let test = "use_of_a_huge_block_after_a_moving_realloc_faults";
    let case = "huge-use-after-realloc";
    must_die(test, case, SIGSEGV, "", || huge_misuse(case));
}
