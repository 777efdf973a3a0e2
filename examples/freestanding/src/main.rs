//! A program with no libc at all, running on emma.
//!
//! A static executable with its own `_start`: no C runtime, no dynamic
//! loader, no libc; every OS service is a raw system call (`write`,
//! `arch_prctl`, `clone`, `futex`, `exit_group` here, `mmap` and friends
//! inside emma). It does real work on an emma instance as its global
//! allocator — a sieve in a `Vec`, word counts in a `BTreeMap`, strings
//! from `alloc::format!`, a buffer grown to 64 MiB, and four threads
//! (started with a raw `clone`) that allocate and hand their results to
//! the main thread, which frees them — prints its results with `write(2)`
//! and exits with `exit_group`.
//!
//! ```text
//! cd examples/freestanding
//! cargo build --release
//! readelf -l target/release/emma-freestanding   # no INTERP, no DYNAMIC
//! ./target/release/emma-freestanding hello     # exit status 0
//! ./target/release/emma-freestanding panic     # exit status 101
//! ```
//!
//! # The thread pointer and the TLS block
//! emma tells threads apart by the thread pointer: it reads `fs:[0]`, which
//! the x86_64 TLS ABI defines as a pointer to the thread control block
//! (TCB) itself. In its default `tls` mode it also keeps each thread's heap
//! in a thread-local slot, which lives in the thread's TLS block, just
//! below the TCB. Every libc sets both up before `main`; a program without
//! libc must do it itself *before its first allocation*: here, a static
//! area for the main thread and one per thread (passed to `clone` with
//! `CLONE_SETTLS`), each a TLS block initialised from the executable's
//! `PT_TLS` segment followed by a TCB whose first word points to itself,
//! installed with `arch_prctl(ARCH_SET_FS, &tcb)`.
//!
//! Built with `--no-default-features` (emma's thread-pointer mode), the
//! program has no TLS block to lay out (its `PT_TLS` segment is absent)
//! and emma finds heaps by the thread pointer alone.
//!
//! The build script (build.rs) links with `-nostartfiles -nostdlib -static
//! -no-pie`; `panic = "abort"` is set in Cargo.toml.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::{asm, naked_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use emma::InstanceExt;

emma::emma_instance!(
    /// The program's heap.
    pub Heap
);

#[global_allocator]
static HEAP: Heap = Heap::new();

// ---- system calls ---------------------------------------------------------

const SYS_WRITE: usize = 1;
const SYS_CLONE: usize = 56;
const SYS_EXIT: usize = 60;
const SYS_ARCH_PRCTL: usize = 158;
const SYS_FUTEX: usize = 202;
const SYS_EXIT_GROUP: usize = 231;
const ARCH_SET_FS: usize = 0x1002;
const FUTEX_WAIT: usize = 0;

/// A raw system call with up to three arguments.
///
/// # Safety
/// The call must be valid for its arguments.
unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    // SAFETY: per the caller; `syscall` clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group ends the process; it does not return.
    unsafe {
        asm!("syscall", in("rax") SYS_EXIT_GROUP, in("rdi") code as isize, options(noreturn, nostack))
    }
}

