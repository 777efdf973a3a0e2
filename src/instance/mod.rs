//! The instance: every piece of state one emma allocator has.
//!
//! [`InstanceState`] is `const`-constructible and lives in a hidden static
//! that [`emma_instance!`](crate::emma_instance) mints for each instance, so
//! two instances share nothing: not a lock, not a segment, not a counter.
//! This module holds the state itself and its one-time setup and fork
//! repair; [`heaps`] claims, makes and collects heaps, [`tp_table`] finds
//! a thread's heap without `tls`, [`teardown`] unmaps everything.
//!
//! # Which heap does a thread use?
//! - With `tls`: the heap pointer in the instance's thread-local slot.
//! - Without: the thread pointer hashed into the instance's [`TpTable`];
//!   the entry is used only if the heap's `owner.tp` equals the caller's
//!   thread pointer.
//!
//! A thread without a heap *claims* one in [`InstanceState::acquire_heap`],
//! in this order:
//! 1. a heap whose `owner.tp` is the caller's thread pointer: its owner has
//!    exited (two live threads never share a thread pointer) and the thread
//!    library reused its stack for the caller;
//! 2. a heap nobody owns (never claimed, collected, or released by
//!    teardown);
//! 3. a heap whose owner thread id no longer exists (`tgkill(pid, tid, 0)`
//!    answers ESRCH). With `tls` that is enough. Without it another thread
//!    could be reaching that heap through the table by rule 1 at the same
//!    moment, and a claim alone could not tell: the heap is taken only
//!    with the proof the sweep uses ([`heaps`]: hidden from the table, then
//!    nobody found on the dead thread's control block);
//! 4. a new heap from the instance's metadata arena.
//!
//! Claims are made with a compare-and-swap on `owner_tid`, so two threads
//! never take the same heap. Heaps are never freed while the instance
//! lives, which keeps every segment's `owner` pointer valid.
//!
//! # fork
//! The first slow path in a child notices the fork through
//! [`ForkWatch`] and repairs: the store's lock and caches are reset,
//! the thread-pointer table is cleared and the fork *epoch* advances. Heaps
//! from the parent are then *stale*: a stale heap whose owner was inside a
//! slow path (`busy`) is never touched again; others may be claimed by
//! rule 1 only (thread ids are from another process). The forking thread
//! keeps its heap: with `tls` through its slot, without through rule 1.

use crate::heap::{Heap, Source};
use crate::keys::Keys;
use crate::segmap::Chunk;
use crate::segment::{Kind, Segment, SegmentHeader, SEGMENT_SIZE};
use crate::store::SegmentStore;
use crate::sync::{ForkState, ForkWatch};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

mod heaps;
mod invariants;
mod teardown;
mod tp_table;

pub use tp_table::TpTable;

/// Heap metadata is carved from mappings of this size.
const ARENA_CHUNK: usize = 64 * 1024;

/// Bump allocator for heap metadata (behind the store's lock).
struct Arena {
    cur: usize,
    end: usize,
    /// Chunks, linked through their first word, for teardown.
    chunks: *mut u8,
}

/// All state of one emma instance. See the module docs.
pub struct InstanceState {
    /// Segments, huge blocks, the segment map and mapping statistics.
    pub store: SegmentStore,
    fork: ForkWatch,
    /// Set once the instance's one-time setup ran.
    ready: AtomicU32,
    /// Advanced by each fork repair; see the module docs.
    epoch: AtomicU32,
    /// Every heap ever made, linked through `Heap::next_heap`.
    heaps: AtomicPtr<Heap>,
    /// Length of the `heaps` list.
    heap_count: AtomicUsize,
    arena: UnsafeCell<Arena>,
    /// Free-list keys (`hardened`), written once by `setup`.
    keys: UnsafeCell<Keys>,
    /// Without `tls`: thread pointer → heap.
    pub tp_table: TpTable,
    /// Whether threads find their heaps through TLS slots (set by the
    /// first claim or trim; decides how exited owners are recognised).
    tls: AtomicBool,
    /// When the slow paths next look for heaps of exited threads (ns).
    next_collect: AtomicU64,
    /// Sweeps for heaps of exited threads, counted twice: odd while one
    /// thread sweeps (one at a time), even between sweeps. A thread that
    /// found no heap to claim can tell that a sweep held some meanwhile.
    sweeps: AtomicU32,
}

// SAFETY: `arena` is only touched with the store's lock held, `keys` only
// written before `ready` is published; everything else is atomic or
// internally synchronised.
unsafe impl Sync for InstanceState {}

impl InstanceState {
    /// A fresh instance: nothing mapped until the first allocation.
    pub const fn new() -> Self {
        InstanceState {
            store: SegmentStore::new(),
            fork: ForkWatch::new(),
            ready: AtomicU32::new(0),
            epoch: AtomicU32::new(1),
            heaps: AtomicPtr::new(ptr::null_mut()),
            heap_count: AtomicUsize::new(0),
            arena: UnsafeCell::new(Arena {
                cur: 0,
                end: 0,
                chunks: ptr::null_mut(),
            }),
            keys: UnsafeCell::new(Keys { k: 0 }),
            tp_table: TpTable::new(),
            tls: AtomicBool::new(false),
            next_collect: AtomicU64::new(0),
            sweeps: AtomicU32::new(0),
        }
    }

