//! The test OS backend used under Miri, which cannot run raw syscalls.
//!
//! Same functions and contracts as `sys.rs`, served by `std`: mappings are
//! zeroed heap allocations (large ones 4 MiB aligned, as segments want),
//! purging zeroes memory, `mremap` and the futex report ENOSYS so callers
//! take their fallbacks, and thread ids come from a thread-local counter.
//! Unmapping part of a mapping is ignored (the part leaks), so Miri runs
//! with `-Zmiri-ignore-leaks`. Only emma's own unit tests use it.

extern crate std;

use core::ptr::NonNull;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Mutex;
use std::vec::Vec;

pub use syscalls::Errno;

/// As on Linux x86_64.
pub const PAGE_SIZE: usize = 4096;

/// See `sys.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Advice {
    /// Pages read back as zero.
    DontNeed = 4,
    /// Pages may be dropped lazily.
    Free = 8,
    /// Unsupported here (no fork under Miri).
    WipeOnFork = 18,
    /// A hint with no effect here.
    HugePage = 14,
    /// A hint with no effect here.
    Collapse = 25,
}

/// Live emulated mappings: (address, length, alignment).
static MAPS: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());

/// Mappings of at least this size are aligned to it, like segments.
const BIG_ALIGN: usize = 4 << 20;

fn map(len: usize) -> Result<NonNull<u8>, Errno> {
    let align = if len >= BIG_ALIGN {
        BIG_ALIGN
    } else {
        PAGE_SIZE
    };
    let layout = Layout::from_size_align(len, align).map_err(|_| Errno::ENOMEM)?;
    // SAFETY: `len` is non-zero (callers map whole pages).
    let p = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(Errno::ENOMEM)?;
    MAPS.lock().unwrap().push((p.as_ptr() as usize, len, align));
    Ok(p)
}

/// See `sys.rs`.
pub fn mmap_anon(len: usize) -> Result<NonNull<u8>, Errno> {
    map(len)
}

/// Refused: Miri cannot place a mapping (callers fall back to
/// [`mmap_anon`]).
pub fn mmap_anon_at(_: usize, _: usize) -> Result<NonNull<u8>, Errno> {
    Err(Errno::EEXIST)
}

/// See `sys.rs` (here the reservation is accessible).
pub fn mmap_reserve(len: usize) -> Result<NonNull<u8>, Errno> {
    map(len)
}

/// See `sys.rs`. Only whole emulated mappings are released.
///
/// # Safety
/// As in `sys.rs`.
pub unsafe fn munmap(addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
    let mut maps = MAPS.lock().unwrap();
    let a = addr.as_ptr() as usize;
    if let Some(i) = maps.iter().position(|&(b, l, _)| b == a && l == len) {
        let (_, l, al) = maps.swap_remove(i);
        // SAFETY: allocated by `map` with this layout.
        unsafe { dealloc(addr.as_ptr(), Layout::from_size_align_unchecked(l, al)) };
    }
    Ok(())
}

/// Unsupported: callers copy instead.
///
/// # Safety
/// As in `sys.rs`.
pub unsafe fn mremap_in_place(_: NonNull<u8>, _: usize, _: usize) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Unsupported: callers copy instead.
///
/// # Safety
/// As in `sys.rs`.
pub unsafe fn mremap_to(_: NonNull<u8>, _: usize, _: usize, _: NonNull<u8>) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Unsupported: callers copy instead.
///
/// # Safety
/// As in `sys.rs`.
pub unsafe fn mremap_keep_source(_: NonNull<u8>, _: usize, _: NonNull<u8>) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Accepted and ignored.
///
/// # Safety
/// As in `sys.rs`.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub unsafe fn mprotect_none(_: *mut u8, _: usize) -> Result<(), Errno> {
    Ok(())
}

/// `DontNeed` zeroes the range; `Free` keeps it; `WipeOnFork` is refused.
///
/// # Safety
/// As in `sys.rs`.
pub unsafe fn madvise(addr: NonNull<u8>, len: usize, advice: Advice) -> Result<(), Errno> {
    match advice {
        // SAFETY: per contract the range is the caller's.
        Advice::DontNeed => unsafe { addr.as_ptr().write_bytes(0, len) },
        Advice::Free | Advice::HugePage | Advice::Collapse => {}
        Advice::WipeOnFork => return Err(Errno::EINVAL),
    }
    Ok(())
}

/// Unsupported: the lock falls back to yielding.
pub fn futex_wait(_: &core::sync::atomic::AtomicU32, _: u32) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Nothing sleeps on a futex here.
pub fn futex_wake(_: &core::sync::atomic::AtomicU32, _: u32) -> Result<usize, Errno> {
    Ok(0)
}

std::thread_local! {
    static TID: u32 = {
        static NEXT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(100);
        NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    };
    static TP: u8 = const { 0 };
    /// Emulated heap slots of the `tls` mode: (instance key, value).
    static SLOTS: std::cell::RefCell<Vec<(usize, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The calling thread's value of slot `key` (0 if never set): the
/// per-instance thread-local slot, which Miri cannot run as assembly.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub fn tls_get(key: usize) -> usize {
    SLOTS.with(|s| s.borrow().iter().find(|e| e.0 == key).map_or(0, |e| e.1))
}

/// Sets the calling thread's value of slot `key`.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub fn tls_set(key: usize, value: usize) {
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        match s.iter_mut().find(|e| e.0 == key) {
            Some(e) => e.1 = value,
            None => s.push((key, value)),
        }
    })
}

/// A unique id per thread.
pub fn gettid() -> u32 {
    TID.with(|t| *t)
}

/// Nanoseconds since an arbitrary start, from std's monotonic clock.
pub fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Nanoseconds again, offset like a counter that has been running since
/// boot: only a gate for reading the clock (see `sys.rs`).
pub fn cycles() -> u64 {
    monotonic_ns() + (1 << 40)
}

/// Unknown here.
pub fn tid_address() -> usize {
    0
}

/// A fixed process id.
pub fn getpid() -> u32 {
    1
}

/// Threads are never proven dead here.
pub fn thread_alive(_: u32) -> bool {
    true
}

/// The address of a thread-local: the emulated thread pointer.
pub fn thread_pointer() -> usize {
    TP.with(|b| b as *const u8 as usize)
}

/// See `sys.rs`.
pub fn sched_yield() {
    std::thread::yield_now();
}

/// Unsupported.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub fn getrandom(_: &mut [u8]) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Diagnostics go to the test's stderr.
pub fn write_all(_fd: usize, bytes: &[u8]) -> Result<(), Errno> {
    use std::io::Write;
    let _ = std::io::stderr().write_all(bytes);
    Ok(())
}

/// See `sys.rs`.
#[cfg_attr(not(feature = "boundary-checks"), allow(dead_code))]
pub fn abort() -> ! {
    std::process::abort()
}

/// Unsupported (diagnostics fall back to their generic message).
pub fn read_own_memory(_: usize, _: &mut [u8]) -> Result<(), Errno> {
    Err(Errno::EFAULT)
}
