//! The `GlobalAlloc` semantics, generic over the instance: what the
//! macro's `unsafe impl GlobalAlloc` forwards to, one line per method.
//! Beside [`crate::allocator`] (the `Allocator` traits) and [`crate::c`]
//! (the C functions), over the same entry points in `api`.
//!
//! `GlobalAlloc` never sees a zero-sized layout from safe code; with
//! `boundary-checks` one aborts with a message (`check::global_layout`).

use crate::api::{self, Instance};
use crate::check;
use core::alloc::Layout;

/// `GlobalAlloc::alloc`.
#[inline(always)]
pub fn alloc<I: Instance>(l: Layout) -> *mut u8 {
    check::global_layout(l.size());
    api::alloc::<I>(l.size(), l.align())
}

/// `GlobalAlloc::alloc_zeroed`.
#[inline(always)]
pub fn alloc_zeroed<I: Instance>(l: Layout) -> *mut u8 {
    check::global_layout(l.size());
    api::alloc_zeroed::<I>(l.size(), l.align())
}

/// `GlobalAlloc::dealloc`.
///
/// # Safety
/// `p` is a live block of instance `I` allocated with layout `l`, not used
/// afterwards (the `GlobalAlloc::dealloc` contract).
#[inline(always)]
pub unsafe fn dealloc<I: Instance>(p: *mut u8, l: Layout) {
    // SAFETY: per contract.
    unsafe { api::dealloc::<I>(p, l.size(), l.align()) }
}

/// `GlobalAlloc::realloc`.
///
/// # Safety
/// `p` is a live block of instance `I` allocated with layout `l`;
/// `new_size` is non-zero and, rounded up to `l.align()`, at most
/// `isize::MAX`; `p` is not used after a non-null return (the
/// `GlobalAlloc::realloc` contract).
#[inline(always)]
pub unsafe fn realloc<I: Instance>(p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: per contract.
    unsafe { api::realloc::<I>(p, Some((l.size(), l.align())), new_size) }
}
