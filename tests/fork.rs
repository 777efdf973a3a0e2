//! `fork` while other threads are inside the allocator: the child can
//! allocate and free in every instance, whatever state the vanished
//! threads left the locks, caches and heaps in.
//!
//! - Four threads hammer three instances (one of them the global
//!   allocator: std's own allocations hit it too), passing blocks through
//!   shared slots, while the main thread forks 50 times. Each child
//!   allocates and frees a few thousand stamped blocks of all sizes in
//!   every instance, frees blocks the parent's threads left in the slots
//!   (remote frees into heaps of threads that do not exist in the child),
//!   checks its heaps, spawns four threads of its own (which may inherit
//!   the vanished threads' heaps), sometimes forks again, and `_exit`s
//!   with 0. The parent waits with a timeout (a hung child is
//!   killed and reported) and requires every child to exit 0.
//! - Deterministically: a thread is stopped inside the instance's store
//!   lock (in the memory-limit hook, which runs there) while the main
//!   thread forks; the child must not deadlock on that lock.
//!
//! Children report failures on fd 2 with a raw `write` and a distinct exit
//! code; they never return into the test harness.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use emma::InstanceExt;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

emma::emma_instance!(Global);
emma::emma_instance!(P);
emma::emma_instance!(Q);
emma::emma_instance!(Locked);

#[global_allocator]
static G: Global = Global::new();

unsafe extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn write(fd: i32, buf: *const u8, len: usize) -> isize;
    fn _exit(code: i32) -> !;
}
const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Exit codes of a child.
const CHILD_OK: i32 = 0;
const CHILD_PANICKED: i32 = 3;

fn insts() -> [Dyn; 3] {
    [
        dyn_of::<Global>("Global"),
        dyn_of::<P>("P"),
        dyn_of::<Q>("Q"),
    ]
}

const SLOTS: usize = 256;
static SLOT: [[AtomicPtr<u8>; SLOTS]; 3] =
    [const { [const { AtomicPtr::new(core::ptr::null_mut()) }; SLOTS] }; 3];

/// Writes to fd 2 without std's locks (another thread may have held them
/// when the process forked).
fn raw_eprint(s: &str) {
    unsafe { write(2, s.as_ptr(), s.len()) };
}

/// Forks; the child runs `body` and `_exit`s with its code (a panic
/// becomes [`CHILD_PANICKED`], its message written raw to fd 2). The
/// parent gets the child's pid.
fn spawn_child(body: impl FnOnce() -> i32) -> i32 {
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        std::panic::set_hook(Box::new(|info| {
            raw_eprint(&format!("fork child: {info}\n"))
        }));
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(CHILD_PANICKED);
        unsafe { _exit(code) };
    }
    pid
}

