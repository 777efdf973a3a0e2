//! The segment map: which 4 MiB chunks of the address space belong to one
//! instance.
//!
//! `owns(ptr)` must answer for any pointer value, including ones emma never
//! mapped, so it cannot read a would-be segment header. Instead each
//! instance records its segments here: one byte per [`SEGMENT_SIZE`] chunk
//! of the 47-bit user address space, in a two-level table whose leaves are
//! mapped on first use.
//!
//! ```text
//!  address:  | 9 bits: top index | 16 bits: leaf index | 22 bits: offset |
//!  top:   [AtomicPtr<Leaf>; 512]  (4 KiB, inside the instance's static)
//!  leaf:  [AtomicU8; 65536]       (64 KiB mapping, covers 256 GiB)
//!         + [AtomicU64; 1024]     (8 KiB: one bit per header chunk)
//! ```
//!
//! The bits let [`SegMap::scan_headers`] (statistics, `for_each_mapping`,
//! teardown, the invariant checks) skip 64 empty chunks per load instead
//! of reading 64 KiB byte by byte.
//!
//! Written on the slow paths that map and unmap segments; read by `owns`
//! and by `boundary-checks`.

use crate::os;
use crate::segment::{SEGMENT_SHIFT, SEGMENT_SIZE};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

const ADDRESS_BITS: u32 = 47;
const LEAF_BITS: u32 = 16;
const TOP_BITS: u32 = ADDRESS_BITS - SEGMENT_SHIFT - LEAF_BITS;
const TOP_LEN: usize = 1 << TOP_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;

/// What a chunk of the address space is to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Chunk {
    /// Not this instance's.
    Foreign = 0,
    /// A segment header lives at the chunk's start.
    Header = 1,
    /// The continuation of a huge block whose header is in an earlier chunk.
    Interior = 2,
}

/// One leaf: what each chunk is, and which chunks hold a header.
#[repr(C)]
struct Leaf {
    chunks: [AtomicU8; LEAF_LEN],
    /// Bit `l % 64` of word `l / 64` is set while chunk `l` is a
    /// [`Chunk::Header`] (set after the byte, cleared before it).
    headers: [AtomicU64; LEAF_LEN / 64],
}

/// One instance's segment map.
pub struct SegMap {
    top: [AtomicPtr<Leaf>; TOP_LEN],
}

const _: () =
    assert!(TOP_BITS == 9 && core::mem::size_of::<Leaf>().is_multiple_of(crate::sys::PAGE_SIZE));

impl SegMap {
    /// An empty map (nothing is owned).
    pub const fn new() -> Self {
        SegMap {
            top: [const { AtomicPtr::new(ptr::null_mut()) }; TOP_LEN],
        }
    }

    fn split(addr: usize) -> Option<(usize, usize)> {
        if addr >> ADDRESS_BITS != 0 {
            return None;
        }
        let chunk = addr >> SEGMENT_SHIFT;
        Some((chunk >> LEAF_BITS, chunk & (LEAF_LEN - 1)))
    }

    /// What the chunk containing `addr` is.
    pub fn get(&self, addr: usize) -> Chunk {
        let Some((t, l)) = Self::split(addr) else {
            return Chunk::Foreign;
        };
        let leaf = self.top[t].load(Ordering::Acquire);
        if leaf.is_null() {
            return Chunk::Foreign;
        }
        // SAFETY: leaves are never unmapped while the instance lives.
        match unsafe { (*leaf).chunks[l].load(Ordering::Acquire) } {
            1 => Chunk::Header,
            2 => Chunk::Interior,
            _ => Chunk::Foreign,
        }
    }

    /// Records `[base, base + len)` (base segment aligned): the first chunk
    /// as [`Chunk::Header`], the rest as [`Chunk::Interior`]. Fails only if
    /// a leaf cannot be mapped; then nothing is recorded.
    pub fn insert(&self, base: usize, len: usize) -> Result<(), crate::sys::Errno> {
        let chunks = len.div_ceil(SEGMENT_SIZE);
        for i in 0..chunks {
            let (t, _) = Self::split(base + i * SEGMENT_SIZE).ok_or(crate::sys::Errno::ENOMEM)?;
            self.leaf_or_create(t)?;
        }
        for i in 0..chunks {
            let v = if i == 0 {
                Chunk::Header
            } else {
                Chunk::Interior
            };
            self.store(base + i * SEGMENT_SIZE, v);
        }
        Ok(())
    }

    /// Forgets `[base, base + len)`.
    pub fn remove(&self, base: usize, len: usize) {
        for i in 0..len.div_ceil(SEGMENT_SIZE) {
            self.store(base + i * SEGMENT_SIZE, Chunk::Foreign);
        }
    }

