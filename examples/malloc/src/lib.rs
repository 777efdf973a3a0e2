//! `libemma.so`: emma as the malloc of any program.
//!
//! ```text
//! cargo build --release -p emma-malloc                 # target/release/libemma.so
//! LD_PRELOAD=$PWD/target/release/libemma.so python3 script.py
//! EMMA_STATS_FILE=/tmp/emma.%p LD_PRELOAD=$PWD/target/release/libemma.so ls
//! ```
//!
//! One emma instance serves every `malloc`, `free`, `calloc`, `realloc`,
//! `posix_memalign`, … of the process (the C library's own included), and
//! C++'s `operator new`/`delete` in all their forms ([`cxx`]). glibc's
//! introspection functions (`malloc_trim`, `mallinfo2`, `malloc_stats`,
//! `malloc_info`, `mallopt`) answer with emma's figures ([`glibc`]).
//! Options come from `EMMA_*` environment variables read when the library
//! is loaded ([`options`]); statistics can be written at exit ([`report`]).
//!
//! Start-up and exit hooks are `.init_array` and `.fini_array` entries of
//! this library: emma itself registers nothing with the process. The
//! loader passes `.init_array` functions `(argc, argv, envp)`, so the
//! environment is read without `getenv` (which may not be usable yet).
//!
//! libc: failing functions set the C `errno`, which only the C library can
//! reach (`__errno_location`), and `malloc_info` writes to a C `FILE *`
//! (`fwrite`). Those are the only C library functions called; everything
//! else is emma (no libc at all) or raw syscalls. The library is `no_std`,
//! so Rust's standard library adds nothing to that (no initialiser of its
//! own, no `__tls_get_addr`, no unwinder): it imports those two functions
//! and those `core` calls by name, `memcpy`, `memmove`, `memset`,
//! `memcmp`/`bcmp` and `strlen` (`CStr::from_ptr`, for the environment);
//! tests/embed_preload_imports.rs checks the list.

// `cargo clippy --all-targets` checks a test build of the library, which
// links the test harness (and `std`, with its own panic handler).
#![cfg_attr(not(test), no_std)]

use core::ffi::{c_char, c_int, c_void};
use emma::InstanceExt;

pub mod cxx;
pub mod glibc;
pub mod options;
pub mod report;

emma::emma_instance!(
    /// The process's malloc.
    pub Malloc,
    c_malloc,
    c_errno = set_errno
);

// `-lc`: a `no_std` crate links no C library by itself, and the library
// should name the one it calls (DT_NEEDED libc.so.6, versioned symbols).
#[link(name = "c")]
unsafe extern "C" {
    /// glibc's (and musl's) address of the calling thread's `errno`.
    fn __errno_location() -> *mut c_int;
}

/// Reports a failure code as the C `errno` of the calling thread.
pub(crate) fn set_errno(code: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *__errno_location() = code };
}

/// Whether `p` is a block of this library's emma instance (1) or not (0);
/// safe for any pointer value.
#[unsafe(no_mangle)]
pub extern "C" fn emma_owns(p: *const c_void) -> c_int {
    Malloc.owns(p.cast()) as c_int
}

/// Bytes the instance has mapped.
#[unsafe(no_mangle)]
pub extern "C" fn emma_mapped() -> usize {
    Malloc.stats().mapped
}

/// Usable bytes of the blocks currently live (see `emma::Live`).
#[unsafe(no_mangle)]
pub extern "C" fn emma_live_bytes() -> usize {
    Malloc.stats().live.bytes
}

/// Runs when the library is loaded: reads and applies the options.
extern "C" fn on_load(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    // SAFETY: the loader passes the NULL-terminated environment (or null).
    let opts = unsafe { options::read_env(envp) };
    opts.apply();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = on_load;

/// Runs at exit, after the program's own destructors and `atexit`
/// handlers: writes the statistics if asked to.
extern "C" fn on_exit() {
    report::at_exit();
}

#[used]
#[unsafe(link_section = ".fini_array")]
static ON_EXIT: extern "C" fn() = on_exit;

/// A panic (a bug in emma or in this library) ends the process as
/// `panic = "abort"` did with `std`: a message on stderr, then SIGABRT.
#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut l = report::Line::new();
    // `info` reads "panicked at <file>:<line>:<col>:\n<message>".
    let _ = writeln!(l, "emma: {info}");
    l.write_to(2);
    report::abort()
}

// The unwinder names `core` refers to, as hidden stubs (nothing unwinds).
#[cfg(not(test))]
#[path = "../../nostd/unwind_stubs.rs"]
mod unwind_stubs;
