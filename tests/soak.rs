//! Soak: many threads, several instances, cross-thread frees, thread churn,
//! forks and trims, for as long as asked. Ignored by default.
//!
//! ```sh
//! EMMA_SOAK_SECS=600 cargo test --release --test soak -- --ignored soak --nocapture
//! EMMA_SOAK_SECS=600 cargo test --release --no-default-features --test soak -- --ignored soak --nocapture
//! ```
//!
//! Every block carries a cookie (derived from its address, size and
//! instance) that is checked when it is freed; the test reports the
//! operations done, the forks and thread generations survived, and the
//! corruption found (which must be zero).
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

emma::emma_instance!(SoakGlobal);
#[global_allocator]
static GLOBAL: SoakGlobal = SoakGlobal::new();
emma::emma_instance!(SoakA);
emma::emma_instance!(SoakB);

unsafe extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(code: i32) -> !;
}

const SLOTS: usize = 4096;
/// Shared slots through which blocks travel between threads. A block's
/// first word records its size and instance (`size << 2 | instance`), so a
/// slot is one atomic word.
static SLOTS_ADDR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static OPS: AtomicU64 = AtomicU64::new(0);
static CORRUPT: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn cookie(addr: usize, size: usize, inst: usize) -> u8 {
    ((addr >> 4) ^ size ^ (inst * 0x5b)) as u8 | 1
}

/// Allocates `size` bytes from instance `inst` and stamps the cookie.
unsafe fn alloc(inst: usize, size: usize) -> *mut u8 {
    let l = Layout::from_size_align(size, 16).unwrap();
    unsafe {
        let p = match inst {
            0 => GLOBAL.alloc(l),
            1 => SoakA.alloc(l),
            _ => SoakB.alloc(l),
        };
        assert!(!p.is_null());
        p.write_bytes(cookie(p as usize, size, inst), size.min(64));
        p.cast::<usize>().write(size << 2 | inst);
        p
    }
}

/// Checks the cookie of a block made by `alloc`, then frees it.
unsafe fn free(p: *mut u8) {
    unsafe {
        let meta = p.cast::<usize>().read();
        let (size, inst) = (meta >> 2, meta & 3);
        let c = cookie(p as usize, size, inst);
        let l = Layout::from_size_align(size, 16).unwrap();
        if std::slice::from_raw_parts(p, size.min(64))[8..]
            .iter()
            .any(|&b| b != c)
        {
            CORRUPT.fetch_add(1, Ordering::Relaxed);
        }
        match inst {
            0 => GLOBAL.dealloc(p, l),
            1 => SoakA.dealloc(p, l),
            _ => SoakB.dealloc(p, l),
        }
    }
}

/// One worker: random sizes, swapping blocks through the shared slots so
/// most frees happen on another thread. Runs for `rounds` rounds.
fn worker(seed: u64, rounds: usize) {
    let mut x = seed | 1;
    for _ in 0..rounds {
        if STOP.load(Ordering::Relaxed) {
            return;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let inst = (x % 3) as usize;
        let size = match (x >> 8) % 16 {
            0..=11 => 16 + (x >> 16) as usize % 512,
            12..=14 => 16 + (x >> 16) as usize % 65_536,
            _ => 16 + (x >> 16) as usize % (3 << 20),
        };
        let slot = (x >> 40) as usize % SLOTS;
        unsafe {
            let p = alloc(inst, size);
            let old = SLOTS_ADDR[slot].swap(p as usize, Ordering::AcqRel);
            if old != 0 {
                free(old as *mut u8);
            }
        }
        OPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A child after fork: allocate and free in every instance, then leave.
fn child_work() -> ! {
    let before = CORRUPT.load(Ordering::Relaxed);
    let mut v = Vec::new();
    for i in 0..2000usize {
        unsafe { v.push(alloc(i % 3, 16 + (i * 7919) % 20_000)) };
    }
    for p in v {
        unsafe { free(p) };
    }
    let code = if CORRUPT.load(Ordering::Relaxed) == before {
        0
    } else {
        3
    };
    unsafe { _exit(code) }
}

#[test]
#[ignore = "long-running; see the file header"]
fn soak() {
    let secs: u64 = std::env::var("EMMA_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut generations, mut forks, mut failed_children) = (0u64, 0u64, 0u64);
    let mut report = Instant::now();
    while Instant::now() < deadline {
        // A generation: 8 threads for a short while, then they exit and
        // the next generation inherits their blocks through the slots.
        let handles: Vec<_> = (0..8)
            .map(|t| std::thread::spawn(move || worker(generations * 8 + t + 1, 20_000)))
            .collect();
        // Fork while the workers run.
        if generations % 4 == 0 {
            let pid = unsafe { fork() };
            if pid == 0 {
                child_work();
            }
            let mut status = 0;
            unsafe { waitpid(pid, &mut status, 0) };
            forks += 1;
            if status != 0 {
                failed_children += 1;
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        generations += 1;
        if generations % 16 == 0 {
            SoakA.trim();
            SoakB.trim();
            GLOBAL.trim();
        }
        if report.elapsed() > Duration::from_secs(10) {
            report = Instant::now();
            eprintln!(
                "soak: {:>6} s left, {} ops, {generations} generations, {forks} forks, {} corrupt, heaps {}/{}/{}",
                deadline.saturating_duration_since(Instant::now()).as_secs(),
                OPS.load(Ordering::Relaxed),
                CORRUPT.load(Ordering::Relaxed),
                GLOBAL.stats().heaps,
                SoakA.stats().heaps,
                SoakB.stats().heaps,
            );
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for slot in &SLOTS_ADDR {
        let a = slot.swap(0, Ordering::AcqRel);
        if a != 0 {
            unsafe { free(a as *mut u8) };
        }
    }
    eprintln!(
        "soak done: {} ops, {generations} thread generations, {forks} forks ({failed_children} failed), {} corrupt blocks",
        OPS.load(Ordering::Relaxed),
        CORRUPT.load(Ordering::Relaxed)
    );
    eprintln!(
        "global: {}\nA: {}\nB: {}",
        GLOBAL.stats(),
        SoakA.stats(),
        SoakB.stats()
    );
    assert_eq!(CORRUPT.load(Ordering::Relaxed), 0);
    assert_eq!(failed_children, 0);
}