    fn store(&self, addr: usize, v: Chunk) {
        if let Some((t, l)) = Self::split(addr) {
            let leaf = self.top[t].load(Ordering::Acquire);
            if !leaf.is_null() {
                // SAFETY: as in `get`.
                let leaf = unsafe { &*leaf };
                let (word, bit) = (&leaf.headers[l / 64], 1u64 << (l % 64));
                if v == Chunk::Header {
                    leaf.chunks[l].store(v as u8, Ordering::Release);
                    word.fetch_or(bit, Ordering::Release);
                } else {
                    word.fetch_and(!bit, Ordering::Release);
                    leaf.chunks[l].store(v as u8, Ordering::Release);
                }
            }
        }
    }

    fn leaf_or_create(&self, t: usize) -> Result<*mut Leaf, crate::sys::Errno> {
        let leaf = self.top[t].load(Ordering::Acquire);
        if !leaf.is_null() {
            return Ok(leaf);
        }
        let size = core::mem::size_of::<Leaf>();
        let fresh = crate::sys::mmap_anon(size)?.as_ptr().cast::<Leaf>();
        match self.top[t].compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(fresh),
            Err(winner) => {
                // SAFETY: our leaf was never published.
                unsafe { os::unmap(NonNull::new_unchecked(fresh.cast()), size) };
                Ok(winner)
            }
        }
    }

    /// Calls `f(base)` for every chunk recorded as [`Chunk::Header`], from
    /// the chunk holding address `from` on, in address order, until `f`
    /// returns false.
    pub fn scan_headers(&self, from: usize, mut f: impl FnMut(usize) -> bool) {
        let Some((t0, l0)) = Self::split(from) else {
            return;
        };
        for (t, slot) in self.top.iter().enumerate().skip(t0) {
            let leaf = slot.load(Ordering::Acquire);
            if leaf.is_null() {
                continue;
            }
            // SAFETY: as in `get`.
            let leaf = unsafe { &*leaf };
            let skip = if t == t0 { l0 } else { 0 };
            for (w, word) in leaf.headers.iter().enumerate().skip(skip / 64) {
                let mut bits = word.load(Ordering::Acquire);
                if w == skip / 64 {
                    bits &= u64::MAX << (skip % 64);
                }
                while bits != 0 {
                    let l = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if leaf.chunks[l].load(Ordering::Acquire) == Chunk::Header as u8
                        && !f(((t << LEAF_BITS) | l) << SEGMENT_SHIFT)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Unmaps every leaf and forgets everything (instance teardown).
    ///
    /// # Safety
    /// No other thread may use the map during or after the call until it
    /// is repopulated.
    pub unsafe fn clear(&self) {
        for slot in &self.top {
            let leaf = slot.swap(ptr::null_mut(), Ordering::AcqRel);
            if let Some(l) = NonNull::new(leaf) {
                // SAFETY: per contract, nobody reads the leaf any more.
                unsafe { os::unmap(l.cast(), core::mem::size_of::<Leaf>()) };
            }
        }
    }
}

impl Default for SegMap {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn headers(m: &SegMap, from: usize) -> Vec<usize> {
        let mut v = Vec::new();
        m.scan_headers(from, |b| {
            v.push(b);
            true
        });
        v
    }

    #[test]
    fn scan_finds_exactly_the_headers_in_order() {
        let m = SegMap::new();
        let seg = SEGMENT_SIZE;
        // Chunks 63, 64 (a word boundary), a 3-chunk mapping at 200, and
        // one in another leaf.
        let other_leaf = (1 << (LEAF_BITS + SEGMENT_SHIFT)) + 5 * seg;
        for (base, len) in [
            (63 * seg, seg),
            (64 * seg, seg),
            (200 * seg, 3 * seg),
            (other_leaf, seg),
        ] {
            m.insert(base, len).unwrap();
        }
        let all = [63 * seg, 64 * seg, 200 * seg, other_leaf];
        assert_eq!(headers(&m, 0), all);
        assert_eq!(headers(&m, 64 * seg), all[1..]);
        assert_eq!(headers(&m, 65 * seg - 1), all[1..], "from its chunk on");
        assert_eq!(
            headers(&m, 201 * seg),
            all[3..],
            "interior chunks are no headers"
        );
        assert_eq!(m.get(201 * seg), Chunk::Interior);
        m.remove(64 * seg, seg);
        m.remove(200 * seg, 3 * seg);
        assert_eq!(headers(&m, 0), [63 * seg, other_leaf]);
        assert_eq!(m.get(200 * seg), Chunk::Foreign);
        let mut first = Vec::new();
        m.scan_headers(0, |b| {
            first.push(b);
            false
        });
        assert_eq!(first, [63 * seg], "stops when told");
        // SAFETY: nobody else uses this map.
        unsafe { m.clear() };
        assert!(headers(&m, 0).is_empty());
    }
}
