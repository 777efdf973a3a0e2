//! The C allocation functions, with glibc's semantics, generic over the
//! instance. [`emma_instance!`](crate::emma_instance) exports them under a
//! prefix (`c_prefix = plugin_` gives `plugin_malloc`, …) or, for a drop-in
//! replacement of the process's malloc, under their plain names
//! (`c_malloc`).
//!
//! Where C leaves room, emma follows glibc, which is what Linux programs
//! were tested against: every result is at least 16-byte aligned;
//! `malloc(0)` returns a unique pointer; `realloc(p, 0)` frees `p` and
//! returns null; `memalign` rounds a non-power-of-two alignment up while
//! `aligned_alloc` rejects it; overflow in `calloc`, `reallocarray` and
//! `pvalloc` gives null.
//!
//! `errno`: the engine has no libc, so it cannot reach the C library's
//! `errno`. Failures are reported to an [`ErrnoSink`]; the default one
//! ([`NoErrno`]) drops them, and the macro option `c_errno = path` routes
//! them to a function of the caller's (a preloaded malloc uses
//! `__errno_location`). `free` never touches `errno`.

use crate::api::{self, Instance};
use crate::check;
use crate::fatal::fatal;
use crate::harden;
use crate::keys;
use crate::segment::Segment;
use crate::size_class::MIN_ALIGN;
use crate::sys::PAGE_SIZE;
use core::ptr;

/// `ENOMEM`: out of memory (also for sizes that overflow).
pub const ENOMEM: i32 = 12;
/// `EINVAL`: an alignment that is not a power of two (or not a multiple of
/// the pointer size, for `posix_memalign`).
pub const EINVAL: i32 = 22;

/// Where the C functions report the error code of a failure.
pub trait ErrnoSink {
    /// Records `code` (ENOMEM or EINVAL) as the caller's `errno`.
    fn set(code: i32);
}

/// Drops error codes (for prefixed functions in a library that must not
/// touch the host's `errno`).
pub struct NoErrno;

impl ErrnoSink for NoErrno {
    #[inline(always)]
    fn set(_code: i32) {}
}

#[inline]
fn fail<E: ErrnoSink>(code: i32) -> *mut u8 {
    E::set(code);
    ptr::null_mut()
}

#[inline]
fn checked<E: ErrnoSink>(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        E::set(ENOMEM);
    }
    p
}

/// `malloc(size)`.
#[inline]
pub fn malloc<I: Instance, E: ErrnoSink>(size: usize) -> *mut u8 {
    let p = api::alloc_fast::<I>(size, MIN_ALIGN);
    if !p.is_null() {
        return p;
    }
    malloc_slow::<I, E>(size)
}

/// `malloc` beyond the fast path; a tail call, so the fast path needs no
/// stack frame.
#[inline(never)]
fn malloc_slow<I: Instance, E: ErrnoSink>(size: usize) -> *mut u8 {
    checked::<E>(api::alloc_not_fast::<I>(size, MIN_ALIGN))
}

/// `calloc(count, size)`: zeroed; null on overflow.
#[inline]
pub fn calloc<I: Instance, E: ErrnoSink>(count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        Some(n) => checked::<E>(api::alloc_zeroed::<I>(n, MIN_ALIGN)),
        None => fail::<E>(ENOMEM),
    }
}

/// `free(p)`: null is ignored.
///
/// Without the checks, null is told apart by its slice offset (see
/// `Segment::slice_offset`), which the free path computes anyway: the
/// `and` that masks it sets the flags, so the null test costs one branch
/// instead of a `test` and a branch. Huge blocks (offset 0 too) go the
/// same cold way.
///
/// # Safety
/// `p` is null or a live block of instance `I`, not used afterwards.
#[inline]
pub unsafe fn free<I: Instance>(p: *mut u8) {
    if !check::ENABLED && !keys::ENABLED {
        if Segment::slice_offset(p) == 0 {
            // SAFETY: forwarded contract.
            return unsafe { free_in_slice0::<I>(p) };
        }
        // SAFETY: forwarded contract; a non-zero offset is not null.
        unsafe { api::free::<I>(p) }
    } else if !p.is_null() {
        // SAFETY: forwarded contract.
        unsafe { api::free::<I>(p) }
    }
}

/// [`free`] of null (nothing) or a huge block.
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_in_slice0<I: Instance>(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: forwarded contract.
        unsafe { api::free::<I>(p) }
    }
}

/// `realloc(p, size)`: `p` null allocates; `size` 0 frees and returns null.
///
/// # Safety
/// `p` is null or a live block of instance `I`; on success it must not be
/// used afterwards.
#[inline]
pub unsafe fn realloc<I: Instance, E: ErrnoSink>(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc::<I, E>(size);
    }
    if size == 0 {
        // SAFETY: forwarded contract.
        unsafe { free::<I>(p) };
        return ptr::null_mut();
    }
    // SAFETY: forwarded contract.
    checked::<E>(unsafe { api::realloc::<I>(p, None, size) })
}

/// `reallocarray(p, count, size)`: `realloc` with overflow checking.
///
/// # Safety
/// As for [`realloc`].
#[inline]
pub unsafe fn reallocarray<I: Instance, E: ErrnoSink>(
    p: *mut u8,
    count: usize,
    size: usize,
) -> *mut u8 {
    match count.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(n) => unsafe { realloc::<I, E>(p, n) },
        None => fail::<E>(ENOMEM),
    }
}

