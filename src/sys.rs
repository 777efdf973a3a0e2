//! The system-call layer: the only module that talks to the kernel.
//!
//! Every OS service emma uses is one raw Linux syscall issued through the
//! `syscalls` crate; nothing here links against libc or calls into the host
//! process. Functions are typed wrappers without policy: they return
//! `Result<_, Errno>` and never panic, so a refused call (seccomp, ENOMEM,
//! an old kernel) turns into a null allocation or a skipped optimisation in
//! the layers above, never into a crash.
//!
//! Blanket preconditions for the memory calls (see `mmap(2)`, `mremap(2)`,
//! `madvise(2)`): addresses are multiples of [`PAGE_SIZE`] and lengths are
//! non-zero multiples of [`PAGE_SIZE`] unless a function says otherwise.

use core::ptr::NonNull;
use syscalls::{syscall, Sysno};

pub use syscalls::Errno;

/// The x86_64 base page size. Linux on x86_64 never uses another base page
/// size, so emma does not read it from the auxiliary vector.
pub const PAGE_SIZE: usize = 4096;

const PROT_NONE: usize = 0;
const PROT_READ_WRITE: usize = 0x1 | 0x2;
const MAP_PRIVATE: usize = 0x02;
const MAP_ANONYMOUS: usize = 0x20;
const MAP_NORESERVE: usize = 0x4000;
const MAP_FIXED_NOREPLACE: usize = 0x10_0000;
const MREMAP_MAYMOVE: usize = 1;
const MREMAP_FIXED: usize = 2;
const MREMAP_DONTUNMAP: usize = 4;
const FUTEX_WAIT_PRIVATE: usize = 128;
const FUTEX_WAKE_PRIVATE: usize = 1 | 128;
#[cfg_attr(not(feature = "boundary-checks"), allow(dead_code))]
const SIGABRT: usize = 6;

/// How [`madvise`] gives memory back to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Advice {
    /// `MADV_DONTNEED`: pages are dropped at once and read back as zero.
    DontNeed = 4,
    /// `MADV_FREE`: pages are dropped lazily under memory pressure; until
    /// then they keep their contents and stay in RSS.
    Free = 8,
    /// `MADV_WIPEONFORK`: in a child created by `fork` the range reads as zero.
    WipeOnFork = 18,
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages where
    /// the kernel can (2 MiB pages: one fault instead of 512).
    HugePage = 14,
    /// `MADV_COLLAPSE` (Linux 6.1): make the range huge pages now, copying
    /// the pages present (a range after a purge that kept one page would
    /// otherwise fault back in page by page).
    Collapse = 25,
}

/// Maps `len` bytes of fresh, zeroed, private anonymous read-write memory.
///
/// The kernel chooses the address (page aligned). `NORESERVE` keeps large
/// reservations from being charged against overcommit before they are used.
pub fn mmap_anon(len: usize) -> Result<NonNull<u8>, Errno> {
    // SAFETY: an anonymous mapping at a kernel-chosen address touches no
    // existing memory.
    let addr = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            len,
            PROT_READ_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
            usize::MAX, // fd -1
            0usize
        )
    }?;
    NonNull::new(addr as *mut u8).ok_or(Errno::ENOMEM)
}

/// [`mmap_anon`] at `addr` exactly, if nothing is mapped in
/// `[addr, addr + len)` (`MAP_FIXED_NOREPLACE`; `EEXIST` if something
/// is). A kernel older than 4.17 takes the address as a hint and may map
/// elsewhere: that mapping is undone and `EEXIST` returned as well.
pub fn mmap_anon_at(addr: usize, len: usize) -> Result<NonNull<u8>, Errno> {
    // SAFETY: NOREPLACE never touches an existing mapping.
    let got = unsafe {
        syscall!(
            Sysno::mmap,
            addr,
            len,
            PROT_READ_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
            usize::MAX,
            0usize
        )
    }?;
    let Some(p) = NonNull::new(got as *mut u8) else {
        return Err(Errno::ENOMEM);
    };
    if got != addr {
        // SAFETY: the mapping just made, seen by nobody.
        let _ = unsafe { munmap(p, len) };
        return Err(Errno::EEXIST);
    }
    Ok(p)
}

/// Maps `len` bytes of inaccessible address space (a reservation).
pub fn mmap_reserve(len: usize) -> Result<NonNull<u8>, Errno> {
    // SAFETY: as for `mmap_anon`; PROT_NONE memory cannot even be read.
    let addr = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            len,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
            usize::MAX,
            0usize
        )
    }?;
    NonNull::new(addr as *mut u8).ok_or(Errno::ENOMEM)
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
/// The range must be page aligned, owned by the caller, and no longer used:
/// any later access faults.
pub unsafe fn munmap(addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller gives up the range.
    unsafe { syscall!(Sysno::munmap, addr.as_ptr(), len) }.map(|_| ())
}

