//! Heaps: claiming one for a thread, making new ones, and collecting the
//! heaps of threads that have exited.
//!
//! # Claiming
//! A thread without a heap claims one in [`InstanceState::acquire_heap`]
//! (rules in the [module docs](super)); every claim is a compare-and-swap
//! of `owner_tid`, so two threads never take the same heap. A thread that
//! finds none to claim while a sweep (below) holds the dead threads' heaps
//! waits for it, briefly, rather than make a heap it does not need.
//!
//! # Collecting
//! A thread's exit runs no code of ours, so its heap is found afterwards:
//! on a slow path at most every [`purge::COLLECT_INTERVAL_NS`] (more
//! rarely with many heaps), or on `trim()`, the calling thread walks the
//! registry and *collects* each heap that has something to give back and
//! whose owner is gone: claims it, hands out its pending batch of remote
//! frees and the blocks of other heaps it kept for reuse (its foreign
//! pages), frees what other threads sent to its inbox, releases its empty
//! pages and segments (which the store purges after the delay), purges
//! its segments' free slices once their deadline passed, and leaves it
//! unowned, for rule 2 to give to the next new thread. Heaps that keep
//! live blocks are looked at again on later sweeps (their inbox fills as
//! the blocks are freed).
//!
//! *Gone* means, with `tls`: `tgkill(tid, 0)` answers ESRCH (a thread
//! reaches its heap only through its own TLS slot, which died with it).
//! Without `tls` a thread reaches a heap through the thread-pointer table
//! whenever the heap's `owner.tp` is its thread pointer, with no claim: a
//! new thread that inherited the dead thread's stack (and so its thread
//! pointer) may be using the heap right now. The heap is therefore
//! collected, or claimed by a new thread (rule 3), only if, after it was
//! hidden from the fast path (`owner.tp` cleared) and a full fence, no
//! live thread has that thread pointer:
//! - the kernel's `clear_child_tid` word recorded at the claim, when it
//!   lies in the thread's control block (the page at the thread pointer;
//!   glibc and musl keep it there), holds no thread id: the kernel clears
//!   it when a thread exits (glibc then writes -1 once the thread is
//!   joined), and a new thread on the same control block has its tid
//!   written there by `clone` before it runs;
//! - or the control block is no longer mapped (its stack was freed).
//!
//! A thread that was inside a fast path on the heap before it was hidden
//! is alive, so one of the two checks sees it and the heap is handed
//! back. Otherwise its memory waits for the thread library to reuse or
//! free the dead thread's stack (see the README's limits). Only the
//! thread that hid a heap trusts what it reads of it: another thread that
//! reads `owner.tp` as 0 leaves the heap alone, and the proof reads the
//! thread pointer again once its claim succeeded.
//!
//! The heap is hidden only for the proof's two syscalls, and waits by a
//! sweep do not cover a new thread's proof: a thread that inherits the
//! stack and looks for its heap in that moment makes one of its own. The
//! hidden heap is then recorded as that thread's, and collected after it
//! exits.

use super::{InstanceState, ARENA_CHUNK};
use crate::heap::{Heap, Source};
use crate::{purge, sys, thread};
use core::ptr::{self, NonNull};
use core::sync::atomic::{fence, Ordering};

// A heap fits in an arena chunk after its link word, which takes a heap's
// alignment (or `new_heap` would map chunks forever).
const HEAP_ALIGN: usize = core::mem::align_of::<Heap>();
const _: () =
    assert!(core::mem::size_of::<Heap>().next_multiple_of(HEAP_ALIGN) + HEAP_ALIGN <= ARENA_CHUNK);

/// The sweep runs at most every [`purge::COLLECT_INTERVAL_NS`] times
/// `1 + heaps / HEAPS_PER_INTERVAL`, bounding its syscalls per second.
const HEAPS_PER_INTERVAL: usize = 64;

