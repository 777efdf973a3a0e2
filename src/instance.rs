//! The instance: every piece of state one emma allocator has.
//!
//! [`InstanceState`] is `const`-constructible and lives in a hidden static
//! that [`emma_instance!`](crate::emma_instance) mints for each instance, so
//! two instances share nothing: not a lock, not a segment, not a counter.
//!
//! # Which heap does a thread use?
//! - With `tls`: the heap pointer in the instance's `#[thread_local]` slot.
//! - Without: the thread pointer hashed into [`InstanceState`]'s
//!   `tp_table`; the entry is used only if the heap's `owner_tp` equals the
//!   caller's thread pointer.
//!
//! A thread without a heap *claims* one in [`InstanceState::acquire_heap`],
//! in this order:
//! 1. a heap whose `owner_tp` is the caller's thread pointer: its owner has
//!    exited (two live threads never share a thread pointer) and the thread
//!    library reused its stack for the caller;
//! 2. a heap nobody owns (never claimed, or released by teardown);
//! 3. with `tls` only: a heap whose owner thread id no longer exists
//!    (`tgkill(pid, tid, 0)` answers ESRCH). Without `tls` this rule is off:
//!    another thread could be reaching that heap through `tp_table` by
//!    rule 1 at the same moment, and nothing would tell the two apart;
//! 4. a new heap from the instance's metadata arena.
//!
//! Claims are made with a compare-and-swap on `owner_tid`, so two threads
//! never take the same heap. Heaps are never freed while the instance
//! lives, which keeps every segment's `owner` pointer valid.
//!
//! # fork
//! The first slow path in a child notices the fork through
//! [`ForkWatch`] and repairs: the store's lock and caches are reset,
//! `tp_table` is cleared and the fork *epoch* advances. Heaps from the
//! parent are then *stale*: a stale heap whose owner was inside a slow path
//! (`busy`) is never touched again; others may be claimed by rule 1 only
//! (thread ids are from another process). The forking thread keeps its
//! heap: with `tls` through its slot, without through rule 1.