/// Waits for `pid` for at most [`CHILD_TIMEOUT`] (killing it then) and
/// returns its raw wait status, or `None` if it hung.
fn wait_child(pid: i32) -> Option<i32> {
    let start = Instant::now();
    let mut status = 0;
    loop {
        let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
        if r == pid {
            return Some(status);
        }
        assert_eq!(r, 0, "waitpid failed");
        if start.elapsed() > CHILD_TIMEOUT {
            unsafe {
                kill(pid, SIGKILL);
                waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[track_caller]
fn assert_exited_ok(pid: i32, what: &str) {
    match wait_child(pid) {
        None => panic!("{what}: child {pid} hung (killed after {CHILD_TIMEOUT:?})"),
        Some(st) if st & 0x7f != 0 => panic!("{what}: child {pid} killed by signal {}", st & 0x7f),
        Some(st) => assert_eq!((st >> 8) & 0xff, CHILD_OK, "{what}: child {pid} failed"),
    }
}

/// Allocates `n` stamped blocks of mixed sizes from `d` (one in 1,000
/// huge), keeping up to 100 live, checking and freeing them in random
/// order.
fn churn(d: Dyn, rng: &mut Rng, n: usize) {
    let mut live: Vec<*mut u8> = Vec::with_capacity(128);
    for k in 0..n {
        let size = if k % 1000 == 0 {
            rng.range(emma::MAX_CLASS_SIZE + 1, 3 << 20)
        } else {
            rng.size().clamp(COOKIE_MIN, 64 << 10)
        };
        let align = if k % 5 == 0 {
            1 << rng.range(5, 16)
        } else {
            16
        };
        let p = unsafe { (d.alloc)(layout(size, align)) };
        assert!(!p.is_null(), "{}: alloc({size}, {align}) failed", d.name);
        assert_eq!(p as usize % align, 0);
        unsafe { stamp(p, size, align) };
        live.push(p);
        if live.len() > 100 {
            let p = live.swap_remove(rng.below(live.len()));
            unsafe { (d.dealloc)(p, check_stamp(p)) };
        }
    }
    for p in live {
        unsafe { (d.dealloc)(p, check_stamp(p)) };
    }
    d.assert_heap_ok("after churn");
}

/// What a child of the hammered process does.
fn child_work(round: usize) -> i32 {
    let insts = insts();
    let mut rng = Rng::new(round as u64 + 1000);
    for d in insts {
        churn(d, &mut rng, 1500);
    }
    // Blocks the parent's threads published: freeing them is a remote free
    // into a heap whose owner does not exist here.
    for (k, d) in insts.iter().enumerate() {
        for s in SLOT[k].iter().take(64) {
            let p = s.swap(core::ptr::null_mut(), AcqRel);
            if !p.is_null() {
                unsafe { (d.dealloc)(p, check_stamp(p)) };
            }
        }
    }
    // New threads in the child, as many as the parent had hammering: they
    // may inherit the vanished threads' stacks, hence their thread pointers
    // and (rule 1) their heaps, with whatever those heaps held at the fork.
    let hs: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                for d in insts {
                    churn(d, &mut rng, 300);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    if round.is_multiple_of(10) {
        // And a grandchild.
        let pid = spawn_child(move || {
            let mut rng = Rng::new(round as u64);
            for d in insts {
                churn(d, &mut rng, 1000);
            }
            CHILD_OK
        });
        assert_exited_ok(pid, "grandchild");
    }
    CHILD_OK
}

/// A thread allocating and freeing in all three instances, swapping
/// stamped blocks through the shared slots, until `stop`.
fn hammer(t: u64, stop: &AtomicBool) {
    let insts = insts();
    let mut rng = Rng::new(t);
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        let k = rng.below(3);
        let d = insts[k];
        let size = if rng.chance(1, 500) {
            rng.range(emma::MAX_CLASS_SIZE + 1, 3 << 20)
        } else {
            rng.size().clamp(COOKIE_MIN, 128 << 10)
        };
        let p = unsafe { (d.alloc)(layout(size, 16)) };
        assert!(!p.is_null());
        unsafe { stamp(p, size, 16) };
        if rng.chance(1, 3) {
            unsafe { (d.dealloc)(p, check_stamp(p)) };
        } else {
            let old = SLOT[k][rng.below(SLOTS)].swap(p, AcqRel);
            if !old.is_null() {
                unsafe { (d.dealloc)(old, check_stamp(old)) };
            }
        }
        n += 1;
        if n.is_multiple_of(5000) {
            (d.trim)();
        }
    }
}

#[test]
fn fifty_forks_while_four_threads_hammer() {
    static STOP: AtomicBool = AtomicBool::new(false);
    let hammers: Vec<_> = (0..4)
        .map(|t| std::thread::spawn(move || hammer(t, &STOP)))
        .collect();
    std::thread::sleep(Duration::from_millis(20)); // let them get going
    for round in 0..50 {
        let pid = spawn_child(move || child_work(round));
        assert_exited_ok(pid, &format!("fork round {round}"));
    }
    STOP.store(true, Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    for (k, d) in insts().iter().enumerate() {
        for s in &SLOT[k] {
            let p = s.swap(core::ptr::null_mut(), AcqRel);
            if !p.is_null() {
                unsafe { (d.dealloc)(p, check_stamp(p)) };
            }
        }
        d.assert_heap_ok("in the parent after the forks");
    }
}

/// 0: idle; 1: a thread is in the limit hook (holding the store lock);
/// 2: the hook may return.
static HOOK_STATE: AtomicU32 = AtomicU32::new(0);

fn blocking_hook(_requested: usize, _limit: usize) {
    if HOOK_STATE.compare_exchange(0, 1, AcqRel, Acquire).is_ok() {
        while HOOK_STATE.load(Acquire) != 2 {
            std::hint::spin_loop();
        }
    }
}

#[test]
fn fork_while_another_thread_holds_the_store_lock() {
    // A limit of 0 refuses the first mapping the instance makes: the heap
    // metadata of its first thread, which is charged with the store lock
    // held. The hook then parks that thread there.
    Locked.set_limit(Some(0));
    Locked.set_limit_hook(Some(blocking_hook));
    let t = std::thread::spawn(|| {
        let l = layout(64, 16);
        let p = unsafe { core::alloc::GlobalAlloc::alloc(&Locked, l) };
        assert!(p.is_null(), "the limit of 0 let an allocation through");
    });
    while HOOK_STATE.load(Acquire) != 1 {
        std::thread::yield_now();
    }
    let pid = spawn_child(|| {
        Locked.set_limit_hook(None);
        Locked.set_limit(None);
        let mut rng = Rng::new(5);
        churn(dyn_of::<Locked>("Locked"), &mut rng, 2000);
        CHILD_OK
    });
    let outcome = wait_child(pid);
    HOOK_STATE.store(2, Release);
    t.join().unwrap();
    match outcome {
        None => panic!("the child deadlocked on the lock held by a thread it does not have"),
        Some(st) => assert_eq!(st, 0, "child failed: wait status {st:#x}"),
    }
    // The parent's instance works too once the hook let go.
    Locked.set_limit_hook(None);
    Locked.set_limit(None);
    let mut rng = Rng::new(6);
    churn(dyn_of::<Locked>("Locked"), &mut rng, 500);
}
