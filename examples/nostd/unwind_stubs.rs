//! Unwinder stubs for the `no_std` builds among the examples (the drop-in
//! library `examples/malloc`, `examples/plugin_nostd`,
//! `examples/freestanding`), each of which includes this file as a module.
//!
//! `core` and `alloc` come precompiled with `panic = "unwind"`, so a few of
//! their functions carry unwinding tables naming `rust_eh_personality` and
//! calls to `_Unwind_Resume` on cleanup paths. Nothing in these programs
//! ever unwinds (their panic handlers stop the process), so neither is ever
//! called; these stubs satisfy the linker without importing an unwinder.
//! They are `.hidden`: defined for the link, not exported (a `#[no_mangle]`
//! function would be exported and could interpose on the host's unwinder).

core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, @function",
    "rust_eh_personality:",
    "    ud2",
    ".globl _Unwind_Resume",
    ".hidden _Unwind_Resume",
    ".type _Unwind_Resume, @function",
    "_Unwind_Resume:",
    "    ud2",
);
