//! Statistics of one instance, read without allocating.
//!
//! Mapping counters are atomics kept by the store. Live blocks and bytes are
//! not counted on the fast paths at all: [`live_of`] computes them when
//! statistics are read, by walking the instance's segments (see its docs
//! for what it costs and how exact it is).

use crate::huge::HugeHeader;
use crate::instance::InstanceState;
use crate::segmap::Chunk;
use crate::segment::{Kind, Page, Segment, SegmentHeader, SLICES, SLICE_SIZE};
use crate::sys;
use core::fmt;
use core::ptr;
use core::sync::atomic::Ordering;

/// Blocks handed out and not yet freed, and their usable bytes.
///
/// `bytes` counts each block at its usable size (what `malloc_usable_size`
/// reports: the size class for small blocks, the rest of the mapping for
/// huge ones), so it is at least the sum of the sizes requested.
///
/// Bound: a block freed by a thread other than the one that allocated it
/// still counts until its owner collects it (on the owner's next
/// allocation slow path or `trim`; for the heap of a thread that has
/// exited, when a new thread inherits it or, with `tls`, at any thread's
/// `trim`); until then it is in the freeing thread's batch of remote frees
/// or in the owner's inbox, or the freeing thread keeps it for its own
/// allocations of the same size (for about two ticks of that thread's slow
/// path at most, see `heap::foreign`, or until it trims). When no thread is
/// inside the instance the figures are exact apart from those blocks.
/// While other threads allocate and free, the figures are a racy snapshot:
/// pages being changed during the read may be counted before or after the
/// change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Live blocks.
    pub blocks: usize,
    /// Usable bytes of the live blocks.
    pub bytes: usize,
}

/// A snapshot of one instance's counters.
///
/// Mapping figures (`mapped`, `peak_mapped`, `segments`, `huge_*`,
/// `meta`, `purged`, `failures`) are exact. `committed` is exact at 64 KiB
/// granularity for small segments. `live` is computed from the pages'
/// block counts when the snapshot is taken, within the bound stated on
/// [`Live`]. Per-heap figures (`pages`, `remote_frees`) are written by each
/// heap's owner and read racily, so under concurrent activity they may lag
/// a little.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live blocks and their usable bytes (small and huge).
    pub live: Live,
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
    /// Reads the counters of `st` (the public way is
    /// [`InstanceExt::stats`](crate::InstanceExt::stats)).
    pub(crate) fn of(st: &InstanceState) -> Stats {
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
            live: live_of(st),
            ..Stats::default()
        };
        st.for_each_heap(|h| {
            out.pages += h.stats.pages.load(Ordering::Relaxed);
            out.remote_frees += h.stats.remote_frees.load(Ordering::Relaxed);
        });
        out
    }
}

/// Counts the live blocks of `st`: the `used` count of every page in use
/// of every small segment, times its block size, plus every live huge
/// block. Nothing is counted on the allocation and free paths; this walk
/// is the whole cost, paid by the reader: one pass over the segment map
/// (64 KiB per 256 GiB of address space in use) and 64 page entries per
/// segment.
///
/// Headers are read under the store's lock, which keeps them safe to read:
/// segments and huge mappings are unmapped (and huge headers moved by
/// `mremap`) only with it held, and a chunk still recorded as a header
/// under the lock is mapped. The map itself is scanned without the lock
/// (its leaves live as long as the instance), a batch of headers at a time,
/// each re-checked under the lock, so the lock is held only while headers
/// are read.
///
/// The lock does not stop owners from changing their pages: `used`, the
/// slice bitmap and page entries are written by the owning thread with
/// plain stores, and read here with volatile loads of aligned words of at
/// most 8 bytes, each a single load on x86_64 that sees the old or the new
/// value. A page read mid-update is clamped to its capacity, so a torn read
/// can only misplace blocks of pages changing during the walk (the bound
/// stated on [`Live`]). A segment whose header is not written yet (the map
/// records a fresh mapping just before) has a zero `kind` and is skipped.
///
/// Must not be called with the store's lock held by the calling thread.
pub(crate) fn live_of(st: &InstanceState) -> Live {
    const BATCH: usize = 64;
    let mut live = Live::default();
    let mut from = 0;
    loop {
        let mut batch = [0usize; BATCH];
        let mut n = 0;
        let mut resume = None;
        st.store.segmap.scan_headers(from, |base| {
            if n == BATCH {
                resume = Some(base);
                return false;
            }
            batch[n] = base;
            n += 1;
            true
        });
        let _g = st.store.lock();
        for &base in &batch[..n] {
            if st.store.segmap.get(base) == Chunk::Header {
                // SAFETY: recorded as a header under the lock: mapped, and
                // kept mapped while we hold it.
                unsafe { add_mapping(&mut live, base) };
            }
        }
        match resume {
            Some(next) => from = next,
            None => return live,
        }
    }
}