fn write_all(fd: usize, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { syscall3(SYS_WRITE, fd, buf.as_ptr() as usize, buf.len()) };
        if n <= 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// `fmt::Write` to a file descriptor, buffered on the stack (so that
/// printing allocates nothing, which the panic handler relies on).
struct Fd<const N: usize> {
    fd: usize,
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Fd<N> {
    fn new(fd: usize) -> Self {
        Fd {
            fd,
            buf: [0; N],
            len: 0,
        }
    }
    fn flush(&mut self) {
        write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl<const N: usize> Write for Fd<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == N {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl<const N: usize> Drop for Fd<N> {
    fn drop(&mut self) {
        self.flush();
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{
        let mut out = Fd::<256>::new(1);
        let _ = writeln!(out, $($arg)*);
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut err = Fd::<512>::new(2);
    let _ = writeln!(err, "freestanding: {info}");
    err.flush();
    exit_group(101)
}

// ---- what libc would provide ----------------------------------------------

// `core` lowers copies, fills and comparisons to these; without libc the
// program defines them. `rep movsb`/`rep stosb` are fast on current CPUs
// and cannot be turned back into calls to themselves by the optimiser (a
// plain byte loop can: LLVM recognises loops that are `memset`, `memcpy`,
// `strlen`...).

/// # Safety
/// The C `memcpy` contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: per the C contract both ranges are valid and disjoint.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// The C `memmove` contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // No harmful overlap: copy forwards.
        // SAFETY: per the C contract.
        unsafe { memcpy(dst, src, n) }
    } else {
        // `dst` lies inside the source: copy backwards.
        // SAFETY: per the C contract; the direction flag is restored.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dst.add(n).wrapping_sub(1) => _,
                 inout("rsi") src.add(n).wrapping_sub(1) => _,
                 options(nostack));
        }
        dst
    }
}

/// # Safety
/// The C `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: per the C contract `dst` is valid for `n` bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// The C `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: per the C contract both are valid for `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// The C `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// The C `strlen` contract (`core::ffi::CStr` calls it).
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let end: *const u8;
    // SAFETY: per the C contract `s` is NUL-terminated. `repne scasb`
    // scans for the NUL (al = 0) and leaves rdi one past it.
    unsafe {
        asm!("repne scasb", inout("rdi") s => end, inout("rcx") usize::MAX => _, in("al") 0u8,
             options(nostack, readonly));
    }
    end as usize - s as usize - 1
}

// The unwinder names `core` and `alloc` refer to, as hidden stubs: nothing
// here unwinds (the panic handler exits).
#[path = "../../nostd/unwind_stubs.rs"]
mod unwind_stubs;

// ---- the thread pointer and threads ---------------------------------------

mod tls;
use tls::{init_area, Tcb, ThreadArea, MAIN_AREA};

/// Points `fs` at `tcb`, whose first word points to itself.
///
/// # Safety
/// `tcb` and the TLS block below it live as long as the calling thread.
unsafe fn set_thread_pointer(tcb: *mut Tcb) {
    // SAFETY: per contract; ARCH_SET_FS takes the new fs base.
    unsafe {
        let r = syscall3(SYS_ARCH_PRCTL, ARCH_SET_FS, tcb as usize, 0);
        assert!(r == 0, "arch_prctl(ARCH_SET_FS) failed");
    }
}

/// What a thread runs, and what it needs: its stack and TCB are owned by
/// the parent until the thread has exited.
struct Thread {
    stack: Vec<u8>,
    _area: Box<ThreadArea>,
    /// Cleared by the kernel, with a futex wake, when the thread exits
    /// (`CLONE_CHILD_CLEARTID`).
    tid: Box<AtomicU32>,
}

/// The start of a new thread: calls `f(arg)` and exits the thread.
///
/// Reached on the new thread's stack, which holds `f` and `arg`.
#[unsafe(naked)]
unsafe extern "C" fn thread_start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "pop rdi", // arg
        "pop rax", // f
        "call rax",
        "mov edi, eax",
        "mov eax, {exit}",
        "syscall",
        "ud2",
        exit = const SYS_EXIT,
    )
}

/// Starts a thread running `f(arg)` with a stack of `stack_size` bytes
/// and a TCB of its own, all allocated from emma.
fn spawn(f: extern "C" fn(usize) -> i32, arg: usize, stack_size: usize) -> Thread {
    const FLAGS: usize = 0x100 // CLONE_VM
        | 0x200 // CLONE_FS
        | 0x400 // CLONE_FILES
        | 0x800 // CLONE_SIGHAND
        | 0x10000 // CLONE_THREAD
        | 0x40000 // CLONE_SYSVSEM
        | 0x80000 // CLONE_SETTLS
        | 0x100000 // CLONE_PARENT_SETTID
        | 0x200000; // CLONE_CHILD_CLEARTID
    let mut stack = alloc::vec![0u8; stack_size];
    let mut area = Box::new(ThreadArea::new());
    // SAFETY: a new area, owned by `area`.
    let tcb = unsafe { init_area(&mut *area) };
    let tid = Box::new(AtomicU32::new(0));
    // The new thread starts at `thread_start` with `rsp` = `top`, which
    // holds `arg` then `f` (popped by `thread_start`); `top + 16` is
    // 16-byte aligned, as the ABI wants at the `call`.
    let top = ((stack.as_mut_ptr() as usize + stack_size) & !15) - 16;
    // SAFETY: `top` and `top + 8` are inside the stack.
    unsafe {
        (top as *mut usize).write(arg);
        ((top + 8) as *mut usize).write(f as usize);
    }
    let ret: isize;
    // SAFETY: clone(flags, stack, parent_tid, child_tid, tls). In the
    // parent it returns the thread id; the child continues on its own
    // stack at `thread_start`, never returning into this function.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "jmp {start}",
            "2:",
            start = sym thread_start,
            inlateout("rax") SYS_CLONE as isize => ret,
            in("rdi") FLAGS,
            in("rsi") top,
            in("rdx") tid.as_ptr(),
            in("r10") tid.as_ptr(),
            in("r8") tcb,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    assert!(ret > 0, "clone failed: {ret}");
    Thread {
        stack,
        _area: area,
        tid,
    }
}

