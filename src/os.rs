//! OS memory: aligned mappings, giving pages back, and moving mappings.
//!
//! Built only on [`crate::sys`]. Every function degrades instead of failing
//! hard: a refused `madvise` just leaves memory committed, a refused
//! `mremap` makes the caller copy. All addresses and lengths handed out are
//! multiples of [`PAGE_SIZE`].

use crate::sys::{self, Advice, Errno, PAGE_SIZE};
use core::ptr::NonNull;

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(m) => Some(m & !(align - 1)),
        None => None,
    }
}

/// Rounds `n` up to whole pages; `None` on overflow.
#[inline]
pub const fn page_align(n: usize) -> Option<usize> {
    align_up(n, PAGE_SIZE)
}

/// How emma gives unused pages back to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// `MADV_DONTNEED`: RSS drops at once; the pages read back as zero.
    DontNeed,
    /// `MADV_FREE`: cheaper, but RSS drops only under memory pressure.
    Free,
}

/// Maps `len` bytes of zeroed read-write memory whose start is a multiple
/// of `align` (a power of two, at least [`PAGE_SIZE`]); `len` must be a
/// multiple of [`PAGE_SIZE`].
///
/// Maps `len + align` and unmaps the misaligned head and the tail, so the
/// result is one mapping of exactly `len` bytes.
pub fn map_aligned(len: usize, align: usize) -> Result<NonNull<u8>, Errno> {
    debug_assert!(align.is_power_of_two() && align >= PAGE_SIZE);
    debug_assert!(len.is_multiple_of(PAGE_SIZE) && len > 0);
    let over = len.checked_add(align - PAGE_SIZE).ok_or(Errno::ENOMEM)?;
    let raw = sys::mmap_anon(over)?;
    let start = raw.as_ptr() as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: head and tail are page-aligned pieces of the mapping we just
    // made and nobody else has seen.
    unsafe {
        if head > 0 {
            let _ = sys::munmap(raw, head);
        }
        if tail > 0 {
            let _ = sys::munmap(NonNull::new_unchecked((aligned + len) as *mut u8), tail);
        }
        Ok(NonNull::new_unchecked(aligned as *mut u8))
    }
}

/// Unmaps memory obtained from this module. Failure (which the kernel only
/// reports for invalid arguments) leaks the range rather than crash.
///
/// # Safety
/// `[addr, addr + len)` must be owned by the caller and never used again.
pub unsafe fn unmap(addr: NonNull<u8>, len: usize) {
    // SAFETY: forwarded contract.
    let _ = unsafe { sys::munmap(addr, len) };
}

/// Returns the pages of `[addr, addr + len)` to the kernel, and says how.
///
/// # Safety
/// The range must be page aligned and owned by the caller; its contents
/// are lost (for `Free`, may be lost).
pub unsafe fn purge(addr: NonNull<u8>, len: usize, how: Purge) -> Purged {
    if len == 0 {
        return Purged::No;
    }
    let zeroed = |r: Result<(), Errno>| {
        if r.is_ok() {
            Purged::Zeroed
        } else {
            Purged::No
        }
    };
    match how {
        // SAFETY: forwarded contract.
        Purge::DontNeed => zeroed(unsafe { sys::madvise(addr, len, Advice::DontNeed) }),
        // SAFETY: forwarded contract.
        Purge::Free => match unsafe { sys::madvise(addr, len, Advice::Free) } {
            Ok(()) => Purged::Lazily,
            // Kernels before 4.5 lack MADV_FREE: fall back to DONTNEED.
            // SAFETY: forwarded contract.
            Err(Errno::EINVAL) => zeroed(unsafe { sys::madvise(addr, len, Advice::DontNeed) }),
            Err(_) => Purged::No,
        },
    }
}

/// Grows or shrinks the mapping `[addr, addr + old_len)` to `new_len`,
/// keeping its start address or moving it to a new start that is a multiple
/// of `align`. Pages move with `mremap`, they are never copied here.
/// Returns the new start, or an error if the kernel refused (the caller then
/// copies); on error the old mapping is untouched.
///
/// # Safety
/// The range must be one mapping made by this module and owned by the
/// caller; on success the old range must no longer be used unless it is
/// the returned one.
pub unsafe fn remap_aligned(
    addr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    align: usize,
) -> Result<NonNull<u8>, Errno> {
    // SAFETY: forwarded contract; in place either succeeds or changes nothing.
    if unsafe { sys::mremap_in_place(addr, old_len, new_len) }.is_ok() {
        return Ok(addr);
    }
    // Reserve an aligned landing zone, then move the pages into it.
    let over = new_len
        .checked_add(align - PAGE_SIZE)
        .ok_or(Errno::ENOMEM)?;
    let zone = sys::mmap_reserve(over)?;
    let start = zone.as_ptr() as usize;
    let aligned = (start + align - 1) & !(align - 1);
    // SAFETY: `aligned .. aligned + new_len` lies inside the fresh
    // reservation, disjoint from the source mapping.
    let target = unsafe { NonNull::new_unchecked(aligned as *mut u8) };
    // SAFETY: the source is the caller's mapping, the target our reservation.
    let moved = unsafe { sys::mremap_to(addr, old_len, new_len, target) };
    let head = aligned - start;
    let tail = over - head - new_len;
    // SAFETY: trimming the unused parts of our reservation; on failure
    // the whole reservation goes.
    unsafe {
        if moved.is_err() {
            unmap(zone, over);
        } else {
            if head > 0 {
                unmap(zone, head);
            }
            if tail > 0 {
                unmap(NonNull::new_unchecked((aligned + new_len) as *mut u8), tail);
            }
        }
    }
    moved.map(|()| target)
}