/// Adds the live blocks of the small segment or huge mapping at `base`.
///
/// # Safety
/// `base` starts a mapping of the instance that stays mapped during the
/// call.
unsafe fn add_mapping(live: &mut Live, base: usize) {
    let h = base as *const SegmentHeader;
    // SAFETY: per contract; `kind` is an aligned u32.
    let kind = unsafe { racy(ptr::addr_of!((*h).kind)) };
    if kind == Kind::Small as u32 {
        // SAFETY: a small segment's metadata slice is mapped with it.
        unsafe { add_segment(live, base as *mut Segment) };
    } else if kind == Kind::Huge as u32 {
        // SAFETY: a huge mapping starts with its header page.
        unsafe { add_huge(live, base as *const HugeHeader) };
    }
}

/// Adds the live blocks of the pages in use of small segment `seg`.
///
/// A page's `used` counts the blocks not on its `local_free` list, those
/// on its `free` list included (allocation pops `free` without counting),
/// so the blocks on `free` are counted by a walk and subtracted. The walk
/// races the owner's pops: it follows a link only while it stays on a
/// block boundary inside the page's carved blocks and stops after
/// `capacity` steps, so it never leaves the page's mapped memory; a walk
/// cut short by a race counts the rest of the list as live.
///
/// # Safety
/// `seg` is a mapped small segment that stays mapped during the call.
unsafe fn add_segment(live: &mut Live, seg: *mut Segment) {
    // SAFETY: per contract; aligned fields of at most a word (see `live_of`).
    unsafe {
        let free = racy(ptr::addr_of!((*seg).free_slices));
        for i in 1..SLICES {
            if free & (1 << i) != 0 || racy(ptr::addr_of!((*seg).head_of[i])) as usize != i {
                continue;
            }
            let page = Segment::entry(seg, i);
            if racy(ptr::addr_of!((*page).slice_count)) == 0 {
                continue;
            }
            let capacity = racy(ptr::addr_of!((*page).capacity)) as u32;
            let used = racy(ptr::addr_of!((*page).used)).min(capacity);
            let start = seg as usize + i * SLICE_SIZE;
            let n = used.saturating_sub(free_list_len(page, start, capacity)) as usize;
            live.blocks += n;
            live.bytes += n * racy(ptr::addr_of!((*page).block_size)) as usize;
        }
    }
}

/// The length of the `free` list of `page`, whose blocks start at
/// `start`, walked racily (see [`add_segment`]).
///
/// # Safety
/// `page` is the entry of a page of a mapped small segment.
unsafe fn free_list_len(page: *const Page, start: usize, capacity: u32) -> u32 {
    // SAFETY: per contract; every block read lies inside the page.
    unsafe {
        let size = racy(ptr::addr_of!((*page).block_size)) as usize;
        let keys = racy(ptr::addr_of!((*page).keys));
        let end = start + capacity as usize * size;
        let mut b = racy(ptr::addr_of!((*page).free)) as usize;
        let mut n = 0;
        while b != 0 && n < capacity {
            if b < start || b >= end || size == 0 || !(b - start).is_multiple_of(size) {
                break;
            }
            n += 1;
            b = keys.decode(racy(b as *const usize));
        }
        n
    }
}

/// Adds huge mapping `h` if it holds a live block (cached mappings do
/// not), at its usable size.
///
/// # Safety
/// `h` is a mapped huge header that stays mapped during the call.
unsafe fn add_huge(live: &mut Live, h: *const HugeHeader) {
    // SAFETY: per contract; `live` is atomic, the others aligned words.
    unsafe {
        if !(*h).live.load(Ordering::Relaxed) {
            return;
        }
        let len = racy(ptr::addr_of!((*h).map_len));
        let off = (racy(ptr::addr_of!((*h).block)) as usize).wrapping_sub(h as usize);
        // A header being written may show a block outside its mapping.
        if off < len {
            live.blocks += 1;
            live.bytes += len - off;
        }
    }
}

/// A volatile read of a field another thread may be writing (see
/// [`live_of`] for why that is tolerated).
///
/// # Safety
/// `p` is aligned and points into mapped memory.
#[inline(always)]
unsafe fn racy<T: Copy>(p: *const T) -> T {
    // SAFETY: per contract.
    unsafe { ptr::read_volatile(p) }
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
            "  live          {}   ({} blocks)",
            mib(self.live.bytes),
            self.live.blocks
        )?;
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