/// Resizes the mapping at `addr` without moving it.
///
/// # Safety
/// `[addr, addr + old_len)` must be one mapping owned by the caller. When
/// growing, the kernel fails with ENOMEM rather than overwrite neighbours.
pub unsafe fn mremap_in_place(
    addr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
) -> Result<(), Errno> {
    // SAFETY: no MAYMOVE: the mapping keeps its address or the call fails.
    unsafe { syscall!(Sysno::mremap, addr.as_ptr(), old_len, new_len, 0usize) }.map(|_| ())
}

/// Moves the mapping at `addr` to `target`, resized to `new_len`, carrying
/// its pages along instead of copying them.
///
/// # Safety
/// `[addr, addr + old_len)` must be one mapping owned by the caller and
/// `[target, target + new_len)` a range the caller owns (e.g. a reservation),
/// disjoint from the source; it is replaced.
pub unsafe fn mremap_to(
    addr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    target: NonNull<u8>,
) -> Result<(), Errno> {
    // SAFETY: forwarded contract.
    unsafe { mremap_fixed(addr, old_len, new_len, target, 0) }
}

/// `mremap(addr, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED | flags,
/// target)`.
///
/// # Safety
/// As for [`mremap_to`], and whatever `flags` add to it.
unsafe fn mremap_fixed(
    addr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    target: NonNull<u8>,
    flags: usize,
) -> Result<(), Errno> {
    // SAFETY: the caller owns both ranges.
    unsafe {
        syscall!(
            Sysno::mremap,
            addr.as_ptr(),
            old_len,
            new_len,
            MREMAP_MAYMOVE | MREMAP_FIXED | flags,
            target.as_ptr()
        )
    }
    .map(|_| ())
}

/// Moves the pages of `[addr, addr + len)` to `target` without copying,
/// and leaves the source range mapped but empty (`MREMAP_DONTUNMAP`, Linux
/// 5.7 and later): its addresses stay the caller's, so nothing else can be
/// mapped there before the caller protects or unmaps them.
///
/// # Safety
/// `[addr, addr + len)` must lie in one private anonymous mapping owned by
/// the caller, and `[target, target + len)` be a range the caller owns,
/// disjoint from the source; it is replaced.
pub unsafe fn mremap_keep_source(
    addr: NonNull<u8>,
    len: usize,
    target: NonNull<u8>,
) -> Result<(), Errno> {
    // SAFETY: forwarded contract; the source stays mapped, as documented.
    unsafe { mremap_fixed(addr, len, len, target, MREMAP_DONTUNMAP) }
}

/// Makes `[addr, addr + len)` inaccessible (`mprotect(PROT_NONE)`).
///
/// # Safety
/// The range must be owned by the caller; any later access faults.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub unsafe fn mprotect_none(addr: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: per contract.
    unsafe { syscall!(Sysno::mprotect, addr, len, PROT_NONE) }.map(|_| ())
}

/// Gives advice about `[addr, addr + len)`.
///
/// # Safety
/// The range must be owned by the caller. With [`Advice::DontNeed`] its
/// contents are lost; with [`Advice::Free`] they may be.
pub unsafe fn madvise(addr: NonNull<u8>, len: usize, advice: Advice) -> Result<(), Errno> {
    // SAFETY: the caller owns the range and accepts the loss of contents.
    unsafe { syscall!(Sysno::madvise, addr.as_ptr(), len, advice as usize) }.map(|_| ())
}

/// Sleeps while `*word == expected` (private futex), until woken or
/// interrupted. Spurious returns are allowed; callers re-check.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) -> Result<(), Errno> {
    // SAFETY: the kernel only reads the word, which `word` keeps alive.
    unsafe {
        syscall!(
            Sysno::futex,
            word.as_ptr(),
            FUTEX_WAIT_PRIVATE,
            expected,
            0usize
        )
    }
    .map(|_| ())
}

/// Wakes up to `count` threads sleeping on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32, count: u32) -> Result<usize, Errno> {
    // SAFETY: waking only reads the address as a key.
    unsafe { syscall!(Sysno::futex, word.as_ptr(), FUTEX_WAKE_PRIVATE, count) }
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall!(Sysno::gettid) }.unwrap_or(0) as u32
}

