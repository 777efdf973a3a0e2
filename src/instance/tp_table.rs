//! The thread-pointer table: how a thread finds its heap without `tls`.
//!
//! A small open table indexed by a hash of the thread pointer (`fs:[0]`).
//! An entry is only a hint: the heap it names is the caller's only if the
//! heap's `owner.tp` equals the caller's thread pointer, so a collision,
//! a stale entry or a heap taken away just sends the caller to the slow
//! path, which claims a heap and overwrites the entry.

use crate::heap::{empty_heap, Heap};
use crate::segment::Owner;
use crate::thread;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Entries in the table.
const TP_TABLE_LEN: usize = 256;

/// Thread pointer → heap hints. See the module docs.
pub struct TpTable {
    entries: [AtomicPtr<Heap>; TP_TABLE_LEN],
}

impl TpTable {
    /// Every entry names the empty heap.
    pub const fn new() -> Self {
        TpTable {
            entries: [const { AtomicPtr::new(empty_heap()) }; TP_TABLE_LEN],
        }
    }

    /// The calling thread's heap, or the empty heap. About five
    /// instructions.
    #[inline(always)]
    pub fn get(&self) -> *mut Heap {
        let tp = thread::thread_pointer();
        let h = self.entries[tp_hash(tp)].load(Ordering::Acquire);
        // SAFETY: entries are the empty heap or real heaps, which live as
        // long as the instance.
        if unsafe { Owner::tp_is(Heap::as_owner(h), tp) } {
            h
        } else {
            // A branch (to a call that is never inlined) rather than a
            // conditional move of the empty heap's address: one instruction
            // less on the hit.
            not_found()
        }
    }

    /// Remembers `h` as the calling thread's heap.
    pub fn set(&self, h: *mut Heap) {
        let tp = thread::thread_pointer();
        self.entries[tp_hash(tp)].store(h, Ordering::Release);
    }

    /// Forgets every entry (after a fork or a teardown).
    pub fn clear(&self) {
        for e in &self.entries {
            e.store(empty_heap(), Ordering::Relaxed);
        }
    }
}

/// [`TpTable::get`] found no heap of the calling thread.
#[cold]
#[inline(never)]
fn not_found() -> *mut Heap {
    empty_heap()
}

/// Thread pointers are page aligned-ish and spread in the address space:
/// a multiplicative (Fibonacci) hash, the product's top bits. The page
/// offset, the same for most threads, adds a constant to the product,
/// which does not spoil the hash of the bits above it: no shift needed.
#[inline(always)]
fn tp_hash(tp: usize) -> usize {
    (tp.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 8)) & (TP_TABLE_LEN - 1)
}

const _: () = assert!(TP_TABLE_LEN == 256);