    /// The instance's identity, stored in every segment header.
    #[inline(always)]
    pub fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// Runs on every slow path before shared state is touched: one-time
    /// setup, and repair after a fork.
    #[inline]
    pub fn enter(&self) {
        if self.ready.load(Ordering::Acquire) == 0 {
            self.setup();
        }
        if self.fork.check() == ForkState::MustRepair {
            self.repair_after_fork();
        }
    }

    #[cold]
    fn setup(&self) {
        let _g = self.store.lock();
        if self.ready.load(Ordering::Relaxed) == 0 {
            self.fork.arm();
            // SAFETY: lock held and `ready` not yet published: no reader.
            unsafe { *self.keys.get() = Keys::random(self.id()) };
            self.ready.store(1, Ordering::Release);
        }
    }

    /// The instance's free-list keys (valid after `enter`).
    pub(crate) fn keys(&self) -> Keys {
        // SAFETY: written once before `ready` was published with Release.
        unsafe { *self.keys.get() }
    }

    #[cold]
    fn repair_after_fork(&self) {
        // SAFETY: we won the repair; the threads that could hold the lock
        // or be inside the caches do not exist in this process.
        unsafe {
            self.store.repair_after_fork();
            *self.arena.get() = Arena {
                cur: 0,
                end: 0,
                chunks: (*self.arena.get()).chunks,
            };
        }
        self.tp_table.clear();
        // A sweep interrupted by the fork left this odd.
        let n = self.sweeps.load(Ordering::Relaxed);
        self.sweeps.store(n.wrapping_add(n & 1), Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Release);
        self.fork.repaired();
    }

    /// The current fork epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    // ---- heaps without `tls` ---------------------------------------

    /// Without `tls`: the calling thread's heap, or the empty heap (see
    /// `TpTable::get`).
    #[inline(always)]
    pub fn tp_heap(&self) -> *mut Heap {
        self.tp_table.get()
    }

    /// Without `tls`: remembers `h` as the calling thread's heap.
    pub fn set_tp_heap(&self, h: *mut Heap) {
        self.tp_table.set(h)
    }

    // ---- the address space -------------------------------------------

    /// Whether `p` points into memory this instance has mapped for blocks
    /// (a small segment, or a huge block's mapping). Safe for any value:
    /// answered from the segment map, without touching `p`.
    pub fn owns(&self, p: *const u8) -> bool {
        let addr = p as usize;
        match self.store.segmap.get(addr) {
            Chunk::Foreign => false,
            Chunk::Interior => true,
            Chunk::Header => {
                // A huge block may begin exactly at the next chunk boundary;
                // the header chunk itself only holds metadata below it.
                addr & (SEGMENT_SIZE - 1) != 0 || addr == 0
            }
        }
    }

    /// Calls `f(base, len)` for every mapping (segment or huge block) the
    /// instance has; for diagnostics, tests and teardown.
    ///
    /// Headers are read under the store's lock, which every unmapping
    /// takes, so mappings cannot vanish while being read; `f` itself runs
    /// without the lock (it may allocate, even from this instance), on
    /// snapshots taken a batch at a time.
    pub fn for_each_mapping(&self, mut f: impl FnMut(usize, usize)) {
        const BATCH: usize = 64;
        let mut from = 0;
        loop {
            let mut buf = [(0usize, 0usize); BATCH];
            let mut n = 0;
            let mut resume = None;
            {
                let _g = self.store.lock();
                self.store.segmap.scan_headers(from, |base| {
                    if n == BATCH {
                        resume = Some(base);
                        return false;
                    }
                    let h = base as *const SegmentHeader;
                    // SAFETY: a header chunk of our map is a mapped segment,
                    // and the lock keeps it mapped.
                    let len = unsafe {
                        if (*h).kind == Kind::Huge as u32 {
                            (*(h as *const crate::huge::HugeHeader)).map_len
                        } else {
                            SEGMENT_SIZE
                        }
                    };
                    buf[n] = (base, len);
                    n += 1;
                    true
                });
            }
            for &(base, len) in &buf[..n] {
                f(base, len);
            }
            match resume {
                Some(next) => from = next,
                None => return,
            }
        }
    }
}

/// What heaps reach of their instance.
impl Source for InstanceState {
    fn store(&self) -> &SegmentStore {
        &self.store
    }

    fn alloc_segment(&self) -> *mut Segment {
        self.enter();
        self.store.alloc_segment(self.id(), self.keys())
    }

    unsafe fn release_segment(&self, seg: *mut Segment) {
        self.enter();
        // SAFETY: forwarded contract.
        unsafe { self.store.release_segment(seg) }
    }

    fn tick(&self, now: u64) {
        self.tick_instance(now);
    }
}

impl Default for InstanceState {
    fn default() -> Self {
        Self::new()
    }
}

/// Under Miri: the calling thread's heap in `state`'s emulated slot.
#[cfg(all(miri, feature = "tls"))]
pub fn miri_slot_load(state: &InstanceState) -> *mut Heap {
    match crate::sys::tls_get(state as *const InstanceState as usize) {
        0 => crate::heap::empty_heap(),
        h => h as *mut Heap,
    }
}

/// Under Miri: sets the calling thread's heap in `state`'s emulated slot.
#[cfg(all(miri, feature = "tls"))]
pub fn miri_slot_store(state: &InstanceState, h: *mut Heap) {
    crate::sys::tls_set(state as *const InstanceState as usize, h as usize)
}