/// `aligned_alloc(align, size)`: `align` must be a power of two.
#[inline]
pub fn aligned_alloc<I: Instance, E: ErrnoSink>(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return fail::<E>(EINVAL);
    }
    checked::<E>(api::alloc::<I>(size, align.max(MIN_ALIGN)))
}

/// `memalign(align, size)`: like glibc, rounds `align` up to a power of two.
#[inline]
pub fn memalign<I: Instance, E: ErrnoSink>(align: usize, size: usize) -> *mut u8 {
    match align.checked_next_power_of_two() {
        Some(a) => checked::<E>(api::alloc::<I>(size, a.max(MIN_ALIGN))),
        None => fail::<E>(EINVAL),
    }
}

/// `posix_memalign(out, align, size)`: returns 0, EINVAL (alignment not a
/// power of two multiple of the pointer size) or ENOMEM; `*out` is written
/// only on success; `errno` is not touched.
///
/// # Safety
/// `out` is valid for a pointer-sized write.
#[inline]
pub unsafe fn posix_memalign<I: Instance>(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return EINVAL;
    }
    let p = api::alloc::<I>(size, align.max(MIN_ALIGN));
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: per contract.
    unsafe { out.write(p) };
    0
}

/// `valloc(size)`: page aligned.
#[inline]
pub fn valloc<I: Instance, E: ErrnoSink>(size: usize) -> *mut u8 {
    checked::<E>(api::alloc::<I>(size, PAGE_SIZE))
}

/// `pvalloc(size)`: page aligned, size rounded up to whole pages.
#[inline]
pub fn pvalloc<I: Instance, E: ErrnoSink>(size: usize) -> *mut u8 {
    match crate::os::page_align(size.max(1)) {
        Some(n) => checked::<E>(api::alloc::<I>(n, PAGE_SIZE)),
        None => fail::<E>(ENOMEM),
    }
}

/// `malloc_usable_size(p)`: 0 for null. With `hardened` the size that was
/// requested (so no correct program writes into the end canary), and a bad
/// pointer aborts (also with `boundary-checks`).
///
/// # Safety
/// `p` is null or a live block of instance `I`.
#[inline]
pub unsafe fn malloc_usable_size<I: Instance>(p: *mut u8) -> usize {
    if !check::ENABLED && !keys::ENABLED {
        // SAFETY: forwarded contract.
        unsafe { api::usable_size_unchecked(p) }
    } else if p.is_null() {
        0
    } else if check::validate(I::state(), p, None) {
        harden::zero::check(p, false);
        0
    } else {
        // SAFETY: forwarded contract.
        unsafe { api::usable_size(p) }
    }
}

/// C23 `free_sized(p, size)` and C++ sized `operator delete`: `size` must
/// be what `p` was allocated with. With `hardened` that is checked exactly
/// (a size of 0 also matches a 1-byte block: C++ runtimes turn `new` of 0
/// bytes into `malloc(1)`); with `boundary-checks` alone, against the
/// block's size class. Without either, a plain `free`.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_sized<I: Instance, E: ErrnoSink>(p: *mut u8, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free_aligned_sized::<I, E>(p, MIN_ALIGN, size) }
}

/// C++ aligned `operator delete(p, align)`: with the checks, `p` must be
/// aligned to `align`.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_aligned<I: Instance>(p: *mut u8, align: usize) {
    if check::ENABLED && !p.is_null() {
        check_aligned(p, align);
    }
    // SAFETY: forwarded contract.
    unsafe { free::<I>(p) }
}

/// C23 `free_aligned_sized(p, align, size)` and C++ sized aligned
/// `operator delete`: both [`free_sized`]'s and [`free_aligned`]'s checks.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_aligned_sized<I: Instance, E: ErrnoSink>(p: *mut u8, align: usize, size: usize) {
    if check::ENABLED && !p.is_null() {
        check_aligned(p, align);
        // SAFETY: forwarded contract.
        unsafe { check_size::<I>(p, align, size) };
    }
    // SAFETY: forwarded contract.
    unsafe { free::<I>(p) }
}

#[cold]
fn check_aligned(p: *mut u8, align: usize) {
    if !align.is_power_of_two() || !(p as usize).is_multiple_of(align) {
        fatal(
            "aligned free: the pointer does not have the alignment given",
            p,
        );
    }
}

/// Checks that live block `p` was allocated with `size` bytes.
///
/// # Safety
/// `p` is a live block of `I` (which the checks verify first).
#[inline(never)]
unsafe fn check_size<I: Instance>(p: *mut u8, align: usize, size: usize) {
    if !keys::ENABLED {
        // Size-class bounds only.
        check::validate(I::state(), p, Some((size.max(1), align.max(MIN_ALIGN))));
        return;
    }
    let n = if check::validate(I::state(), p, None) {
        harden::zero::check(p, false);
        0
    } else {
        // SAFETY: validated: a live block of ours.
        unsafe { api::usable_size(p) }
    };
    if n != size && !(size == 0 && n == 1) {
        fatal("sized free: the size does not match the allocation", p);
    }
}
