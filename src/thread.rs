//! Thread identity without libc: the thread pointer and the TLS slot.
//!
//! Every x86_64 Linux thread has a thread pointer (the `fs` base) pointing
//! at its thread control block, whose first word points to itself (the
//! x86_64 TLS ABI; glibc, musl and Rust's runtime all follow it). Reading
//! `fs:[0]` thus yields a per-thread value with no syscall and no TLS
//! relocation: emma uses it to recognise the owner of a heap. Two live
//! threads never share it; a new thread may get the value of one that has
//! exited (thread libraries reuse stacks), which proves that thread gone.
//!
//! With the `tls` feature each instance also has a `#[thread_local]` slot
//! holding the thread's heap. It is accessed with the *initial-exec* model
//! written out in assembly (`[rip + slot@GOTTPOFF]`, then `fs:[offset]`):
//! two instructions, no call to `__tls_get_addr` even in a `dlopen`ed
//! library, so the loader (and its `malloc`) are never involved. The
//! library then needs a little of the loader's static TLS surplus (8 bytes
//! per instance); glibc reserves surplus for exactly this.

use crate::heap::{empty_heap, Heap};
use core::cell::UnsafeCell;

/// The calling thread's thread pointer (`fs:[0]`).
///
/// A freestanding program must set up `fs` (as every libc does) before
/// allocating; see the README.
#[cfg(not(miri))]
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: `fs:[0]` is the TCB self-pointer, readable on every thread.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(nostack, readonly, preserves_flags, pure)
        );
    }
    tp
}

/// Under Miri (no inline assembly): a per-thread address from the test
/// backend.
#[cfg(miri)]
pub fn thread_pointer() -> usize {
    crate::sys::thread_pointer()
}

/// An instance's per-thread heap slot (the `tls` feature). Declared by
/// [`emma_instance!`](crate::emma_instance) as a `#[thread_local] static`.
#[repr(transparent)]
pub struct TlsSlot(UnsafeCell<*mut Heap>);

impl TlsSlot {
    /// A slot holding the empty heap, which sends the first allocation of
    /// every thread to the slow path (no "initialised?" test on the fast
    /// path).
    pub const fn new() -> Self {
        TlsSlot(UnsafeCell::new(empty_heap()))
    }
}

impl Default for TlsSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads a [`TlsSlot`] with the initial-exec TLS model (two instructions,
/// no loader call). Expands to an expression of type `*mut Heap`.
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_load {
    ($slot:path) => {{
        let v: *mut $crate::__private::Heap;
        // SAFETY: `$slot` is a `#[thread_local]` static of this module's
        // instance, so its GOTTPOFF entry holds its offset from `fs`.
        unsafe {
            ::core::arch::asm!(
                "mov {v}, qword ptr [rip + {s}@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                s = sym $slot,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure)
            );
        }
        v
    }};
}

/// Writes a [`TlsSlot`] with the initial-exec TLS model.
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_store {
    ($slot:path, $value:expr) => {{
        let v: *mut $crate::__private::Heap = $value;
        // SAFETY: as for `__emma_tls_load`; the slot belongs to this thread.
        unsafe {
            ::core::arch::asm!(
                "mov {t}, qword ptr [rip + {s}@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                s = sym $slot,
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags)
            );
        }
    }};
}