/// How long a thread that needs a heap waits, at most twice, for a sweep
/// to hand back the heaps it holds (a sweep takes microseconds). Longer in
/// the unit tests, whose sweep is a test thread that may be descheduled.
const SWEEP_WAIT_NS: u64 = if cfg!(test) {
    2_000_000_000
} else {
    10_000_000
};

impl InstanceState {
    /// Claims a heap for the calling thread (see the module docs). Null if
    /// a new heap was needed and no memory could be had.
    ///
    /// `by_tid`: threads are told apart by thread id alone (`tls`), which
    /// makes rule 3 a plain claim.
    #[cold]
    pub fn acquire_heap(&self, by_tid: bool) -> *mut Heap {
        self.enter();
        if by_tid {
            self.tls.store(true, Ordering::Relaxed);
        }
        let tp = thread::thread_pointer();
        let tid = sys::gettid();
        let epoch = self.epoch();
        let mut tries = 0;
        let found = loop {
            let before = self.sweeps.load(Ordering::Acquire);
            let found = self.find_heap(tid, tp, epoch, by_tid);
            // The search's loads before the second look at the count (as
            // a seqlock's reader).
            fence(Ordering::Acquire);
            // A sweep holds each dead thread's heap while it collects it,
            // and one may have run while we looked: then look again once
            // it is done, rather than make a new heap that would stay. The
            // wait is bounded (a new heap is always a correct answer): the
            // sweep may be this very thread's, interrupted by a signal
            // handler that allocates.
            if found.is_some()
                || tries == 2
                || self.sweeps.load(Ordering::Acquire) == before && before & 1 == 0
            {
                break found;
            }
            tries += 1;
            let until = sys::monotonic_ns().saturating_add(SWEEP_WAIT_NS);
            while self.sweeps.load(Ordering::Acquire) & 1 != 0 && sys::monotonic_ns() < until {
                sys::sched_yield();
            }
        };
        let h = match found {
            Some(h) => h,
            None => match self.new_heap(tid) {
                Some(h) => h,
                None => return ptr::null_mut(),
            },
        };
        // SAFETY: as above; the heap is now ours.
        let hr = unsafe { &*h };
        hr.owner.tp.store(tp, Ordering::Relaxed);
        hr.owner_ctid.store(sys::tid_address(), Ordering::Relaxed);
        hr.epoch.store(epoch, Ordering::Relaxed);
        hr.busy.store(0, Ordering::Relaxed);
        h
    }

    /// The first heap the calling thread (`tid`, thread pointer `tp`) may
    /// claim by the rules of the module docs, claimed.
    fn find_heap(&self, tid: u32, tp: usize, epoch: u32, by_tid: bool) -> Option<*mut Heap> {
        // Rule 1: our own thread pointer (our heap, or a dead thread's
        // whose stack we inherited), unless it was inside a slow path at a
        // fork, or another live thread holds it right now (a sweep or a
        // new thread proving that the dead thread's heap is unreached).
        let found = self.claim_where(|h, owner| {
            let stale = h.epoch.load(Ordering::Relaxed) != epoch;
            h.owner.tp.load(Ordering::Relaxed) == tp
                && !(stale && h.busy.load(Ordering::Relaxed) != 0)
                && (owner == 0 || owner == tid || stale || !sys::thread_alive(owner))
                && self.claim(h, owner, tid)
        });
        // Rule 2: nobody's.
        let found = found.or_else(|| {
            self.claim_where(|h, owner| {
                owner == 0 && h.owner.tp.load(Ordering::Relaxed) == 0 && self.claim(h, owner, tid)
            })
        });
        // Rule 3: a dead owner's; without `tls`, with the sweep's proof
        // that nobody reaches it.
        found.or_else(|| {
            self.claim_where(|h, owner| {
                owner != 0
                    && owner != tid
                    && h.epoch.load(Ordering::Relaxed) == epoch
                    && !sys::thread_alive(owner)
                    && if by_tid {
                        self.claim(h, owner, tid)
                    } else {
                        self.claim_unreached(h, owner, tid)
                    }
            })
        })
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
        hr.owner_ctid.store(sys::tid_address(), Ordering::Relaxed);
        hr.epoch.store(self.epoch(), Ordering::Relaxed);
    }

