//! Teardown: unmapping everything an instance holds, on request.

use super::{Arena, InstanceState, ARENA_CHUNK};
use crate::heap::Heap;
use crate::sys;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

impl InstanceState {
    /// Unmaps every segment and huge block (and the caches), and returns
    /// the instance to its initial state. Heap metadata (64 KiB mappings of
    /// 8 heaps each) stays, emptied but still owned: a thread whose slot
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
        self.tp_table.clear();
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
