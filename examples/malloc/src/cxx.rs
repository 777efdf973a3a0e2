//! C++'s global `operator new` and `operator delete`, every form, exported
//! under their Itanium-ABI names so C++ programs reach emma directly
//! instead of through libstdc++'s forwarders to `malloc`.
//!
//! | form | symbols |
//! |---|---|
//! | `new(size)`, `new[](size)` | `_Znwm`, `_Znam` |
//! | `new(size, nothrow)` and `[]` | `_ZnwmRKSt9nothrow_t`, `_ZnamRKSt9nothrow_t` |
//! | `new(size, align)` and `[]` | `_ZnwmSt11align_val_t`, `_ZnamSt11align_val_t` |
//! | `new(size, align, nothrow)` and `[]` | `_ZnwmSt11align_val_tRKSt9nothrow_t`, `_ZnamSt11align_val_tRKSt9nothrow_t` |
//! | `delete(p)` and `[]`, with or without `nothrow` | `_ZdlPv`, `_ZdaPv`, `_ZdlPvRKSt9nothrow_t`, `_ZdaPvRKSt9nothrow_t` |
//! | sized `delete(p, size)` and `[]` | `_ZdlPvm`, `_ZdaPvm` |
//! | aligned `delete(p, align)` and `[]`, with or without `nothrow` | `_ZdlPvSt11align_val_t`, `_ZdaPvSt11align_val_t`, `_ZdlPvSt11align_val_tRKSt9nothrow_t`, `_ZdaPvSt11align_val_tRKSt9nothrow_t` |
//! | sized aligned `delete(p, size, align)` and `[]` | `_ZdlPvmSt11align_val_t`, `_ZdaPvmSt11align_val_t` |
//!
//! Out of memory: the `nothrow` forms return null. The throwing forms
//! cannot throw `std::bad_alloc` (that needs the C++ runtime, and an
//! exception unwinding through this Rust library, built with
//! `panic = "abort"`, would abort anyway), nor call the program's
//! `std::new_handler`: they print `emma: out of memory in operator new
//! (N bytes)` on stderr and abort the process (SIGABRT). A program that
//! relies on catching `bad_alloc` should not preload this library.
//!
//! The sized and aligned deletes pass their size and alignment on to
//! [`c::free_sized`], [`c::free_aligned`] and [`c::free_aligned_sized`]:
//! with `hardened` a size or alignment that does not match the allocation
//! aborts with a message (with `boundary-checks` alone, a size outside the
//! block's class); otherwise they free like `free`.

use crate::Malloc;
use core::ffi::c_void;
use emma::c::{self, NoErrno};

/// Prints the out-of-memory message and aborts.
#[cold]
fn out_of_memory(size: usize) -> ! {
    use core::fmt::Write;
    let mut l = crate::report::Line::new();
    let _ = writeln!(l, "emma: out of memory in operator new ({size} bytes)");
    l.write_to(2);
    crate::report::abort()
}

#[inline(always)]
fn new(size: usize) -> *mut c_void {
    let p = c::malloc::<Malloc, NoErrno>(size);
    if p.is_null() {
        out_of_memory(size)
    }
    p.cast()
}

#[inline(always)]
fn new_aligned(size: usize, align: usize) -> *mut c_void {
    let p = c::aligned_alloc::<Malloc, NoErrno>(align, size);
    if p.is_null() {
        out_of_memory(size)
    }
    p.cast()
}

/// Defines exported `extern "C"` functions with one-line bodies.
macro_rules! exports {
    ($($(#[$a:meta])* fn $name:ident($($arg:ident: $t:ty),*) $(-> $r:ty)? $body:block)*) => {$(
        $(#[$a])*
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $t),*) $(-> $r)? $body
    )*};
}

/// Defines exported deletes: `unsafe extern "C"` functions freeing `p`
/// through `$free` (a path into `emma::c`) with the extra arguments named.
macro_rules! deletes {
    ($($name:ident($($arg:ident: $t:ty),*) => $free:ident$(::<$e:ty>)?($($pass:ident),*);)*) => {$(
        /// `operator delete` in one of its forms: frees `p` (null: nothing).
        ///
        /// # Safety
        /// `p` is null or a live block of this library, not used afterwards,
        /// and any size or alignment given is the one it was allocated with.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $t)*) {
            // SAFETY: forwarded contract.
            unsafe { c::$free::<Malloc $(, $e)?>(p.cast() $(, $pass)*) }
        }
    )*};
}

exports! {
    /// `operator new(size_t)`.
    fn _Znwm(size: usize) -> *mut c_void { new(size) }
    /// `operator new[](size_t)`.
    fn _Znam(size: usize) -> *mut c_void { new(size) }
    /// `operator new(size_t, nothrow_t const&)`.
    fn _ZnwmRKSt9nothrow_t(size: usize, _nt: *const c_void) -> *mut c_void {
        c::malloc::<Malloc, NoErrno>(size).cast()
    }
    /// `operator new[](size_t, nothrow_t const&)`.
    fn _ZnamRKSt9nothrow_t(size: usize, _nt: *const c_void) -> *mut c_void {
        c::malloc::<Malloc, NoErrno>(size).cast()
    }
    /// `operator new(size_t, align_val_t)`.
    fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
        new_aligned(size, align)
    }
    /// `operator new[](size_t, align_val_t)`.
    fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
        new_aligned(size, align)
    }
    /// `operator new(size_t, align_val_t, nothrow_t const&)`.
    fn _ZnwmSt11align_val_tRKSt9nothrow_t(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
        c::aligned_alloc::<Malloc, NoErrno>(align, size).cast()
    }
    /// `operator new[](size_t, align_val_t, nothrow_t const&)`.
    fn _ZnamSt11align_val_tRKSt9nothrow_t(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
        c::aligned_alloc::<Malloc, NoErrno>(align, size).cast()
    }
}

// The `nothrow_t` arguments only select the overload.
deletes! {
    _ZdlPv() => free();
    _ZdaPv() => free();
    _ZdlPvRKSt9nothrow_t(_nt: *const c_void) => free();
    _ZdaPvRKSt9nothrow_t(_nt: *const c_void) => free();
    _ZdlPvm(size: usize) => free_sized::<NoErrno>(size);
    _ZdaPvm(size: usize) => free_sized::<NoErrno>(size);
    _ZdlPvSt11align_val_t(align: usize) => free_aligned(align);
    _ZdaPvSt11align_val_t(align: usize) => free_aligned(align);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, _nt: *const c_void) => free_aligned(align);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, _nt: *const c_void) => free_aligned(align);
    _ZdlPvmSt11align_val_t(size: usize, align: usize) => free_aligned_sized::<NoErrno>(align, size);
    _ZdaPvmSt11align_val_t(size: usize, align: usize) => free_aligned_sized::<NoErrno>(align, size);
}
