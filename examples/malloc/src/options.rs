//! Options from the environment, read once when the library is loaded.
//!
//! | variable | value | effect |
//! |---|---|---|
//! | `EMMA_PURGE` | `dontneed` (default) or `free` | how free memory goes back to the kernel (`MADV_DONTNEED` lowers RSS at once; `MADV_FREE` lets the kernel take it when it needs it) |
//! | `EMMA_PURGE_DELAY` | milliseconds (default 10) | how long free memory stays committed before it is purged; `0` purges at once |
//! | `EMMA_LIMIT` | bytes, optional `k`/`m`/`g` suffix (KiB, MiB, GiB) | cap on the memory the process's malloc may map; past it allocations fail with `ENOMEM` |
//! | `EMMA_STATS` | `1` | one line of statistics on stderr at exit |
//! | `EMMA_STATS_FILE` | a path; `%p` is replaced by the process id | the same line appended to that file at exit (works when the program closed stderr) |
//! | `EMMA_VERBOSE` | `1` | print the options in force at start-up, and warn about unknown `EMMA_*` variables |
//!
//! A variable with a value that cannot be used is ignored, with a warning
//! on stderr (always: someone set it on purpose).

use crate::report::Line;
use crate::Malloc;
use core::cell::UnsafeCell;
use core::ffi::{c_char, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use emma::{InstanceExt, Purge};

/// Longest `EMMA_STATS_FILE` value kept (bytes).
pub const PATH_MAX: usize = 255;
/// Warnings remembered while reading the environment.
const MAX_WARNINGS: usize = 16;

/// What the environment asked for.
#[derive(Clone, Copy)]
pub struct Options {
    /// `EMMA_PURGE`.
    pub purge: Option<Purge>,
    /// `EMMA_PURGE_DELAY`, in milliseconds (in the saved copy: the delay
    /// in force after start-up).
    pub purge_delay_ms: Option<u64>,
    /// `EMMA_LIMIT`, in bytes.
    pub limit: Option<usize>,
    /// `EMMA_STATS=1`.
    pub stats_stderr: bool,
    /// `EMMA_STATS_FILE` (not NUL-terminated; `path_len` bytes).
    pub path: [u8; PATH_MAX],
    /// Length of `path`; 0: no file.
    pub path_len: usize,
    /// `EMMA_VERBOSE=1`.
    pub verbose: bool,
    warnings: [Warning; MAX_WARNINGS],
    warning_count: usize,
}

/// Something wrong with one variable, reported after all are read (so
/// `EMMA_VERBOSE` may come after the variable it concerns).
#[derive(Clone, Copy)]
struct Warning {
    /// The variable (`NAME=value`), pointing into the environment, which
    /// lives as long as the process.
    var: &'static [u8],
    /// Unknown variables are reported only in verbose mode.
    unknown: bool,
}

impl Options {
    const NONE: Options = Options {
        purge: None,
        purge_delay_ms: None,
        limit: None,
        stats_stderr: false,
        path: [0; PATH_MAX],
        path_len: 0,
        verbose: false,
        warnings: [Warning {
            var: &[],
            unknown: false,
        }; MAX_WARNINGS],
        warning_count: 0,
    };

    fn warn(&mut self, var: &'static [u8], unknown: bool) {
        if self.warning_count < MAX_WARNINGS {
            self.warnings[self.warning_count] = Warning { var, unknown };
            self.warning_count += 1;
        }
    }

    /// Takes one `EMMA_*` variable into account.
    fn take(&mut self, var: &'static [u8]) {
        let eq = var.iter().position(|&b| b == b'=').unwrap_or(var.len());
        let (name, value) = (&var[..eq], var.get(eq + 1..).unwrap_or(&[]));
        let ok = match name {
            b"EMMA_PURGE" => {
                self.purge = match value {
                    b"dontneed" => Some(Purge::DontNeed),
                    b"free" => Some(Purge::Free),
                    _ => self.purge,
                };
                matches!(value, b"dontneed" | b"free")
            }
            b"EMMA_PURGE_DELAY" => parse_size(value, false)
                .map(|ms| self.purge_delay_ms = Some(ms as u64))
                .is_some(),
            b"EMMA_LIMIT" => parse_size(value, true)
                .map(|b| self.limit = Some(b))
                .is_some(),
            b"EMMA_STATS" => flag(value).map(|on| self.stats_stderr = on).is_some(),
            b"EMMA_STATS_FILE" => {
                let fits = !value.is_empty() && value.len() <= PATH_MAX;
                if fits {
                    self.path[..value.len()].copy_from_slice(value);
                    self.path_len = value.len();
                }
                fits
            }
            b"EMMA_VERBOSE" => flag(value).map(|on| self.verbose = on).is_some(),
            _ => {
                self.warn(var, true);
                return;
            }
        };
        if !ok {
            self.warn(var, false);
        }
    }

    /// Applies the options to the instance, remembers what the exit report
    /// needs, and prints warnings (and, when verbose, the options).
    pub fn apply(&self) {
        if let Some(p) = self.purge {
            Malloc.set_purge(p);
        }
        if let Some(ms) = self.purge_delay_ms {
            Malloc.set_purge_delay(Duration::from_millis(ms));
        }
        if self.limit.is_some() {
            Malloc.set_limit(self.limit);
        }
        for w in &self.warnings[..self.warning_count] {
            if !w.unknown || self.verbose {
                let mut l = Line::new();
                let what = if w.unknown {
                    "unknown variable, ignored"
                } else {
                    "value not understood, ignored"
                };
                let _ = writeln!(l, "emma: {}: {what}", Bytes(w.var));
                l.write_to(2);
            }
        }
        if self.verbose {
            self.print();
        }
        // Kept for `mallopt(M_DECAY_TIME, 1)`, which restores it.
        let mut saved = *self;
        saved.purge_delay_ms = u64::try_from(Malloc.purge_delay().as_millis()).ok();
        // SAFETY: the loader runs initialisers on one thread, before any
        // thread of the program exists; readers come only after this.
        unsafe { *SAVED.0.get() = saved };
        SAVED_READY.store(true, Ordering::Release);
    }

    /// The start-up line of verbose mode.
    fn print(&self) {
        let mut l = Line::new();
        let _ = write!(
            l,
            "emma: libemma.so loaded (hardened {}, tls {}): purge {} after {} ms, limit ",
            yes(cfg!(feature = "hardened")),
            yes(cfg!(feature = "tls")),
            if self.purge == Some(Purge::Free) {
                "MADV_FREE"
            } else {
                "MADV_DONTNEED"
            },
            Malloc.purge_delay().as_millis(),
        );
        let _ = match Malloc.limit() {
            Some(b) => write!(l, "{b} bytes"),
            None => write!(l, "none"),
        };
        let _ = writeln!(
            l,
            ", stats at exit: stderr {}, file {}",
            yes(self.stats_stderr),
            if self.path_len == 0 {
                Bytes(b"none")
            } else {
                Bytes(self.path())
            }
        );
        l.write_to(2);
    }

    /// The `EMMA_STATS_FILE` value.
    pub fn path(&self) -> &[u8] {
        &self.path[..self.path_len]
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `0`/`1` (anything else: not understood).
fn flag(v: &[u8]) -> Option<bool> {
    match v {
        b"1" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// A decimal number, with a `k`/`m`/`g` suffix (powers of 1024) if
/// `suffix` allows; `None` if malformed or out of range.
pub fn parse_size(v: &[u8], suffix: bool) -> Option<usize> {
    let (digits, shift) = match v.last() {
        Some(b'k' | b'K') if suffix => (&v[..v.len() - 1], 10),
        Some(b'm' | b'M') if suffix => (&v[..v.len() - 1], 20),
        Some(b'g' | b'G') if suffix => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = core::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
    n.checked_mul(1 << shift)
}

/// Reads the `EMMA_*` variables of `envp`.
///
/// # Safety
/// `envp` is null or the NULL-terminated array of NUL-terminated strings
/// the loader passes to initialisers (alive for the whole process).
pub unsafe fn read_env(envp: *const *const c_char) -> Options {
    let mut o = Options::NONE;
    if envp.is_null() {
        return o;
    }
    let mut e = envp;
    // SAFETY: per contract.
    unsafe {
        while !(*e).is_null() {
            let var: &'static [u8] = CStr::from_ptr(*e).to_bytes();
            if var.starts_with(b"EMMA_") {
                o.take(var);
            }
            e = e.add(1);
        }
    }
    o
}

/// The options in force, for the exit report.
pub fn saved() -> Option<&'static Options> {
    // SAFETY: written once by `apply` before `SAVED_READY` was published.
    SAVED_READY
        .load(Ordering::Acquire)
        .then(|| unsafe { &*SAVED.0.get() })
}

struct Saved(UnsafeCell<Options>);
// SAFETY: written once at load time before `SAVED_READY` is published,
// read-only afterwards.
unsafe impl Sync for Saved {}
static SAVED: Saved = Saved(UnsafeCell::new(Options::NONE));
static SAVED_READY: AtomicBool = AtomicBool::new(false);

/// Bytes shown as text (lossy), without allocating.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl core::fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}