/// Whether `mremap` can move a range that spans several kernel mappings
/// (Linux 6.17 and later), keeping its source mapped (`MREMAP_DONTUNMAP`).
/// Probed once per process, on two pages of different protections.
///
/// `hardened` moves freed blocks' pages around, and a block's pages soon
/// span several kernel mappings (pages moved in from elsewhere do not
/// merge with the rest). An older kernel refuses such a move, and only
/// after it has unmapped the target: the caller would be left with a hole
/// in its own range, where any other `mmap` of the process could land. So
/// on such a kernel those moves are not attempted.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub fn moves_mapping_runs() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    /// 0: not probed yet; 1: no; 2: yes.
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let yes = probe_mapping_runs();
    KNOWN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// The probe of [`moves_mapping_runs`]: two pages whose second is made
/// inaccessible (two kernel mappings), moved onto a reservation.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
fn probe_mapping_runs() -> bool {
    let len = 2 * PAGE_SIZE;
    let Ok(src) = sys::mmap_anon(len) else {
        return false;
    };
    let Ok(dst) = sys::mmap_reserve(len) else {
        // SAFETY: ours, seen by nobody.
        unsafe { unmap(src, len) };
        return false;
    };
    // SAFETY: all three ranges are ours and nobody else has seen them.
    unsafe {
        let split = sys::mprotect_none(src.as_ptr().add(PAGE_SIZE), PAGE_SIZE).is_ok();
        let moved = split && sys::mremap_keep_source(src, len, dst).is_ok();
        unmap(src, len);
        // A refusal may have unmapped `dst` already, and the range may be
        // someone else's by now: it is left alone (two pages of address
        // space, once).
        if moved {
            unmap(dst, len);
        }
        moved
    }
}

/// Maps fresh memory again where a refused `mremap` may have left a hole
/// in a range of ours (the kernel unmaps a move's target before some of
/// its checks), so that the range is whole again. Nothing happens where
/// the range is still mapped (`MAP_FIXED_NOREPLACE`).
///
/// # Safety
/// `[addr, addr + len)` is a range of the caller's that a refused move had
/// as its target.
pub unsafe fn refill(addr: NonNull<u8>, len: usize) {
    let _ = sys::mmap_anon_at(addr.as_ptr() as usize, len);
}

/// What [`exchange_fronts`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Both ranges hold each other's pages.
    Done,
    /// `a`'s pages are at `b`, but `b`'s could not be put at `a`: `a` is
    /// mapped, empty (`b`'s front pages are lost).
    AEmptied,
    /// The kernel refused: nothing changed.
    Unchanged,
    /// `a` is intact, but the front of `b` lost its pages (they could not
    /// be put back after a refusal): it is mapped again, empty.
    BFrontLost,
}

/// Exchanges the pages of `[a, a + len)` and `[b, b + len)` without
/// copying: three `mremap`s through a temporary reservation. Each range
/// must be one mapping (or inside one) of private anonymous memory, or a
/// run of them on a kernel that moves runs ([`moves_mapping_runs`]).
///
/// Every move keeps its source mapped, empty (`MREMAP_DONTUNMAP`, Linux
/// 5.7 and later; an older kernel refuses the first move and nothing
/// changes), and the next move replaces that empty range: neither range
/// is ever a hole where another `mmap` of the process could land. A
/// refused move may have unmapped its target already (the kernel unmaps
/// it before some of its checks); that range is mapped again ([`refill`])
/// or the pages put back.
///
/// # Safety
/// Both ranges are page aligned, disjoint, owned by the caller and not in
/// use by anyone else until the call returns; on return the caller
/// handles whatever [`Exchange`] says.
pub unsafe fn exchange_fronts(a: NonNull<u8>, b: NonNull<u8>, len: usize) -> Exchange {
    let Ok(tmp) = sys::mmap_reserve(len) else {
        return Exchange::Unchanged;
    };
    // SAFETY: per contract the ranges are ours; `tmp` is our reservation.
    // A refused move leaves its source in place.
    unsafe {
        if sys::mremap_keep_source(b, len, tmp).is_err() {
            unmap(tmp, len);
            return Exchange::Unchanged;
        }
        if sys::mremap_keep_source(a, len, b).is_err() {
            // `b`'s front back where it was.
            if sys::mremap_to(tmp, len, len, b).is_ok() {
                return Exchange::Unchanged;
            }
            unmap(tmp, len);
            refill(b, len);
            return Exchange::BFrontLost;
        }
        // Without DONTUNMAP: `tmp`'s range goes back to the kernel.
        if sys::mremap_to(tmp, len, len, a).is_err() {
            unmap(tmp, len);
            refill(a, len);
            return Exchange::AEmptied;
        }
    }
    Exchange::Done
}

