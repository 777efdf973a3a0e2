//! [`Blob`]: one raw heap block, allocated and freed straight through the global allocator.
//!
//! The micro-workloads use this instead of `Box<[u8]>`/`Vec<u8>` so that the time measured is the
//! allocator's, not `memset`'s: a blob writes only its first and last byte (and, for big blocks,
//! one byte per page, because a real program touches the memory it asks for and page faults on
//! fresh memory are part of an allocator's cost).

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

const PAGE: usize = 4096;

/// An owned heap block of `len` bytes (alignment 8), freed on drop.
pub struct Blob {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Blob owns its block exclusively, like a Box<[u8]>; moving it to another thread (and
// freeing it there) is exactly the cross-thread traffic the threaded workloads want.
unsafe impl Send for Blob {}

impl Blob {
    /// Allocates `len` (> 0) bytes and writes `tag` to the first and last byte.
    #[inline]
    pub fn new(len: usize, tag: u8) -> Blob {
        let layout = Self::layout(len);
        // SAFETY: `layout` has non-zero size (len > 0 is the caller's contract, checked in debug).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: both offsets are inside the block just allocated.
        unsafe {
            ptr.as_ptr().write(tag);
            ptr.as_ptr().add(len - 1).write(tag);
        }
        Blob { ptr, len }
    }

    /// Like [`Blob::new`], but also writes one byte in every 4 KiB page, as a program that uses
    /// a big buffer would (so an allocator that hands back fresh, unfaulted memory pays for it).
    #[inline]
    pub fn new_touched(len: usize, tag: u8) -> Blob {
        let b = Blob::new(len, tag);
        let mut off = PAGE;
        while off < len {
            // SAFETY: off < len, inside the block.
            unsafe { b.ptr.as_ptr().add(off).write(tag) };
            off += PAGE;
        }
        b
    }

    fn layout(len: usize) -> Layout {
        debug_assert!(len > 0);
        Layout::from_size_align(len, 8).expect("blob size overflows a Layout")
    }

    /// The block's size in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: blobs are never empty (present for clippy's `len_without_is_empty`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A value derived from the block's contents and size, for checksums: reading the bytes back
    /// also checks that no other allocation overwrote them.
    #[inline]
    pub fn digest(&self) -> u64 {
        // SAFETY: first and last byte are inside the block and were initialised in `new`.
        let (a, b) = unsafe {
            (
                self.ptr.as_ptr().read(),
                self.ptr.as_ptr().add(self.len - 1).read(),
            )
        };
        (u64::from(a) << 8 | u64::from(b)) ^ self.len as u64
    }

    /// Raw pointer to the block (for workloads that write into it heavily).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Blob {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}
