//! Link arguments for a static executable without the C runtime:
//! - `-nostartfiles`: no `crt1.o`/`crti.o`/`crtbegin.o`; `src/main.rs`
//!   defines `_start` itself;
//! - `-nostdlib`: no libc, no libgcc;
//! - `-static -no-pie`: no dynamic loader (no `PT_INTERP`), no dynamic
//!   section; the (position-independent) code is linked at a fixed address.
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
