//! Remote frees: blocks a thread frees into another thread's heap.
//!
//! The freeing thread gathers consecutive frees to the same owner into a
//! batch in its own heap and splices the batch onto the owner's `remote`
//! inbox with one CAS; the owner takes the whole inbox with one swap on its
//! slow path and frees each block locally. No lock anywhere.

use super::*;

impl Heap {
    /// Sends block `p` to heap `owner` from another thread. The calling
    /// thread's heap `me` gathers consecutive frees to the same owner into
    /// a batch, handed over with one CAS per [`REMOTE_BATCH`] blocks (or
    /// when the owner changes, or on `me`'s next slow path): a consumer that
    /// frees what a producer allocates no longer fights over the producer's
    /// inbox once per block.
    ///
    /// # Safety
    /// `p` is a live block of a page of `owner`, no longer used by the
    /// caller; `me` is the calling thread's heap (or the empty heap).
    #[inline]
    pub unsafe fn free_remote(me: *mut Heap, owner: *mut Heap, p: *mut u8) {
        // SAFETY: heaps outlive their blocks.
        let keys = unsafe { (*owner).keys };
        // SAFETY: per contract `p` is a block of `owner`.
        unsafe { Heap::check_remote(owner, p, keys) };
        let b = p.cast::<Block>();
        // SAFETY: `me` is ours (the empty heap is never written: its batch
        // destination is null and it takes the direct path).
        unsafe {
            let m = &mut *me;
            if m.batch_dest == owner && m.batch_len < REMOTE_BATCH {
                Block::set_next(b, m.batch_head, keys);
                m.batch_head = b;
                m.batch_len += 1;
                return;
            }
            Heap::free_remote_slow(me, owner, b);
        }
    }

    /// Flushes the current batch and starts one for `owner` with `b`, or,
    /// without a heap of our own, pushes `b` directly.
    ///
    /// # Safety
    /// As for [`Heap::free_remote`].
    #[cold]
    pub(super) unsafe fn free_remote_slow(me: *mut Heap, owner: *mut Heap, b: *mut Block) {
        // SAFETY: as in `free_remote`.
        unsafe {
            if Heap::is_empty_heap(me) {
                return Heap::push_remote(owner, b, b);
            }
            // Busy: a fork between publishing the old batch and starting the
            // new one must not leave a heap that looks reusable in the child
            // and would publish the old batch again.
            (*me).set_busy(true);
            Heap::flush_remote(me);
            let m = &mut *me;
            Block::set_next(b, ptr::null_mut(), (*owner).keys);
            m.batch_dest = owner;
            m.batch_head = b;
            m.batch_tail = b;
            m.batch_len = 1;
            (*me).set_busy(false);
        }
    }

    /// Hands the batch of remote frees gathered by `h` to its owner.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap).
    pub unsafe fn flush_remote(h: *mut Heap) {
        // SAFETY: per contract.
        unsafe {
            let m = &mut *h;
            if m.batch_len != 0 {
                Heap::push_remote(m.batch_dest, m.batch_head, m.batch_tail);
                m.batch_dest = ptr::null_mut();
                m.batch_len = 0;
            }
        }
    }

    /// Splices the chain `first ..= last` (linked with `owner`'s keys) onto
    /// `owner`'s inbox with one CAS.
    ///
    /// # Safety
    /// The chain consists of blocks of `owner` that the caller gave up.
    pub(super) unsafe fn push_remote(owner: *mut Heap, first: *mut Block, last: *mut Block) {
        // SAFETY: heaps outlive their blocks; the chain is ours until the
        // CAS publishes it.
        unsafe {
            let (head, keys) = (&(*owner).remote, (*owner).keys);
            let mut old = head.load(Ordering::Relaxed);
            loop {
                Block::set_next(last, old, keys);
                match head.compare_exchange_weak(old, first, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(cur) => old = cur,
                }
            }
        }
    }

    /// With `hardened`: a block whose first word is already a plausible
    /// remote link of `owner` is being freed twice.
    ///
    /// # Safety
    /// `p` is claimed to be a live block of `owner`.
    #[inline(always)]
    pub(super) unsafe fn check_remote(owner: *mut Heap, p: *mut u8, keys: Keys) {
        // SAFETY: per the caller's contract.
        unsafe {
            harden::check_remote_free(p, keys, |link| {
                // SAFETY: the instance's map answers without touching `link`.
                let inst = &*(*owner).instance;
                inst.store.segmap.get(segment_of(link as *mut u8) as usize)
                    == crate::segmap::Chunk::Header
                    && owner_of(segment_of(link as *mut u8)) == owner
            })
        };
    }

    /// Frees every block other threads sent us.
    ///
    /// # Safety
    /// The calling thread owns `h`.
    pub unsafe fn drain_remote(h: *mut Heap) {
        // SAFETY: per contract; blocks on `remote` are blocks of our pages.
        unsafe {
            let mut b = (*h).remote.swap(ptr::null_mut(), Ordering::Acquire);
            let keys = (*h).keys;
            let mut n = 0;
            while !b.is_null() {
                let next = Block::next(b, keys);
                if harden::ENABLED {
                    // The link word holds a remote link; a plain zero keeps
                    // the double-free check from mistaking it for a page link.
                    b.cast::<usize>().write(0);
                }
                let p = b.cast::<u8>();
                Heap::free_local_any(h, Segment::page_of(segment_of(p).cast(), p), p);
                b = next;
                n += 1;
            }
            bump(&(*h).stats.remote_frees, n);
        }
    }
}
