//! Two emma instances in one `cdylib`, each exporting the C allocation
//! family under its own prefix: `first_malloc`, `first_free`, … and
//! `second_malloc`, `second_free`, … . Nothing else of emma is exported
//! (`tests/embed_c_abi.rs` checks this with `nm -D --defined-only`), and a
//! C program linked against the library gets two independent heaps.
//!
//! Build: `cargo build --release --example plugin_cabi` →
//! `target/release/examples/libplugin_cabi.so`.
//!
//! The library's own Rust code keeps the system allocator: the instances
//! here serve only the C callers.
//!
//! `errno`: `first_*` leave it alone (the default: emma has no libc to
//! reach it); `second_*` report failures through it, with the `c_errno`
//! option and the C library's `__errno_location`.

emma::emma_instance!(
    /// The heap behind `first_*`.
    pub First,
    c_prefix = first_
);

emma::emma_instance!(
    /// The heap behind `second_*`.
    pub Second,
    c_prefix = second_,
    c_errno = set_errno
);

unsafe extern "C" {
    /// The C library's address of the calling thread's `errno`.
    fn __errno_location() -> *mut i32;
}

/// Reports a failure code of `second_*` as the caller's `errno`.
fn set_errno(code: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *__errno_location() = code };
}
