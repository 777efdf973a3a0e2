//! Thread identity without libc: the thread pointer and the heap slot.
//!
//! Every x86_64 Linux thread has a thread pointer (the `fs` base) pointing
//! at its thread control block, whose first word points to itself (the
//! x86_64 TLS ABI; glibc, musl and Rust's runtime all follow it). Reading
//! `fs:[0]` thus yields a per-thread value with no syscall and no TLS
//! relocation: emma uses it to recognise the owner of a heap. Two live
//! threads never share it; a new thread may get the value of one that has
//! exited (thread libraries reuse stacks), which proves that thread gone.
//!
//! # The heap slot (feature `tls`, on by default)
//! Each instance has an 8-byte thread-local slot holding the calling
//! thread's heap. It is not a `#[thread_local] static` (nightly only, and
//! compiled to a `__tls_get_addr` call in a `cdylib`) but a symbol that
//! [`emma_instance!`](crate::emma_instance) defines in assembly, so it
//! works on stable Rust:
//! - `__emma_tls_define!` puts the slot in `.tdata`, initialised with
//!   the address of the empty heap (a link-time constant, or a relative
//!   relocation the loader applies to the TLS image before any thread
//!   copies it). A thread's first allocation thus finds the empty heap and
//!   falls into the slow path, which claims a real heap: the fast path
//!   never asks "initialised?". (A `.tbss` slot would start at 0 and need
//!   either that test or an extra add on every access.)
//! - `__emma_tls_load!` and `__emma_tls_store!` access it with the
//!   *initial-exec* model (`mov r, [rip + slot@GOTTPOFF]`, then
//!   `fs:[r]`): two instructions, no call into the loader even in a
//!   `dlopen`ed library, so the loader's `__tls_get_addr` (which may call
//!   the host's `malloc`) is never involved. In an executable the linker
//!   relaxes the first instruction to a constant.
//!
//! The slot's label is derived from the mangled name of the instance's
//! state (a static in a module the macro generates per instance), hence
//! unique per instance even across crates; it is a hidden global, visible
//! to every object of the program or library being linked but never
//! exported from it.
//!
//! The price: the program or library has a TLS segment. A program with a
//! libc (or Rust's `std`) always has the TLS block that holds it; a library
//! loaded with `dlopen` is given room in the loader's static TLS surplus
//! (glibc reserves some for exactly such libraries, which are flagged
//! `STATIC_TLS`), 8 bytes per instance, and `dlopen` fails if that surplus
//! is used up. A program that sets up no TLS block at all (a freestanding
//! program with its own `_start`) builds emma with `default-features =
//! false`: the thread-pointer mode finds heaps through a per-instance
//! table keyed by `fs:[0]` instead (see the `instance` module), a few
//! instructions slower.
//!
//! Under Miri, which runs no assembly, the slot is emulated with std's
//! thread-locals (see `sys_miri.rs`).

/// The calling thread's thread pointer (`fs:[0]`).
///
/// A freestanding program must set up `fs` (as every libc does) before
/// allocating; see the README.
#[cfg(not(miri))]
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: `fs:[0]` is the TCB self-pointer, readable on every thread.
    // It never changes while the thread lives, hence `nomem`: the compiler
    // may reuse one read across stores (an allocation and a free in one
    // function, or a loop).
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(nostack, nomem, preserves_flags, pure)
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

/// Defines the heap slot of the instance whose state is the static
/// `$anchor`, in item position (the module `emma_instance!` generates
/// for the instance's statics): 8 bytes of `.tdata` holding the empty
/// heap's address, labelled `<symbol of $anchor>.slot`. The anchor is a
/// static rather than a function because rustc copies tiny functions into
/// every crate that inlines a caller, and under LTO the copies' clashing
/// symbols are renamed, which would detach the accesses from the label.
#[cfg(all(feature = "tls", not(miri)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_define {
    ($anchor:ident) => {
        ::core::arch::global_asm!(
            ".pushsection .tdata,\"awT\",@progbits",
            ".p2align 3",
            ".globl {a}.slot",
            ".hidden {a}.slot",
            ".type {a}.slot, @object",
            ".size {a}.slot, 8",
            "{a}.slot:",
            ".quad {e}",
            ".popsection",
            a = sym $anchor,
            e = sym $crate::__private::EMPTY_HEAP,
        );
    };
}

/// No slot to define: the thread-pointer mode, or Miri's emulated slot.
#[cfg(any(not(feature = "tls"), miri))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_define {
    ($anchor:ident) => {};
}

/// Reads the heap slot of the instance anchored at `$anchor` with the
/// initial-exec TLS model (two instructions, no loader call). Expands to an
/// expression of type `*mut Heap`.
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_load {
    ($anchor:path) => {{
        let off: usize;
        let v: *mut $crate::__private::Heap;
        // SAFETY: `__emma_tls_define!($anchor)` defined the slot in this
        // program's TLS block, so its GOTTPOFF entry holds its offset from
        // `fs`; it holds the empty heap or a heap this thread stored. The
        // offset is a constant of the program (the GOT entry is never
        // written once relocated), hence `nomem`: the compiler may reuse it
        // across stores, e.g. one load for an allocation and a free in the
        // same function, or one before a loop.
        unsafe {
            ::core::arch::asm!(
                "mov {o}, qword ptr [rip + {a}.slot@GOTTPOFF]",
                a = sym $anchor,
                o = out(reg) off,
                options(nostack, nomem, preserves_flags, pure)
            );
            ::core::arch::asm!(
                "mov {v}, qword ptr fs:[{o}]",
                o = in(reg) off,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure)
            );
        }
        v
    }};
}

/// Writes the heap slot of the instance anchored at `$anchor`.
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_tls_store {
    ($anchor:path, $value:expr) => {{
        let v: *mut $crate::__private::Heap = $value;
        // SAFETY: as for `__emma_tls_load`; the slot belongs to this thread.
        unsafe {
            ::core::arch::asm!(
                "mov {t}, qword ptr [rip + {a}.slot@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                a = sym $anchor,
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags)
            );
        }
    }};
}