impl Thread {
    /// Waits until the thread has exited, then frees its stack and TCB.
    fn join(self) {
        loop {
            let t = self.tid.load(Ordering::Acquire);
            if t == 0 {
                break;
            }
            // SAFETY: waits while the word still holds `t`.
            unsafe {
                syscall3(
                    SYS_FUTEX,
                    self.tid.as_ptr() as usize,
                    FUTEX_WAIT,
                    t as usize,
                )
            };
        }
        drop(self.stack);
    }
}

// ---- the program ----------------------------------------------------------

/// The process entry point: the kernel jumps here with `rsp` pointing at
/// `argc`, then the `argv` pointers, a null, the environment.
///
/// # Safety
/// Only the kernel calls it, once, at process start.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    )
}

/// Results each worker thread hands to the main thread, which frees them.
static RESULTS: [core::sync::atomic::AtomicUsize; 4] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; 4];

/// A worker thread: builds a map of strings and leaves it (as a raw
/// `Box`) for the main thread, which frees it: cross-thread frees.
extern "C" fn worker(n: usize) -> i32 {
    let mut m: BTreeMap<u64, String> = BTreeMap::new();
    let mut x = n as u64 * 0x9E37_79B9 + 1;
    for i in 0..30_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.insert(x % 5000, format!("{n}:{i}:{}", x % 1000));
        if i % 3 == 0 {
            m.remove(&(x % 4999));
        }
    }
    RESULTS[n].store(Box::into_raw(Box::new(m)) as usize, Ordering::Release);
    0
}

extern "C" fn entry(sp: *const usize) -> ! {
    // Before anything allocates: give this thread its TLS block and
    // thread pointer.
    // SAFETY: MAIN_AREA lives for the whole program and is used only here.
    unsafe { set_thread_pointer(init_area(&raw mut MAIN_AREA)) };

    // SAFETY: the kernel's initial stack: argc, then argc pointers.
    let args: Vec<&[u8]> = unsafe {
        let argc = *sp;
        (0..argc)
            .map(|i| core::ffi::CStr::from_ptr(*sp.add(1 + i) as *const _).to_bytes())
            .collect()
    };
    let words: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    println!("args: {}", words.join(" "));
    if words.first().map(String::as_str) == Some("panic") {
        // Shows the panic path: a message on stderr and exit status 101.
        panic!("asked to panic");
    }

    let primes = sieve(2_000_000);
    count_endings(&primes);
    grow_buffer();
    threads_and_cross_frees();

    let s = Heap.stats();
    println!(
        "emma: {} heaps, {} MiB mapped at peak",
        s.heaps,
        s.peak_mapped >> 20
    );
    println!("freestanding: OK");
    exit_group(0)
}

/// A sieve in a Vec; returns the primes below `n`.
fn sieve(n: usize) -> Vec<u32> {
    let mut composite = alloc::vec![false; n];
    let mut primes = Vec::new();
    for i in 2..n {
        if !composite[i] {
            primes.push(i as u32);
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    println!(
        "primes below {n}: {}, the last {}",
        primes.len(),
        primes[primes.len() - 1]
    );
    primes
}

/// Word counts in a BTreeMap, keys made with format!.
fn count_endings(primes: &[u32]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in primes {
        *counts.entry(format!("ends-in-{}", p % 10)).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", summary.join(" "));
}

/// A buffer grown to 64 MiB by reallocation (huge blocks, mremap).
fn grow_buffer() {
    let mut big: Vec<u64> = Vec::new();
    for i in 0..(8u64 << 20) {
        big.push(i);
    }
    let sum: u64 = big.iter().step_by(4096).sum();
    println!(
        "grown buffer: {} MiB, sample sum {sum}",
        (big.len() * 8) >> 20
    );
}

/// Four threads, each on its own heap; the main thread frees their maps.
fn threads_and_cross_frees() {
    let threads: Vec<Thread> = (0..4).map(|t| spawn(worker, t, 256 << 10)).collect();
    for t in threads {
        t.join();
    }
    let mut total = 0;
    for r in &RESULTS {
        let p = r.load(Ordering::Acquire) as *mut BTreeMap<u64, String>;
        assert!(!p.is_null(), "a worker left no result");
        // SAFETY: a worker made `p` with `Box::into_raw` and exited.
        let m = unsafe { Box::from_raw(p) };
        assert!(Heap.owns(p.cast()));
        total += m.values().map(String::len).sum::<usize>();
    }
    println!("threads: 4 maps, {total} bytes of strings, freed by the main thread");
}
