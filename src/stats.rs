//! Statistics of one instance, read without a lock and without allocating.

use crate::instance::InstanceState;
use crate::sys;
use core::fmt;
use core::sync::atomic::Ordering;

/// A snapshot of one instance's counters.
///
/// Mapping figures (`mapped`, `peak_mapped`, `segments`, `huge_*`,
/// `meta`, `purged`, `failures`) are exact. `committed` is exact at 64 KiB
/// granularity for small segments. Per-heap figures (`pages`,
/// `remote_frees`) are written by each heap's owner and read racily, so
/// under concurrent activity they may lag a little. emma does not count
/// individual allocations: that would cost the fast path instructions; use
/// `committed` and the process's RSS for memory in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes currently mapped (segments, huge blocks, heap metadata).
    pub mapped: usize,
    /// The most bytes ever mapped at once.
    pub peak_mapped: usize,
    /// Small segments currently mapped (4 MiB each).
    pub segments: usize,
    /// Huge blocks currently live.
    pub huge_blocks: usize,
    /// Bytes in the mappings of live huge blocks.
    pub huge_bytes: usize,
    /// Bytes that may be resident (see the type's docs).
    pub committed: usize,
    /// Bytes of heap metadata.
    pub meta: usize,
    /// Heaps made (at most the number of threads that were ever alive at
    /// once, plus heaps of exited threads waiting for reuse).
    pub heaps: usize,
    /// Pages in use across all heaps.
    pub pages: usize,
    /// Bytes given back to the kernel over the instance's life.
    pub purged: usize,
    /// Allocations refused (memory limit or kernel).
    pub failures: usize,
    /// Blocks freed by a thread other than their owner and collected.
    pub remote_frees: usize,
}

impl Stats {
    /// Reads the counters of `st`.
    pub fn of(st: &InstanceState) -> Stats {
        let s = &st.store.stats;
        let mut out = Stats {
            mapped: s.mapped.load(Ordering::Relaxed),
            peak_mapped: s.peak_mapped.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
            huge_blocks: s.huge_blocks.load(Ordering::Relaxed),
            huge_bytes: s.huge_bytes.load(Ordering::Relaxed),
            committed: s.committed.load(Ordering::Relaxed),
            meta: s.meta.load(Ordering::Relaxed),
            heaps: st.heap_count(),
            purged: s.purged.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            ..Stats::default()
        };
        st.for_each_heap(|h| {
            out.pages += h.stats.pages.load(Ordering::Relaxed);
            out.remote_frees += h.stats.remote_frees.load(Ordering::Relaxed);
        });
        out
    }
}

impl Stats {
    /// Writes the table shown by [`fmt::Display`] to stderr with a raw
    /// `write(2)`, headed by `name`; allocates nothing.
    pub fn print(&self, name: &str) {
        use fmt::Write;
        let mut w = FdWriter::<512>::new(2);
        let _ = write!(w, "emma instance {name}\n{self}");
        w.flush();
    }
}

fn mib(bytes: usize) -> MiB {
    MiB(bytes)
}

/// Formats a byte count as MiB with one decimal, without floating point.
struct MiB(usize);

impl fmt::Display for MiB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 as u128 * 10 + (1 << 19)) >> 20;
        write!(f, "{:>7}.{} MiB", tenths / 10, tenths % 10)
    }
}

impl fmt::Display for Stats {
    /// A small two-column table, one figure a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  mapped        {}   (peak {})",
            mib(self.mapped),
            mib(self.peak_mapped)
        )?;
        writeln!(f, "  committed     {}", mib(self.committed))?;
        writeln!(
            f,
            "  segments      {:>7}       ({} pages in use)",
            self.segments, self.pages
        )?;
        writeln!(
            f,
            "  huge blocks   {:>7}       ({})",
            self.huge_blocks,
            mib(self.huge_bytes)
        )?;
        writeln!(
            f,
            "  heaps         {:>7}       (metadata {})",
            self.heaps,
            mib(self.meta)
        )?;
        writeln!(f, "  remote frees  {:>7}", self.remote_frees)?;
        writeln!(f, "  purged        {}", mib(self.purged))?;
        writeln!(f, "  failures      {:>7}", self.failures)
    }
}

/// A `fmt::Write` that buffers on the stack and writes to a file
/// descriptor with raw syscalls.
struct FdWriter<const N: usize> {
    fd: usize,
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FdWriter<N> {
    fn new(fd: usize) -> Self {
        FdWriter {
            fd,
            buf: [0; N],
            len: 0,
        }
    }

    fn flush(&mut self) {
        let _ = sys::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl<const N: usize> fmt::Write for FdWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(N) {
            if self.len + chunk.len() > N {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}