    /// The first heap that `take` claimed. `take` gets each heap with its
    /// owner as read once, and claims it from that owner (compare-and-swap
    /// of `owner_tid`), so that its tests and its claim see one value.
    fn claim_where(&self, mut take: impl FnMut(&Heap, u32) -> bool) -> Option<*mut Heap> {
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: registry heaps live as long as the instance.
            let hr = unsafe { &*h };
            if take(hr, hr.owner_tid.load(Ordering::Relaxed)) {
                return Some(h);
            }
            h = hr.next_heap;
        }
        None
    }

    fn new_heap(&self, tid: u32) -> Option<*mut Heap> {
        let size = core::mem::size_of::<Heap>().next_multiple_of(HEAP_ALIGN);
        let mem = loop {
            if let Some(m) = self.arena_bump(size) {
                break m;
            }
            self.grow_arena()?;
        };
        // SAFETY: `mem` is fresh arena memory of the right size and alignment.
        unsafe {
            mem.write(Heap::new(Some(NonNull::from(self as &dyn Source))));
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

    /// Carves `size` bytes of heap metadata from the arena's current
    /// chunk, if it has room.
    fn arena_bump(&self, size: usize) -> Option<*mut Heap> {
        let _g = self.store.lock();
        // SAFETY: lock held.
        let a = unsafe { &mut *self.arena.get() };
        if a.end - a.cur < size {
            return None;
        }
        let m = a.cur;
        a.cur += size;
        Some(m as *mut Heap)
    }

    /// Maps another metadata chunk and makes it the arena's current one.
    /// The mapping is charged and made without the store's lock: a refusal
    /// calls the limit hook, which may read statistics, and they take the
    /// lock. A chunk another thread added meanwhile keeps its unused rest.
    fn grow_arena(&self) -> Option<()> {
        self.store.commit(ARENA_CHUNK).ok()?;
        let Ok(chunk) = sys::mmap_anon(ARENA_CHUNK) else {
            self.store.decommit(ARENA_CHUNK);
            return None;
        };
        self.store.charge(ARENA_CHUNK);
        self.store
            .stats
            .meta
            .fetch_add(ARENA_CHUNK, Ordering::Relaxed);
        let _g = self.store.lock();
        // SAFETY: lock held.
        let a = unsafe { &mut *self.arena.get() };
        let c = chunk.as_ptr();
        // SAFETY: fresh chunk; its first word links the chunk list.
        unsafe { c.cast::<*mut u8>().write(a.chunks) };
        a.chunks = c;
        a.cur = c as usize + HEAP_ALIGN;
        a.end = c as usize + ARENA_CHUNK;
        Some(())
    }

    /// Number of heaps the instance has made.
    pub fn heap_count(&self) -> usize {
        self.heap_count.load(Ordering::Relaxed)
    }

    /// Calls `f` for every heap.
    pub fn for_each_heap(&self, mut f: impl FnMut(&Heap)) {
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: registry heaps live as long as the instance.
            let hr = unsafe { &*h };
            f(hr);
            h = hr.next_heap;
        }
    }

    /// The instance's part of a slow path's tick (see [`crate::purge`]):
    /// purges the store's idle cached segments and large spans, and now and
    /// then collects the heaps of exited threads.
    pub(crate) fn tick_instance(&self, now: u64) {
        self.store.tick(now);
        // Without this a program that stops using large blocks would keep
        // its warm spans until its next large allocation or free.
        crate::huge::maintain(&self.store, now);
        let next = self.next_collect.load(Ordering::Relaxed);
        let every =
            purge::COLLECT_INTERVAL_NS * (1 + self.heap_count() / HEAPS_PER_INTERVAL) as u64;
        if now >= next
            && self
                .next_collect
                .compare_exchange(next, now + every, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.collect_abandoned(self.tls.load(Ordering::Relaxed), now, false);
        }
        self.verify();
    }

    /// Collects every heap whose owner is gone (see the module docs).
    /// `tls`: owners are proven gone by thread id alone. One sweep at a
    /// time; with `wait` the caller waits for a running one to finish and
    /// then sweeps itself, else it leaves the work to the running one.
    pub(crate) fn collect_abandoned(&self, tls: bool, now: u64, wait: bool) {
        loop {
            let n = self.sweeps.load(Ordering::Relaxed);
            if n & 1 == 0
                && self
                    .sweeps
                    .compare_exchange(n, n + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // The odd count before the sweep's claims (as a seqlock's
                // writer).
                fence(Ordering::Release);
                break;
            }
            if !wait {
                return;
            }
            sys::sched_yield();
        }
        let me = sys::gettid();
        let my_tp = thread::thread_pointer();
        let epoch = self.epoch();
        let mut h = self.heaps.load(Ordering::Acquire);
        while !h.is_null() {
            // SAFETY: registry heaps live as long as the instance.
            let hr = unsafe { &*h };
            let owner = hr.owner_tid.load(Ordering::Relaxed);
            let tp = hr.owner.tp.load(Ordering::Relaxed);
            let candidate = hr.has_work()
                && owner != me
                && tp != my_tp
                && if owner == 0 {
                    tp == 0
                } else {
                    // A heap from before a fork is left to rule 1.
                    hr.epoch.load(Ordering::Relaxed) == epoch && !sys::thread_alive(owner)
                };
            if candidate {
                // SAFETY: `h` is on the registry.
                unsafe { self.collect_one(h, owner, me, tls, now) };
            }
            h = hr.next_heap;
        }
        self.sweeps.fetch_add(1, Ordering::Release);
    }

    /// Claims heap `h` from `owner` (0 or an exited thread), collects it
    /// and leaves it unowned; without `tls` only if no live thread can be
    /// using it (see the module docs).
    ///
    /// # Safety
    /// `h` is a heap on this instance's registry.
    unsafe fn collect_one(&self, h: *mut Heap, owner: u32, me: u32, tls: bool, now: u64) {
        // SAFETY: per contract; registry heaps live as long as the instance.
        let hr = unsafe { &*h };
        let claimed = if !tls && owner != 0 {
            self.claim_unreached(hr, owner, me)
        } else {
            self.claim(hr, owner, me)
        };
        if !claimed {
            return;
        }
        // SAFETY: we claimed the heap and no other thread can reach it.
        unsafe { Heap::collect(h, now) };
        hr.owner.tp.store(0, Ordering::Relaxed);
        hr.owner_ctid.store(0, Ordering::Relaxed);
        // Unowned now; the compare-and-swap keeps this from undoing a
        // claim nobody else can make while we hold it.
        let _ = hr
            .owner_tid
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
    }

    /// Without `tls`: claims `hr` from `owner`, a thread that has exited,
    /// if no live thread can reach it through the thread-pointer table
    /// (see the module docs). True: claimed and hidden from the table
    /// (`owner.tp` cleared); or, when the caller itself lives on the dead
    /// thread's control block, claimed as rule 1 would. False if another
    /// thread holds the heap, or a live thread has its thread pointer; that
    /// thread, when known, is then recorded as the owner.
    fn claim_unreached(&self, hr: &Heap, owner: u32, me: u32) -> bool {
        // A first look, without a claim. While another thread hides the
        // heap for this same proof, `owner.tp` is 0 and says nothing:
        // the heap is left to that thread.
        let tp = hr.owner.tp.load(Ordering::Relaxed);
        if tp == 0 {
            return false;
        }
        if let Some(t) = occupant(tp, hr.owner_ctid.load(Ordering::Relaxed)) {
            if t == me {
                // Our own stack's heap, hidden from our rule 1 a moment ago.
                return self.claim(hr, owner, me);
            }
            // A new thread inherited the heap with the stack: record it as
            // the owner, so that its own exit is noticed.
            if t != 0 && t != owner && sys::thread_alive(t) {
                let _ =
                    hr.owner_tid
                        .compare_exchange(owner, t, Ordering::Relaxed, Ordering::Relaxed);
            }
            return false;
        }
        if !self.claim(hr, owner, me) {
            return false;
        }
        // Read again under the claim: its Acquire pairs with the Release
        // of a proof given up (below), so this is the thread pointer that
        // proof put back, not one read while the heap was hidden.
        let tp = hr.owner.tp.load(Ordering::Relaxed);
        let ctid = hr.owner_ctid.load(Ordering::Relaxed);
        // Hide the heap from the fast path, then look again: a thread that
        // found it before is alive and visible now.
        hr.owner.tp.store(0, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if occupant(tp, ctid).is_some() {
            hr.owner.tp.store(tp, Ordering::Relaxed);
            let _ = hr
                .owner_tid
                .compare_exchange(me, owner, Ordering::Release, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn claim(&self, hr: &Heap, owner: u32, me: u32) -> bool {
        hr.owner_tid
            .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives back to the kernel what the calling thread's heap and the
    /// instance's caches hold without live blocks, and collects the heaps
    /// of threads that have exited (see the module docs for which).
    ///
    /// # Safety
    /// `h` is the calling thread's heap (or the empty heap).
    pub unsafe fn trim(&self, h: *mut Heap, tls: bool) {
        self.enter();
        if tls {
            self.tls.store(true, Ordering::Relaxed);
        }
        let own = !Heap::is_empty_heap(h);
        if own {
            // Sends what we hold of other heaps (exited threads' among
            // them, before their collection below) and takes our inbox.
            // SAFETY: per contract.
            unsafe { Heap::trim(h) };
        }
        self.collect_abandoned(tls, self.store.clock.now(), true);
        // SAFETY: per contract `h` is ours.
        if own && unsafe { (*h).has_inbox() } {
            // What the exited threads' heaps still held of ours.
            // SAFETY: per contract.
            unsafe { Heap::trim(h) };
        }
        self.store.drain_caches();
    }
}

/// The thread that has thread pointer `tp` now, if any: `Some(tid)` (0 if
/// its tid is unknown) or `None` when provably nobody (see the module
/// docs). `ctid` is the `clear_child_tid` address the heap's owner had.
fn occupant(tp: usize, ctid: usize) -> Option<u32> {
    if tp == 0 {
        return None;
    }
    if ctid != 0 && ctid.wrapping_sub(tp) < sys::PAGE_SIZE {
        let mut w = [0u8; 4];
        if sys::read_own_memory(ctid, &mut w).is_ok() {
            // The kernel writes 0 at exit; glibc writes -1 once the thread
            // is joined (glibc before 2.25 also negated a live thread's tid
            // in a `vfork` child, while the thread itself was suspended).
            let tid = i32::from_ne_bytes(w);
            return (tid > 0).then_some(tid as u32);
        }
    }
    let mut w = [0u8; 8];
    match sys::read_own_memory(tp, &mut w) {
        Err(sys::Errno::EFAULT) => None,
        _ => Some(0),
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    extern crate std;
    use super::*;
    use std::time::Duration;

    /// A thread that finds every heap held by a sweep waits for the sweep
    /// and takes the heap it leaves, rather than make a heap of its own
    /// (which stayed: a program whose threads come and go kept one heap's
    /// memory more than it needed, once a sweep met a thread's start).
    #[test]
    fn a_new_thread_waits_for_a_sweep_rather_than_make_a_heap() {
        static ST: InstanceState = InstanceState::new();
        // This thread's heap, then held as a sweep holds a dead thread's.
        let h = ST.acquire_heap(true);
        assert!(!h.is_null());
        ST.sweeps.fetch_add(1, Ordering::AcqRel);
        let t = std::thread::spawn(|| ST.acquire_heap(true) as usize);
        std::thread::sleep(Duration::from_millis(5));
        // The sweep leaves the heap unowned, and ends.
        // SAFETY: a heap of the registry.
        let hr = unsafe { &*h };
        hr.owner.tp.store(0, Ordering::Relaxed);
        hr.owner_ctid.store(0, Ordering::Relaxed);
        hr.owner_tid.store(0, Ordering::Release);
        ST.sweeps.fetch_add(1, Ordering::AcqRel);
        assert_eq!(t.join().unwrap(), h as usize, "a new heap was made");
        assert_eq!(ST.heap_count.load(Ordering::Relaxed), 1);
    }

    /// Without `tls`, a thread that needs a heap takes the heap of a
    /// thread that exited at once (rule 3), without waiting for a sweep to
    /// collect it, and only if nobody lives on the dead thread's control
    /// block. (Before, a C server whose threads replace themselves made
    /// 20–31 heaps in 12 runs, the `tls` build 17–26.) The control block
    /// is a buffer of ours, so that no other test's thread can take the
    /// dead thread's cached stack meanwhile; each claim is made by a new
    /// thread.
    #[test]
    fn a_heap_of_an_exited_thread_is_taken_at_once_without_tls() {
        static ST: InstanceState = InstanceState::new();
        let acquire = || {
            let h = std::thread::spawn(|| ST.acquire_heap(false) as usize);
            h.join().unwrap() as *mut Heap
        };
        let count = || ST.heap_count.load(Ordering::Relaxed);
        let dead = std::thread::spawn(sys::gettid).join().unwrap();
        // `join` returns once the kernel cleared the thread's tid word,
        // a moment before the thread id itself is gone.
        while sys::thread_alive(dead) {
            std::thread::yield_now();
        }
        let main = sys::gettid();
        // The control block; its word 2 plays the kernel's tid word.
        let mut block = std::boxed::Box::new([0u32; 16]);
        let tp = block.as_mut_ptr() as usize;
        let word = tp + 8;
        let set_word = move |tid: u32| {
            // SAFETY: a word of `block`, which is dropped only at the end
            // of the test, after every thread that writes it was joined,
            // and is reached only through this address.
            unsafe { (word as *mut u32).write_volatile(tid) }
        };
        let hr = |h: *mut Heap| {
            // SAFETY: heaps of the registry live as long as the instance.
            unsafe { &*h }
        };
        let leave = |h: *mut Heap, tp: usize| {
            hr(h).owner.tp.store(tp, Ordering::Relaxed);
            hr(h).owner_ctid.store(word, Ordering::Relaxed);
            hr(h).owner_tid.store(dead, Ordering::Release);
        };
        // Held by this thread, which is alive: out of every rule.
        let park = |h: *mut Heap| {
            hr(h).owner.tp.store(0, Ordering::Relaxed);
            hr(h).owner_tid.store(main, Ordering::Release);
        };
        let h = acquire();
        assert!(!h.is_null());

        // Nobody on the control block: taken.
        leave(h, tp);
        assert_eq!(acquire(), h, "the exited thread's heap was not taken");
        assert_eq!(count(), 1);

        // Hidden (another thread is proving it): its thread pointer says
        // nothing, so it is left alone, whatever the tid word says.
        leave(h, 0);
        set_word(main);
        let other = acquire();
        assert!(!other.is_null() && other != h, "a hidden heap was taken");
        assert_eq!(count(), 2);
        park(other);

        // A live thread on the control block: left to it, and recorded
        // as its owner.
        leave(h, tp);
        let other = acquire();
        assert!(
            !other.is_null() && other != h,
            "an inherited heap was taken"
        );
        assert_eq!(count(), 3);
        park(other);
        assert_eq!(hr(h).owner.tp.load(Ordering::Relaxed), tp);
        assert_eq!(hr(h).owner_tid.load(Ordering::Relaxed), main);

        // The claiming thread itself on the control block: it takes its
        // own stack's heap, as rule 1 would, rather than make one.
        leave(h, tp);
        let got = std::thread::spawn(move || {
            set_word(sys::gettid());
            ST.acquire_heap(false) as usize
        });
        assert_eq!(got.join().unwrap() as *mut Heap, h);
        assert_eq!(count(), 3);
    }
}
