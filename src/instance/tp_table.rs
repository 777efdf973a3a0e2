//! The thread-pointer table: how a thread finds its heap without `tls`.
//!
//! A small open table indexed by a hash of the thread pointer (`fs:[0]`).
//! An entry is only a hint: the heap it names is the caller's only if the
//! heap's `owner.tp` equals the caller's thread pointer, so a collision,
//! a stale entry or a heap taken away just sends the caller to the slow
//! path, which claims a heap and overwrites the entry.

use crate::heap::{empty_heap, Heap};
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
        if unsafe { (*h).owner.tp.load(Ordering::Relaxed) } == tp {
            h
        } else {
            empty_heap()
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

/// Thread pointers are page aligned-ish and spread in the address space:
/// a multiplicative hash of the bits above the page offset.
#[inline(always)]
fn tp_hash(tp: usize) -> usize {
    ((tp >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 8)) & (TP_TABLE_LEN - 1)
}

const _: () = assert!(TP_TABLE_LEN == 256);