/// Nanoseconds of `CLOCK_MONOTONIC` (`clock_gettime(2)` as a raw syscall:
/// without libc there is no vDSO fast path, so callers read it on slow
/// paths only and rate-limit themselves). 0 if the kernel refuses.
pub fn monotonic_ns() -> u64 {
    const CLOCK_MONOTONIC: usize = 1;
    // struct timespec { tv_sec, tv_nsec }
    let mut ts = [0i64; 2];
    // SAFETY: `ts` is a writable timespec on our stack.
    match unsafe { syscall!(Sysno::clock_gettime, CLOCK_MONOTONIC, ts.as_mut_ptr()) } {
        Ok(_) => (ts[0] as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts[1] as u64),
        Err(_) => 0,
    }
}

/// The CPU's time-stamp counter (`rdtsc`): a few cycles, no syscall. Only
/// a gate for how often [`monotonic_ns`] is read, never a clock itself:
/// its rate is unknown and it may differ a little between CPUs.
#[inline]
pub fn cycles() -> u64 {
    // SAFETY: `rdtsc` is available on every x86_64 CPU and only reads.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The address the kernel clears (and futex-wakes) when the calling thread
/// exits: its `clear_child_tid`, set by the thread library through
/// `CLONE_CHILD_CLEARTID` or `set_tid_address` (`prctl(PR_GET_TID_ADDRESS)`;
/// needs `CONFIG_CHECKPOINT_RESTORE`). 0 if unknown.
pub fn tid_address() -> usize {
    const PR_GET_TID_ADDRESS: usize = 40;
    let mut addr = 0usize;
    // SAFETY: the kernel writes one pointer into `addr`.
    match unsafe { syscall!(Sysno::prctl, PR_GET_TID_ADDRESS, &mut addr as *mut usize) } {
        Ok(_) => addr,
        Err(_) => 0,
    }
}

/// The calling process's id.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall!(Sysno::getpid) }.unwrap_or(0) as u32
}

/// Whether thread `tid` of this process is alive: `tgkill` with signal 0
/// sends nothing and answers ESRCH when no such thread exists.
pub fn thread_alive(tid: u32) -> bool {
    let pid = getpid();
    // SAFETY: signal 0 performs only the existence and permission check.
    match unsafe { syscall!(Sysno::tgkill, pid, tid, 0usize) } {
        Err(Errno::ESRCH) => false,
        // Alive, or EPERM (alive but not signalable): either way not dead.
        _ => true,
    }
}

/// Gives the CPU to another thread.
pub fn sched_yield() {
    // SAFETY: no arguments; failure is harmless.
    let _ = unsafe { syscall!(Sysno::sched_yield) };
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`), or
/// reports why it could not.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub fn getrandom(buf: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the kernel writes at most `len - done` bytes into `buf`.
        let n = unsafe {
            syscall!(
                Sysno::getrandom,
                buf.as_mut_ptr().add(done),
                buf.len() - done,
                0usize
            )
        }?;
        done += n;
    }
    Ok(())
}

/// Writes all of `bytes` to file descriptor `fd`, retrying on short writes
/// and EINTR. Used for diagnostics: it never allocates.
pub fn write_all(fd: usize, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: the kernel only reads `bytes`.
        match unsafe { syscall!(Sysno::write, fd, bytes.as_ptr(), bytes.len()) } {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the process with SIGABRT, as `abort()` would, without libc.
#[cfg_attr(not(feature = "boundary-checks"), allow(dead_code))]
pub fn abort() -> ! {
    let pid = getpid();
    let tid = gettid();
    // SAFETY: raising SIGABRT on this very thread (a process-directed
    // `kill` could be taken by another thread while this one runs on); if
    // a handler returns or the signal is blocked, we fall through to an
    // invalid instruction.
    let _ = unsafe { syscall!(Sysno::tgkill, pid, tid, SIGABRT) };
    // SAFETY: `ud2` raises SIGILL, which ends the process.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

/// Copies `buf.len()` bytes from address `addr` of this process into `buf`
/// with `process_vm_readv(2)`, which fails with EFAULT instead of faulting
/// when the memory is not readable. Used to inspect pointers of unknown
/// origin in diagnostics.
pub fn read_own_memory(addr: usize, buf: &mut [u8]) -> Result<(), Errno> {
    #[repr(C)]
    struct IoVec {
        base: usize,
        len: usize,
    }
    let local = IoVec {
        base: buf.as_mut_ptr() as usize,
        len: buf.len(),
    };
    let remote = IoVec {
        base: addr,
        len: buf.len(),
    };
    let pid = getpid();
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and
    // validates the remote range itself.
    let n = unsafe {
        syscall!(
            Sysno::process_vm_readv,
            pid,
            &local as *const IoVec,
            1usize,
            &remote as *const IoVec,
            1usize,
            0usize
        )
    }?;
    if n == buf.len() {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}
