//! glibc's malloc introspection, answered by emma.
//!
//! Without these, a program calling `mallinfo2` or `malloc_trim` would
//! reach glibc's own malloc, which serves nothing in a process where emma
//! is the malloc, and get figures of an unused arena.
//!
//! | function | what it does here |
//! |---|---|
//! | `malloc_trim(pad)` | `trim` of the instance: the calling thread's empty pages, the caches, and (with `tls`) heaps of exited threads go back to the kernel; returns 1 if that lowered the committed memory or purged anything, else 0; `pad` is ignored |
//! | `mallinfo2()` | filled from `emma::Stats` (fields below) |
//! | `mallinfo()` | the same, each field capped at `INT_MAX` |
//! | `malloc_stats()` | emma's statistics table on stderr |
//! | `malloc_info(0, fp)` | an XML document of emma's figures written to `fp`; -1 with `EINVAL` if `options` is not 0 |
//! | `mallopt(param, value)` | `M_DECAY_TIME` (-100, as on Android): 0 purges free memory at once, any other value restores the purge delay of start-up; `M_PURGE` (-101) and `M_PURGE_ALL` (-104): trim as `malloc_trim`; these return 1. Every other parameter (glibc's `M_MMAP_THRESHOLD`, `M_ARENA_MAX`, …) has no emma equivalent: 0 |
//!
//! `mallinfo2` fields:
//!
//! | field | glibc meaning | emma figure |
//! |---|---|---|
//! | `arena` | bytes of non-mmapped heap | `mapped - huge_bytes`: segments, heap metadata, cached huge mappings |
//! | `ordblks` | free chunks | 0 (free blocks are not counted) |
//! | `smblks` | fastbin chunks | 0 |
//! | `hblks` | mmapped chunks | `huge_blocks`: live huge blocks |
//! | `hblkhd` | bytes in mmapped chunks | `huge_bytes`: their mappings |
//! | `usmblks` | unused (historically the peak) | `peak_mapped` |
//! | `fsmblks` | bytes in fastbins | 0 |
//! | `uordblks` | bytes allocated | `live.bytes`: usable bytes of every live block, huge ones included |
//! | `fordblks` | bytes free | `committed - live.bytes` (0 if negative): committed memory not in live blocks |
//! | `keepcost` | releasable top chunk | 0 |

use crate::report::Line;
use crate::Malloc;
use core::ffi::{c_int, c_void};
use core::fmt::Write;
use core::time::Duration;
use emma::{InstanceExt, Stats};

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Mallinfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's `struct mallinfo` (the old one, with `int` fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Mallinfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// Android's `mallopt` parameter: purge at once (0) or after a delay.
pub const M_DECAY_TIME: c_int = -100;
/// Android's `mallopt` parameter: give free memory back now.
pub const M_PURGE: c_int = -101;
/// Android's `mallopt` parameter: give all free memory back now.
pub const M_PURGE_ALL: c_int = -104;

fn info(s: &Stats) -> Mallinfo2 {
    Mallinfo2 {
        arena: s.mapped - s.huge_bytes,
        hblks: s.huge_blocks,
        hblkhd: s.huge_bytes,
        usmblks: s.peak_mapped,
        uordblks: s.live.bytes,
        fordblks: s.committed.saturating_sub(s.live.bytes),
        ..Mallinfo2::default()
    }
}

/// `mallinfo2()`: see the module docs for the fields.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    info(&Malloc.stats())
}

/// `mallinfo()`: `mallinfo2` with each field capped at `INT_MAX`.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> Mallinfo {
    let i = mallinfo2();
    let c = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    Mallinfo {
        arena: c(i.arena),
        ordblks: c(i.ordblks),
        smblks: c(i.smblks),
        hblks: c(i.hblks),
        hblkhd: c(i.hblkhd),
        usmblks: c(i.usmblks),
        fsmblks: c(i.fsmblks),
        uordblks: c(i.uordblks),
        fordblks: c(i.fordblks),
        keepcost: c(i.keepcost),
    }
}

/// Trims the instance; whether memory went back to the kernel.
fn trim() -> bool {
    let before = Malloc.stats();
    Malloc.trim();
    let after = Malloc.stats();
    after.committed < before.committed || after.purged > before.purged
}

/// `malloc_trim(pad)`: 1 if memory was given back to the kernel, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    trim() as c_int
}

/// `malloc_stats()`: emma's table on stderr.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    Malloc.print_stats("libemma.so");
}

/// The purge delay in force after start-up, restored by
/// `mallopt(M_DECAY_TIME, 1)` (the current one if start-up did not run).
fn startup_delay() -> Duration {
    crate::options::saved()
        .and_then(|o| o.purge_delay_ms)
        .map_or(Malloc.purge_delay(), Duration::from_millis)
}

/// `mallopt(param, value)`: see the module docs.
#[unsafe(no_mangle)]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    match param {
        M_DECAY_TIME => {
            let d = if value == 0 {
                Duration::ZERO
            } else {
                startup_delay()
            };
            Malloc.set_purge_delay(d);
            1
        }
        M_PURGE | M_PURGE_ALL => {
            trim();
            1
        }
        _ => 0,
    }
}

#[link(name = "c")]
unsafe extern "C" {
    /// C stdio's `fwrite`: `malloc_info` writes to a `FILE *`, which may be
    /// any stream (a memory stream from `open_memstream`, say), so it has
    /// to go through stdio.
    fn fwrite(p: *const c_void, size: usize, n: usize, fp: *mut c_void) -> usize;
}

/// The XML document `malloc_info` writes.
pub fn info_xml(s: &Stats) -> Line {
    let mut l = Line::new();
    let _ = write!(
        l,
        "<malloc version=\"emma-1\">\n\
         <live bytes=\"{}\" blocks=\"{}\"/>\n\
         <mapped current=\"{}\" max=\"{}\"/>\n\
         <committed size=\"{}\"/>\n\
         <segments count=\"{}\" pages=\"{}\"/>\n\
         <huge count=\"{}\" size=\"{}\"/>\n\
         <heaps count=\"{}\" meta=\"{}\"/>\n\
         <remote frees=\"{}\"/>\n\
         <purged size=\"{}\"/>\n\
         <failures count=\"{}\"/>\n\
         <system type=\"current\" size=\"{}\"/>\n\
         <system type=\"max\" size=\"{}\"/>\n\
         </malloc>\n",
        s.live.bytes,
        s.live.blocks,
        s.mapped,
        s.peak_mapped,
        s.committed,
        s.segments,
        s.pages,
        s.huge_blocks,
        s.huge_bytes,
        s.heaps,
        s.meta,
        s.remote_frees,
        s.purged,
        s.failures,
        s.mapped,
        s.peak_mapped,
    );
    l
}

/// `malloc_info(options, fp)`: 0, or -1 with `EINVAL` if `options` is not
/// 0 (as glibc). The document is built on the stack first, so the stream
/// may allocate (from emma) while it is written.
///
/// # Safety
/// `fp` is a C stdio stream open for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut c_void) -> c_int {
    if options != 0 {
        crate::set_errno(emma::c::EINVAL);
        return -1;
    }
    let doc = info_xml(&Malloc.stats());
    let b = doc.as_bytes();
    // SAFETY: per contract; `b` is initialised.
    let n = unsafe { fwrite(b.as_ptr().cast(), 1, b.len(), fp) };
    if n == b.len() {
        0
    } else {
        -1
    }
}