/// Asks for transparent huge pages on `[addr, addr + len)` (a hint: a
/// kernel without them, or configured never to use them, refuses or
/// ignores it, and nothing changes).
///
/// # Safety
/// The range is page aligned and owned by the caller.
pub unsafe fn huge_pages(addr: NonNull<u8>, len: usize) {
    if len > 0 {
        // SAFETY: forwarded contract; the advice loses no contents.
        let _ = unsafe { sys::madvise(addr, len, Advice::HugePage) };
    }
}

/// Makes `[addr, addr + len)` (whole huge pages) huge pages at once,
/// keeping its contents: for a range whose pages were purged but for one,
/// which the kernel would otherwise fault back in 4 KiB at a time. A hint:
/// refused (before Linux 6.1, or no huge page free), nothing changes.
///
/// # Safety
/// The range is aligned to huge pages and owned by the caller.
pub unsafe fn collapse(addr: NonNull<u8>, len: usize) {
    // SAFETY: forwarded contract; the contents are kept.
    let _ = unsafe { sys::madvise(addr, len, Advice::Collapse) };
}

/// Makes the page at `addr` inaccessible (a guard page). Failure is
/// harmless: the page just stays unguarded.
///
/// # Safety
/// The page is owned by the caller and holds nothing anyone will read.
#[cfg_attr(not(feature = "hardened"), allow(dead_code))]
pub unsafe fn protect_none(addr: *mut u8) -> Result<(), Errno> {
    // SAFETY: forwarded contract.
    unsafe { sys::mprotect_none(addr, PAGE_SIZE) }
}

/// Allocates one page that reads as zero in a child created by `fork`,
/// holding `1` in its first word in this process. Used to detect forks
/// without `pthread_atfork`. Returns `None` if the kernel lacks
/// `MADV_WIPEONFORK` (before 4.14); fork detection then falls back to pids.
pub fn wipe_on_fork_page() -> Option<NonNull<u8>> {
    let page = sys::mmap_anon(PAGE_SIZE).ok()?;
    // SAFETY: the page is ours and fresh.
    if unsafe { sys::madvise(page, PAGE_SIZE, Advice::WipeOnFork) }.is_err() {
        // SAFETY: the page is ours and unused.
        unsafe { unmap(page, PAGE_SIZE) };
        return None;
    }
    Some(page)
}

/// What purging a run of slices achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purged {
    /// The pages read as zero now (`MADV_DONTNEED`).
    Zeroed,
    /// The kernel may take the pages (`MADV_FREE`); contents undefined.
    Lazily,
    /// Refused; nothing changed.
    No,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `len` bytes at `p` with `v`, one byte per page.
    fn stamp(p: NonNull<u8>, len: usize, v: u8) {
        for off in (0..len).step_by(PAGE_SIZE) {
            // SAFETY: the caller's mapping of `len` bytes.
            unsafe { p.as_ptr().add(off).write(v) };
        }
    }

    fn stamped(p: NonNull<u8>, len: usize, v: u8) -> bool {
        // SAFETY: as in `stamp`.
        (0..len)
            .step_by(PAGE_SIZE)
            .all(|off| unsafe { p.as_ptr().add(off).read() } == v)
    }

    /// The pages of two ranges trade places, or (where `mremap` is refused,
    /// as under Miri's backend) nothing changes.
    #[test]
    fn exchange_fronts_swaps_pages_or_changes_nothing() {
        let len = 4 * PAGE_SIZE;
        let a = sys::mmap_anon(len).unwrap();
        let b = sys::mmap_anon(2 * len).unwrap();
        stamp(a, len, 1);
        stamp(b, 2 * len, 2);
        // SAFETY: two fresh mappings of ours.
        let r = unsafe { exchange_fronts(a, b, len) };
        // SAFETY: `b + len` lies in `b`'s mapping.
        let b_tail = unsafe { NonNull::new_unchecked(b.as_ptr().add(len)) };
        if cfg!(miri) {
            assert_eq!(r, Exchange::Unchanged);
            assert!(stamped(a, len, 1) && stamped(b, 2 * len, 2));
        } else {
            assert_eq!(r, Exchange::Done);
            assert!(stamped(a, len, 2), "b's front is now at a");
            assert!(stamped(b, len, 1), "a's pages are now b's front");
            assert!(stamped(b_tail, len, 2), "b's tail stayed");
        }
        // SAFETY: ours, unused from here on (after a move, `b`'s front and
        // tail are two kernel mappings; one call unmaps both).
        unsafe {
            unmap(a, len);
            unmap(b, 2 * len);
        }
    }
}
