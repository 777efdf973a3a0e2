//! The `Allocator` trait semantics, generic over the instance: what the
//! macro's impls of `core::alloc::Allocator` (feature `allocator-api`,
//! nightly) and `allocator_api2::alloc::Allocator` (feature
//! `allocator-api2`, stable) forward to.
//!
//! Unlike `GlobalAlloc`, `Allocator` accepts zero-sized layouts: they get a
//! dangling, well-aligned pointer and never touch the heap. Blocks are
//! returned with their usable size, so collections can use the slack.

use crate::api::{self, Instance};
use core::alloc::Layout;
use core::ptr::{self, NonNull};

/// A dangling, aligned, empty block for zero-sized layouts.
fn empty(layout: Layout) -> NonNull<[u8]> {
    let p = ptr::without_provenance_mut::<u8>(layout.align());
    // SAFETY: an alignment is never zero.
    NonNull::slice_from_raw_parts(unsafe { NonNull::new_unchecked(p) }, 0)
}

/// `p` as the slice an `Allocator` returns: the whole usable block.
///
/// # Safety
/// `p` is null or a live block of the instance just allocated.
unsafe fn block(p: *mut u8) -> Option<NonNull<[u8]>> {
    let p = NonNull::new(p)?;
    // SAFETY: per contract.
    let len = unsafe { api::usable_size(p.as_ptr()) };
    Some(NonNull::slice_from_raw_parts(p, len))
}

/// `Allocator::allocate` / `allocate_zeroed`; `None` is `AllocError`.
pub fn allocate<I: Instance>(layout: Layout, zeroed: bool) -> Option<NonNull<[u8]>> {
    if layout.size() == 0 {
        return Some(empty(layout));
    }
    let p = if zeroed {
        api::alloc_zeroed::<I>(layout.size(), layout.align())
    } else {
        api::alloc::<I>(layout.size(), layout.align())
    };
    // SAFETY: just allocated (or null).
    unsafe { block(p) }
}

/// `Allocator::deallocate`.
///
/// # Safety
/// The `Allocator::deallocate` contract: `ptr` is a block of this instance
/// currently allocated with a layout that fits `layout`.
pub unsafe fn deallocate<I: Instance>(ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        // SAFETY: forwarded contract.
        unsafe { api::dealloc::<I>(ptr.as_ptr(), layout.size(), layout.align()) }
    }
}

/// `Allocator::grow` / `grow_zeroed` (`new.size() >= old.size()`) and
/// `shrink` (`new.size() <= old.size()`).
///
/// # Safety
/// The `Allocator::grow`/`shrink` contract: `ptr` is a block of this
/// instance allocated with a layout fitting `old`.
pub unsafe fn resize<I: Instance>(
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
    zeroed: bool,
) -> Option<NonNull<[u8]>> {
    if old.size() == 0 {
        return allocate::<I>(new, zeroed);
    }
    if new.size() == 0 {
        // SAFETY: forwarded contract.
        unsafe { deallocate::<I>(ptr, old) };
        return Some(empty(new));
    }
    let p = if new.align() == old.align() {
        // SAFETY: forwarded contract; the alignment is kept.
        unsafe { api::realloc::<I>(ptr.as_ptr(), Some((old.size(), old.align())), new.size()) }
    } else {
        let q = api::alloc::<I>(new.size(), new.align());
        if !q.is_null() {
            // SAFETY: both blocks are live and at least this long.
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), q, old.size().min(new.size()));
                api::dealloc::<I>(ptr.as_ptr(), old.size(), old.align());
            }
        }
        q
    };
    if zeroed && !p.is_null() && new.size() > old.size() {
        // SAFETY: the block holds `new.size()` bytes.
        unsafe { ptr::write_bytes(p.add(old.size()), 0, new.size() - old.size()) };
    }
    // SAFETY: just (re)allocated (or null).
    unsafe { block(p) }
}

/// The `core::alloc::Allocator` impl (feature `allocator-api`, nightly).
#[cfg(feature = "allocator-api")]
#[doc(hidden)]
#[macro_export]
#[allow_internal_unstable(allocator_api)]
macro_rules! __emma_allocator_api {
    ($name:ident) => {
        // SAFETY: forwards to emma::allocator, which upholds the Allocator contract.
        unsafe impl ::core::alloc::Allocator for $name {
            $crate::__emma_allocator_methods!(::core::alloc::AllocError);
        }
    };
}

#[cfg(not(feature = "allocator-api"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_allocator_api {
    ($name:ident) => {};
}

/// The `allocator_api2::alloc::Allocator` impl (feature `allocator-api2`).
#[cfg(feature = "allocator-api2")]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_allocator_api2 {
    ($name:ident) => {
        // SAFETY: forwards to emma::allocator, which upholds the Allocator contract.
        unsafe impl $crate::__private::allocator_api2::alloc::Allocator for $name {
            $crate::__emma_allocator_methods!($crate::__private::allocator_api2::alloc::AllocError);
        }
    };
}

#[cfg(not(feature = "allocator-api2"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_allocator_api2 {
    ($name:ident) => {};
}

/// The method bodies shared by both `Allocator` impls.
#[doc(hidden)]
#[macro_export]
#[cfg_attr(feature = "allocator-api", allow_internal_unstable(allocator_api))]
macro_rules! __emma_allocator_methods {
    ($err:path) => {
        #[inline]
        fn allocate(
            &self,
            l: ::core::alloc::Layout,
        ) -> ::core::result::Result<::core::ptr::NonNull<[u8]>, $err> {
            $crate::__private::allocator::allocate::<Self>(l, false).ok_or($err)
        }
        #[inline]
        fn allocate_zeroed(
            &self,
            l: ::core::alloc::Layout,
        ) -> ::core::result::Result<::core::ptr::NonNull<[u8]>, $err> {
            $crate::__private::allocator::allocate::<Self>(l, true).ok_or($err)
        }
        #[inline]
        unsafe fn deallocate(&self, p: ::core::ptr::NonNull<u8>, l: ::core::alloc::Layout) {
            // SAFETY: `Allocator::deallocate`'s contract, which `allocator::deallocate` takes.
            unsafe { $crate::__private::allocator::deallocate::<Self>(p, l) }
        }
        $crate::__emma_allocator_methods!(@resize grow, false, $err);
        $crate::__emma_allocator_methods!(@resize grow_zeroed, true, $err);
        $crate::__emma_allocator_methods!(@resize shrink, false, $err);
    };
    (@resize $method:ident, $zeroed:literal, $err:path) => {
        #[inline]
        unsafe fn $method(
            &self,
            p: ::core::ptr::NonNull<u8>,
            old: ::core::alloc::Layout,
            new: ::core::alloc::Layout,
        ) -> ::core::result::Result<::core::ptr::NonNull<[u8]>, $err> {
            // SAFETY: the contract of `Allocator::grow`/`grow_zeroed`/`shrink`,
            // which `allocator::resize` takes.
            unsafe { $crate::__private::allocator::resize::<Self>(p, old, new, $zeroed) }.ok_or($err)
        }
    };
}