use crate::harden::Keys;
use crate::heap::{empty_heap, Heap};
use crate::segmap::Chunk;
use crate::segment::{Kind, Segment, SegmentHeader, SEGMENT_SIZE};
use crate::store::SegmentStore;
use crate::sync::{ForkState, ForkWatch};
use crate::{sys, thread};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// Entries in the thread-pointer table (without `tls`).
const TP_TABLE_LEN: usize = 256;
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
    tp_table: [AtomicPtr<Heap>; TP_TABLE_LEN],
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
            tp_table: [const { AtomicPtr::new(empty_heap()) }; TP_TABLE_LEN],
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
        for e in &self.tp_table {
            e.store(empty_heap(), Ordering::Relaxed);
        }
        self.epoch.fetch_add(1, Ordering::Release);
        self.fork.repaired();
    }

    /// The current fork epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    // ---- segments, for heaps ---------------------------------------

    /// A segment for a heap's new page (null if out of memory).
    pub(crate) fn alloc_segment(&self) -> *mut Segment {
        self.enter();
        self.store.alloc_segment(self.id(), self.keys())
    }

    /// Takes back a heap's empty segment.
    ///
    /// # Safety
    /// As for [`SegmentStore::release_segment`].
    pub(crate) unsafe fn release_segment(&self, seg: *mut Segment) {
        self.enter();
        // SAFETY: forwarded contract.
        unsafe { self.store.release_segment(seg) }
    }

    /// Purges a heap's segment's free slices.
    ///
    /// # Safety
    /// As for [`SegmentStore::purge_segment`].
    pub(crate) unsafe fn purge_segment(&self, seg: *mut Segment) {
        // SAFETY: forwarded contract.
        unsafe { self.store.purge_segment(seg) }
    }

    // ---- heaps -------------------------------------------------------

    /// Without `tls`: the calling thread's heap from the thread-pointer
    /// table, or the empty heap. About five instructions.
    #[inline(always)]
    pub fn tp_heap(&self) -> *mut Heap {
        let tp = thread::thread_pointer();
        let h = self.tp_table[tp_hash(tp)].load(Ordering::Acquire);
        // SAFETY: table entries are the empty heap or real heaps, which
        // live as long as the instance.
        if unsafe { (*h).owner_tp.load(Ordering::Relaxed) } == tp {
            h
        } else {
            empty_heap()
        }
    }

    /// Without `tls`: remembers `h` as the calling thread's heap.
    pub fn set_tp_heap(&self, h: *mut Heap) {
        let tp = thread::thread_pointer();
        self.tp_table[tp_hash(tp)].store(h, Ordering::Release);
    }

    /// Claims a heap for the calling thread (see the module docs). Null if
    /// a new heap was needed and no memory could be had.
    ///
    /// `by_tid` enables rule 3 (only sound with `tls`).
    #[cold]
    pub fn acquire_heap(&self, by_tid: bool) -> *mut Heap {
        self.enter();
        let tp = thread::thread_pointer();
        let tid = sys::gettid();
        let epoch = self.epoch();
        // Rule 1: our own thread pointer (our heap, or a dead thread's
        // whose stack we inherited), unless it was inside a slow path at a
        // fork, or another live thread holds it right now (`trim` collecting
        // the dead thread's heap).
        let found = self.claim_where(tid, |h| {
            let stale = h.epoch.load(Ordering::Relaxed) != epoch;
            let owner = h.owner_tid.load(Ordering::Relaxed);
            h.owner_tp.load(Ordering::Relaxed) == tp
                && !(stale && h.busy.load(Ordering::Relaxed) != 0)
                && (owner == 0 || owner == tid || stale || !sys::thread_alive(owner))
        });
        // Rule 2: nobody's.
        let found = found.or_else(|| {
            self.claim_where(tid, |h| {
                h.owner_tid.load(Ordering::Relaxed) == 0 && h.owner_tp.load(Ordering::Relaxed) == 0
            })
        });
        // Rule 3: a dead owner's (with `tls` only).
        let found = found.or_else(|| {
            if !by_tid {
                return None;
            }
            self.claim_where(tid, |h| {
                let owner = h.owner_tid.load(Ordering::Relaxed);
                owner != 0
                    && owner != tid
                    && h.epoch.load(Ordering::Relaxed) == epoch
                    && !sys::thread_alive(owner)
            })
        });
        let h = match found {
            Some(h) => h,
            None => match self.new_heap(tid) {
                Some(h) => h,
                None => return ptr::null_mut(),
            },
        };
        // SAFETY: as above; the heap is now ours.
        let hr = unsafe { &*h };
        hr.owner_tp.store(tp, Ordering::Relaxed);
        hr.epoch.store(epoch, Ordering::Relaxed);
        hr.busy.store(0, Ordering::Relaxed);
        h
    }

    /// Refreshes the calling thread's own heap after a fork (new thread id,
    /// current epoch), so that it counts as alive again.
    ///
    /// # Safety
    /// The calling thread owns `h`, a real heap of this instance.
    pub unsafe fn refresh_heap(&self, h: *mut Heap) {
        // SAFETY: per contract.
        let hr = unsafe { &*h };
        hr.owner_tid.store(sys::gettid(), Ordering::Relaxed);
        hr.epoch.store(self.epoch(), Ordering::Relaxed);
    }

    fn find_heap(&self, mut pred: impl FnMut(&Heap) -> bool) -> Option<*mut Heap> {
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: registry heaps live as long as the instance.
            let hr = unsafe { &*h };
            if pred(hr) {
                return Some(h);
            }
            h = hr.next_heap;
        }
        None
    }

    /// The first heap matching `pred` that we manage to claim (CAS of
    /// `owner_tid` from the value `pred` saw to `tid`).
    fn claim_where(&self, tid: u32, mut pred: impl FnMut(&Heap) -> bool) -> Option<*mut Heap> {
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: as in `find_heap`.
            let hr = unsafe { &*h };
            let seen = hr.owner_tid.load(Ordering::Relaxed);
            if pred(hr)
                && hr
                    .owner_tid
                    .compare_exchange(seen, tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(h);
            }
            h = hr.next_heap;
        }
        None
    }

    fn new_heap(&self, tid: u32) -> Option<*mut Heap> {
        let size = core::mem::size_of::<Heap>().next_multiple_of(64);
        let mem = {
            let _g = self.store.lock();
            // SAFETY: lock held.
            let a = unsafe { &mut *self.arena.get() };
            if a.end - a.cur < size {
                self.store.commit_locked(ARENA_CHUNK).ok()?;
                let Ok(chunk) = sys::mmap_anon(ARENA_CHUNK) else {
                    self.store.decommit(ARENA_CHUNK);
                    return None;
                };
                let c = chunk.as_ptr();
                // SAFETY: fresh chunk; its first word links the chunk list.
                unsafe { c.cast::<*mut u8>().write(a.chunks) };
                a.chunks = c;
                self.store.charge(ARENA_CHUNK);
                self.store
                    .stats
                    .meta
                    .fetch_add(ARENA_CHUNK, Ordering::Relaxed);
                a.cur = c as usize + 64;
                a.end = c as usize + ARENA_CHUNK;
            }
            let m = a.cur;
            a.cur += size;
            m as *mut Heap
        };
        // SAFETY: `mem` is fresh arena memory of the right size and alignment.
        unsafe {
            mem.write(Heap::new(self));
            (*mem).keys = self.keys().tweak(mem as usize);
            (*mem).owner_tid.store(tid, Ordering::Relaxed);
            let mut head = self.heaps.load(Ordering::Relaxed);
            loop {
                (*mem).next_heap = head;
                match self.heaps.compare_exchange_weak(
                    head,
                    mem,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(x) => head = x,
                }
            }
        }
        self.heap_count.fetch_add(1, Ordering::Relaxed);
        Some(mem)
    }

    /// Number of heaps the instance has made.
    pub fn heap_count(&self) -> usize {
        self.heap_count.load(Ordering::Relaxed)
    }

    /// Calls `f` for every heap.
    pub fn for_each_heap(&self, mut f: impl FnMut(&Heap)) {
        let _ = self.find_heap(|h| {
            f(h);
            false
        });
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

    /// Gives back to the kernel what the calling thread's heap and the
    /// instance's caches hold without live blocks. With `by_tid` (only
    /// sound with `tls`, see rule 3), also collects the heaps of threads
    /// that have exited: their pending remote frees are applied, their
    /// empty pages released, and the heaps left free for reuse.
    ///
    /// # Safety
    /// `h` is the calling thread's heap (or the empty heap).
    pub unsafe fn trim(&self, h: *mut Heap, by_tid: bool) {
        self.enter();
        if !Heap::is_empty_heap(h) {
            // SAFETY: per contract.
            unsafe { Heap::trim(h) };
        }
        if by_tid {
            self.collect_abandoned();
        }
        self.store.drain_caches();
    }

    /// Claims each heap whose owner thread has exited, trims it and leaves
    /// it unowned (rule 2 then hands it to the next new thread).
    fn collect_abandoned(&self) {
        let tid = sys::gettid();
        let epoch = self.epoch();
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: registry heaps live as long as the instance.
            let hr = unsafe { &*h };
            let owner = hr.owner_tid.load(Ordering::Relaxed);
            if owner != 0
                && owner != tid
                && hr.epoch.load(Ordering::Relaxed) == epoch
                && !sys::thread_alive(owner)
                && hr
                    .owner_tid
                    .compare_exchange(owner, tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // SAFETY: we claimed the heap; its owner is gone.
                unsafe { Heap::trim(h) };
                // Leave it unowned; the compare-and-swap keeps this from
                // undoing a claim nobody else can make while we hold it.
                hr.owner_tp.store(0, Ordering::Relaxed);
                let _ = hr
                    .owner_tid
                    .compare_exchange(tid, 0, Ordering::Release, Ordering::Relaxed);
            }
            h = hr.next_heap;
        }
    }

    /// Unmaps every segment and huge block (and the caches), and returns
    /// the instance to its initial state. Heap metadata (one 64 KiB mapping
    /// per 40 heaps) stays, emptied but still owned: a thread whose slot
    /// names its heap keeps using it (from empty), heaps of exited threads
    /// are reclaimed as usual. The instance is usable again, by any thread.
    ///
    /// # Safety
    /// No block of the instance may be used (or freed) after the call, and
    /// no other thread may be inside the instance during it.
    pub unsafe fn teardown(&self) {
        let mut maps: [(usize, usize); 32] = [(0, 0); 32];
        loop {
            let mut n = 0;
            self.for_each_mapping(|b, l| {
                if n < maps.len() {
                    maps[n] = (b, l);
                    n += 1;
                }
            });
            if n == 0 {
                break;
            }
            for &(b, l) in &maps[..n] {
                // SAFETY: per contract nobody uses the instance's memory.
                unsafe { self.store.unmap(NonNull::new_unchecked(b as *mut u8), l) };
            }
        }
        // SAFETY: per contract nobody is inside the lock or the caches.
        unsafe { self.store.repair_after_fork() };
        // Owners are kept: clearing them would let a new thread claim a
        // heap that its (live) owner still reaches through its slot.
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: heaps stay mapped (the arena survives teardown).
            unsafe {
                Heap::reset(h);
                h = (*h).next_heap;
            }
        }
        for e in &self.tp_table {
            e.store(empty_heap(), Ordering::Relaxed);
        }
        let s = &self.store.stats;
        s.segments.store(0, Ordering::Relaxed);
        s.huge_blocks.store(0, Ordering::Relaxed);
        s.huge_bytes.store(0, Ordering::Relaxed);
        // Only the heap metadata is left.
        s.committed
            .store(s.meta.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(page) = NonNull::new(self.fork.page()) {
            // SAFETY: the fork page is ours and nobody reads it now.
            unsafe { crate::os::unmap(page, sys::PAGE_SIZE) };
        }
        self.fork.disarm();
        self.ready.store(0, Ordering::Release);
    }

    /// [`InstanceState::teardown`], then also unmaps the heap metadata and
    /// the segment map: afterwards the instance holds no mapping at all.
    /// For unloading a plugin.
    ///
    /// # Safety
    /// As for `teardown`, and no thread that used the instance may use it
    /// again (their thread-local slots would name unmapped heaps); threads
    /// that never used it may.
    pub unsafe fn release_all(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.teardown() };
        let _g = self.store.lock();
        // SAFETY: lock held; per contract no heap is used any more.
        let a = unsafe { &mut *self.arena.get() };
        let mut chunk = a.chunks;
        while let Some(c) = NonNull::new(chunk) {
            // SAFETY: each chunk's first word links the next; the chunk is
            // ours and unused.
            unsafe {
                chunk = c.as_ptr().cast::<*mut u8>().read();
                crate::os::unmap(c, ARENA_CHUNK);
            }
            self.store.uncharge(ARENA_CHUNK);
            self.store.decommit(ARENA_CHUNK);
            self.store
                .stats
                .meta
                .fetch_sub(ARENA_CHUNK, Ordering::Relaxed);
        }
        *a = Arena {
            cur: 0,
            end: 0,
            chunks: ptr::null_mut(),
        };
        self.heaps.store(ptr::null_mut(), Ordering::Release);
        self.heap_count.store(0, Ordering::Relaxed);
        // SAFETY: per contract nobody reads the map any more.
        unsafe { self.store.segmap.clear() };
    }
}

impl Default for InstanceState {
    fn default() -> Self {
        Self::new()
    }
}

/// Thread pointers are page aligned-ish and spread in the address space:
/// a multiplicative hash of the bits above the page offset.
#[inline(always)]
fn tp_hash(tp: usize) -> usize {
    ((tp >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 8)) & (TP_TABLE_LEN - 1)
}

const _: () = assert!(TP_TABLE_LEN == 256);
