//! A drop-in `malloc` for any program: `LD_PRELOAD` this library and every
//! `malloc`, `free`, `calloc`, `realloc`, `posix_memalign`, … of the
//! program (and of the C library itself, and of C++'s `operator new`,
//! which calls `malloc`) is served by one emma instance.
//!
//! ```text
//! cargo build --release --example preload
//! LD_PRELOAD=$PWD/target/release/examples/libpreload.so python3 -c 'print("hi")'
//! EMMA_PRELOAD_STATS=1 LD_PRELOAD=$PWD/target/release/examples/libpreload.so ls
//! ```
//!
//! With `EMMA_PRELOAD_STATS=1` in the environment the library writes one
//! line of statistics to stderr when the process exits (from a
//! `.fini_array` entry of this library: emma itself registers no exit
//! handler). The library also exports `emma_preload_owns(p)` and
//! `emma_preload_mapped()`, so a program can ask whether a block came from
//! emma (e.g. through Python's `ctypes`).
//!
//! This is the one place that touches the C library: failing functions set
//! the C `errno`, which only the C library knows how to reach
//! (`__errno_location`). emma itself never calls into libc.

use emma::InstanceExt;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

emma::emma_instance!(
    /// The process's malloc.
    pub Preload,
    c_malloc,
    c_errno = set_errno
);

unsafe extern "C" {
    /// glibc's (and musl's) address of the calling thread's `errno`.
    fn __errno_location() -> *mut c_int;
}

/// Reports a failure code as the C `errno` of the calling thread.
fn set_errno(code: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *__errno_location() = code };
}

/// Whether `p` is a block of the preloaded emma instance (1) or not (0).
#[unsafe(no_mangle)]
pub extern "C" fn emma_preload_owns(p: *const c_void) -> c_int {
    Preload.owns(p.cast()) as c_int
}

/// Bytes the preloaded emma instance has mapped.
#[unsafe(no_mangle)]
pub extern "C" fn emma_preload_mapped() -> usize {
    Preload.stats().mapped
}

/// Set at load time when `EMMA_PRELOAD_STATS=1` is in the environment.
static PRINT_STATS: AtomicBool = AtomicBool::new(false);

/// Runs when the library is loaded. glibc passes `.init_array` functions
/// `(argc, argv, envp)`, so the environment is read without `getenv`.
extern "C" fn on_load(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    if envp.is_null() {
        return;
    }
    let mut e = envp;
    // SAFETY: `envp` is the NULL-terminated array of NUL-terminated
    // strings the loader passes to initialisers.
    unsafe {
        while !(*e).is_null() {
            if std::ffi::CStr::from_ptr(*e).to_bytes() == b"EMMA_PRELOAD_STATS=1" {
                PRINT_STATS.store(true, Ordering::Relaxed);
            }
            e = e.add(1);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = on_load;

/// Runs at exit (after the program's own destructors): prints the stats
/// line if asked to. Formats into a stack buffer and writes with one
/// `write(2)`: nothing is allocated.
extern "C" fn on_exit() {
    if !PRINT_STATS.load(Ordering::Relaxed) {
        return;
    }
    let s = Preload.stats();
    let mut buf = Buf([0; 256], 0);
    let _ = std::fmt::Write::write_fmt(
        &mut buf,
        format_args!(
            "emma-preload: pid={} heaps={} mapped={} peak_mapped={} segments={} huge_blocks={}\n",
            std::process::id(),
            s.heaps,
            s.mapped,
            s.peak_mapped,
            s.segments,
            s.huge_blocks
        ),
    );
    let mut out = &buf.0[..buf.1];
    while !out.is_empty() {
        // SAFETY: writes initialised bytes of `buf` to fd 2.
        let n = unsafe { write(2, out.as_ptr().cast(), out.len()) };
        if n <= 0 {
            break;
        }
        out = &out[n as usize..];
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static ON_EXIT: extern "C" fn() = on_exit;

unsafe extern "C" {
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
}

/// A fixed-size `fmt::Write` target on the stack (truncates).
struct Buf([u8; 256], usize);

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}
