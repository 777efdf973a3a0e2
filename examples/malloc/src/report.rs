//! The statistics line written at exit, and raw output without libc.
//!
//! ```text
//! emma: pid=4242 live_bytes=1048576 live_blocks=1021 heaps=3 mapped=… peak_mapped=… committed=… segments=2 huge_blocks=0 remote_frees=17 purged=… failures=0
//! ```
//!
//! Every figure is `emma::Stats` (bytes unless named otherwise). Written
//! from the library's `.fini_array` entry, which runs after the program's
//! `atexit` handlers, when the program may have closed stderr (coreutils
//! do): then only `EMMA_STATS_FILE` reports.

use crate::options::{self, Bytes};
use crate::Malloc;
use core::fmt::{self, Write};
use emma::{InstanceExt, Stats};
use syscalls::{syscall, Sysno};

/// Bytes one line may hold (longer output is cut).
const LINE_MAX: usize = 1024;

/// A line of text built on the stack (nothing is allocated).
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    /// An empty line.
    pub fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends raw bytes (cut at the line's capacity).
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(LINE_MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// Writes the line to file descriptor `fd` with raw `write(2)` calls;
    /// false if the descriptor refused (e.g. closed).
    pub fn write_to(&self, fd: usize) -> bool {
        write_all(fd, self.as_bytes())
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// `write(2)` until done; false on an error other than EINTR.
pub fn write_all(fd: usize, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: the kernel only reads `bytes`.
        match unsafe { syscall!(Sysno::write, fd, bytes.as_ptr(), bytes.len()) } {
            Ok(n) => bytes = &bytes[n..],
            Err(syscalls::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn getpid() -> usize {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall!(Sysno::getpid) }.unwrap_or(0)
}

/// The statistics line of `s` for process `pid`.
pub fn stats_line(s: &Stats, pid: usize) -> Line {
    let mut l = Line::new();
    let _ = writeln!(
        l,
        "emma: pid={pid} live_bytes={} live_blocks={} heaps={} mapped={} peak_mapped={} \
         committed={} segments={} huge_blocks={} remote_frees={} purged={} failures={}",
        s.live.bytes,
        s.live.blocks,
        s.heaps,
        s.mapped,
        s.peak_mapped,
        s.committed,
        s.segments,
        s.huge_blocks,
        s.remote_frees,
        s.purged,
        s.failures
    );
    l
}

/// Writes the statistics line where the options ask for it.
pub fn at_exit() {
    let Some(o) = options::saved() else { return };
    if !o.stats_stderr && o.path_len == 0 {
        return;
    }
    let pid = getpid();
    let line = stats_line(&Malloc.stats(), pid);
    if o.stats_stderr {
        line.write_to(2);
    }
    if o.path_len != 0 {
        append_to_file(o.path(), pid, line.as_bytes());
    }
}

/// Appends `text` to the file named by `pattern` (`%p`: the process id),
/// creating it if needed. One `write` on an `O_APPEND` descriptor, so the
/// lines of several processes do not interleave.
fn append_to_file(pattern: &[u8], pid: usize, text: &[u8]) {
    let mut path = Line::new();
    let mut rest = pattern;
    while let Some(i) = rest.windows(2).position(|w| w == b"%p") {
        path.push(&rest[..i]);
        let _ = write!(path, "{pid}");
        rest = &rest[i + 2..];
    }
    path.push(rest);
    path.push(b"\0");
    const O_WRONLY: usize = 0o1;
    const O_CREAT: usize = 0o100;
    const O_APPEND: usize = 0o2000;
    const O_CLOEXEC: usize = 0o2000000;
    const AT_FDCWD: isize = -100;
    // SAFETY: `path` is NUL-terminated; the kernel only reads it.
    let fd = unsafe {
        syscall!(
            Sysno::openat,
            AT_FDCWD,
            path.as_bytes().as_ptr(),
            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
            0o644
        )
    };
    match fd {
        Ok(fd) => {
            write_all(fd, text);
            // SAFETY: closes the descriptor opened above.
            let _ = unsafe { syscall!(Sysno::close, fd) };
        }
        Err(_) => {
            let mut l = Line::new();
            let _ = writeln!(
                l,
                "emma: cannot open EMMA_STATS_FILE {}",
                Bytes(&path.as_bytes()[..path.len - 1])
            );
            l.write_to(2);
        }
    }
}

/// Ends the process with SIGABRT on this thread, as `abort()` would,
/// without calling into the C library (its state may be what failed).
pub fn abort() -> ! {
    const SIGABRT: usize = 6;
    // SAFETY: getpid/gettid take no arguments; tgkill signals this thread.
    unsafe {
        let pid = syscall!(Sysno::getpid).unwrap_or(0);
        let tid = syscall!(Sysno::gettid).unwrap_or(0);
        let _ = syscall!(Sysno::tgkill, pid, tid, SIGABRT);
    }
    // Blocked or handled and returned: end with an invalid instruction.
    // SAFETY: `ud2` raises SIGILL, which ends the process.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
