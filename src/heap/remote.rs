//! Remote frees: blocks a thread frees into another thread's heap.
//!
//! The freeing thread does the per-block work, while the blocks are hot in
//! its cache: it links consecutive frees into the same page into a *chain*
//! (a few chains pending at once, one per page, in a small table of its own
//! heap), with the page's own free-list links, exactly as they will lie on
//! the page's `local_free`. A full chain, or one displaced from its table
//! slot, is sent to the owner as one message: its oldest block, which
//! carries the inbox link and a packed word with the chain's newest block
//! and length. The others go out on the freeing thread's slow path once
//! they hold [`HELD_MAX`] bytes, or once a tick (about 0.3 ms; see
//! `Heap::tick`).
//! Messages to one owner are gathered into an outgoing batch (one per
//! recent owner, [`OUT_SLOTS`] at once), pushed onto the owner's `remote`
//! inbox with one CAS. When the batch's first message has room past its
//! two words, the others are written into it as entries; else they are
//! linked.
//!
//! The owner takes its whole inbox with one swap on its slow path and, per
//! message, splices the chain onto the page's `local_free` and subtracts
//! its length from `used`: no walk of the chain. Linked messages cost a
//! cache miss each that waits for the one before (the link is in the
//! block the other core just wrote); a message's entries are read one
//! after another, their misses overlapping: in larson, whose remote frees
//! hit scattered pages (one message per block or two), that made the
//! owner's inbox walk most of its slow path. No lock anywhere.
//!
//! ```text
//!   freeing thread's heap                 owner's inbox (`remote`)
//!   pending[slot(page)]:                  msg ──▶ msg ──▶ null
//!     newest ─▶ b ─▶ … ─▶ oldest           │
//!                          │               ▼ oldest block of a chain:
//!                          └── sent as ──▶ [inbox link | newest, count,
//!                                           entries | (msg, packed) …]
//! ```

use super::*;

/// Chains pending at once in a heap (a power of two). A producer's current
/// pages of different classes usually share a segment and take distinct
/// slices, which this many slots keep apart (see `slot_of`), so a
/// consumer's chains are rarely displaced before they are full.
pub const PENDING_SLOTS: usize = 32;
const _: () = assert!(PENDING_SLOTS.is_power_of_two() && PENDING_SLOTS <= 32); // `pending_mask` is a u32

/// A packed word's chain length.
const COUNT_MASK: usize = 0xffff;
/// Where a packed word counts the entries after it.
const ENTRIES_SHIFT: u32 = 16;
const _: () = assert!(CHAIN_MAX as usize <= COUNT_MASK && OUT_MAX < 1 << 15);

/// Blocks a chain gathers before it is sent: the owner gets its blocks
/// back at least this often, and the sender holds at most
/// `PENDING_SLOTS * CHAIN_MAX` blocks of other heaps.
pub const CHAIN_MAX: u32 = 32;

/// Bytes of other heaps' blocks a heap may hold (freed since it last sent
/// its chains and batches) before its next slow path sends them all; else
/// they go out once a tick (see `Heap::tick`).
pub const HELD_MAX: usize = 64 << 10;

/// Messages a heap gathers into one outgoing batch before one CAS.
pub const OUT_MAX: u32 = 32;

/// Outgoing batches a heap keeps at once (a power of two), one per
/// destination: a thread whose remote frees go to several owners in turn
/// still fills its batches.
pub const OUT_SLOTS: usize = 4;
const _: () = assert!(OUT_SLOTS.is_power_of_two() && OUT_SLOTS <= 32); // `out_mask` is a u32

/// An outgoing batch of messages to one heap, not yet pushed.
#[derive(Clone, Copy)]
pub struct Outgoing {
    /// The heap it goes to (null: none).
    dest: *mut Heap,
    /// The batch's first message, if its block has room for entries past
    /// its two words: the others are written into it, as (message, packed
    /// word) pairs. Null: the messages are linked instead.
    array: *mut usize,
    /// Entries the array has room for.
    cap: u32,
    /// The newest linked message.
    first: *mut Block,
    /// The oldest linked message (where the owner's inbox is spliced on).
    last: *mut Block,
    /// Messages in the batch (linked), or entries in the array.
    len: u32,
}

impl Outgoing {
    /// No batch.
    pub const EMPTY: Outgoing = Outgoing {
        dest: ptr::null_mut(),
        array: ptr::null_mut(),
        cap: 0,
        first: ptr::null_mut(),
        last: ptr::null_mut(),
        len: 0,
    };
}

/// The outgoing slot of batches to heap `h`.
#[inline(always)]
fn out_slot(h: *mut Heap) -> usize {
    let a = h as usize;
    ((a >> 12) ^ (a >> 16)) & (OUT_SLOTS - 1)
}

/// A chain of remote frees into one page, not yet sent.
#[derive(Clone, Copy)]
pub struct Pending {
    /// The page (its head entry); null for an empty slot.
    page: *mut Page,
    /// Newest block; linked to older ones with the page's keys.
    newest: *mut Block,
    /// Oldest block: the message when the chain is sent.
    oldest: *mut Block,
    /// Blocks in the chain.
    count: u32,
}

impl Pending {
    /// An empty slot.
    pub const EMPTY: Pending = Pending {
        page: ptr::null_mut(),
        newest: ptr::null_mut(),
        oldest: ptr::null_mut(),
        count: 0,
    };
}

/// The table slot of `page`'s chain: slice bits and segment bits mixed, so
/// neighbouring pages and equal slices of different segments spread.
#[inline(always)]
fn slot_of(page: *mut Page) -> usize {
    let a = page as usize;
    ((a >> crate::segment::ENTRY_SHIFT) ^ (a >> crate::segment::SEGMENT_SHIFT))
        & (PENDING_SLOTS - 1)
}

/// A message's second word: the chain's newest block as an offset in its
/// segment (high half), and the chain's length (low 16 bits). Bits 16 to
/// 31 count the entries that follow in the message's block (see
/// [`Outgoing::array`]).
#[inline(always)]
fn pack(newest: *mut Block, count: u32) -> usize {
    let off = newest as usize & (crate::segment::SEGMENT_SIZE - 1);
    (off << 32) | count as usize
}

/// Sets (`on`) or clears bit `i` of one of a heap's masks of pending
/// chains and outgoing batches: only the owner writes them, so a load and
/// a store (other threads only read them).
#[inline(always)]
pub(super) fn set_bit(mask: &AtomicU32, i: usize, on: bool) {
    let m = mask.load(Ordering::Relaxed);
    mask.store(
        if on { m | 1 << i } else { m & !(1 << i) },
        Ordering::Relaxed,
    );
}

impl Heap {
    /// Whether the heap holds remote frees not sent yet: chains, outgoing
    /// batches or blocks on foreign pages.
    #[inline]
    pub fn holds_remote(&self) -> bool {
        self.pending_mask.load(Ordering::Relaxed)
            | self.out_mask.load(Ordering::Relaxed)
            | self.foreign_mask.load(Ordering::Relaxed)
            != 0
    }

    /// Frees block `p` of heap `owner` from another thread: keeps it on
    /// the calling thread's foreign page of its class (see `foreign`), or
    /// sends it to `owner` through the thread's pending chain for `p`'s
    /// page.
    ///
    /// # Safety
    /// `p` is a live block of a page of `owner`, no longer used by the
    /// caller; `me` is the calling thread's heap (or the empty heap).
    #[inline]
    pub unsafe fn free_remote(me: *mut Heap, owner: *mut Heap, p: *mut u8) {
        // SAFETY: per contract the page is live (its blocks are counted in
        // `used` until the owner takes them back, so it stays set up), and
        // its keys and block size do not change while it is.
        unsafe {
            let page = Segment::page_of(segment_of(p).cast(), p);
            if !Heap::keep_foreign(me, page, p.cast()) {
                Heap::free_remote_pending(me, owner, page, p.cast());
            }
        }
    }

    /// Sends block `b` of `page` to heap `owner` from another thread: adds
    /// it to the calling thread's pending chain for the page, or starts
    /// one.
    ///
    /// Its work when the chain exists: the slot, the link, two stores and
    /// the count.
    ///
    /// # Safety
    /// As for [`Heap::free_remote`]; `b` is a block of `page`.
    #[inline]
    pub(super) unsafe fn free_remote_pending(
        me: *mut Heap,
        owner: *mut Heap,
        page: *mut Page,
        b: *mut Block,
    ) {
        // SAFETY: as in `free_remote`.
        unsafe {
            let keys = (*page).keys;
            // (With `hardened` the free that checked the block against the
            // live-block bitmap also junk-filled it.)
            // `me` is ours; the empty heap's slots are all empty, so it
            // never gets past the test and is never written (raw place
            // accesses: no reference to a shared static is formed).
            let slot = ptr::addr_of_mut!((*me).pending)
                .cast::<Pending>()
                .add(slot_of(page));
            if (*slot).page == page && (*slot).count < CHAIN_MAX {
                Block::set_next(b, (*slot).newest, keys);
                (*slot).newest = b;
                (*slot).count += 1;
                (*me).held += (*page).block_size as usize;
                return;
            }
            Heap::free_remote_slow(me, owner, page, b);
        }
    }

    /// Sends the chain in `page`'s slot (if any) and starts a new one with
    /// `b`, or, without a heap of our own, sends `b` alone.
    ///
    /// # Safety
    /// As for [`Heap::free_remote`]; `page` is `b`'s page.
    #[cold]
    unsafe fn free_remote_slow(me: *mut Heap, owner: *mut Heap, page: *mut Page, b: *mut Block) {
        // SAFETY: as in `free_remote`.
        unsafe {
            Block::set_next(b, ptr::null_mut(), (*page).keys);
            if Heap::is_empty_heap(me) {
                return Heap::send(owner, b, b, 1);
            }
            // Busy: a fork between sending the old chain and starting the
            // new one must not leave a heap that looks reusable in the
            // child and would send the old chain again.
            (*me).set_busy(true);
            (*me).held += (*page).block_size as usize;
            let i = slot_of(page);
            Heap::send_slot(me, i);
            *(*me).pending.get_unchecked_mut(i) = Pending {
                page,
                newest: b,
                oldest: b,
                count: 1,
            };
            set_bit(&(*me).pending_mask, i, true);
            (*me).set_busy(false);
        }
    }

    /// Sends every chain pending in `h` and pushes its outgoing batch.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap).
    pub unsafe fn flush_remote(h: *mut Heap) {
        // SAFETY: per contract (the empty heap's mask is 0).
        unsafe {
            // (Never written in the empty heap, a static all threads share.)
            if (*h).held != 0 {
                (*h).held = 0;
            }
            let mut mask = (*h).pending_mask.load(Ordering::Relaxed);
            while mask != 0 {
                Heap::send_slot(h, mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
            let mut mask = (*h).out_mask.load(Ordering::Relaxed);
            while mask != 0 {
                Heap::flush_out(h, mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
    }

    /// Sends the chain in slot `i` of `h`, if any, and empties the slot.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap).
    unsafe fn send_slot(h: *mut Heap, i: usize) {
        // SAFETY: per contract; a pending chain's page is live (see
        // `free_remote`), so its segment's owner is the chain's owner.
        unsafe {
            let s = *(*h).pending.get_unchecked(i);
            if s.count == 0 {
                return;
            }
            let owner = Heap::of(owner_of(segment_of(s.oldest.cast())));
            Heap::post(h, owner, s.page, s.newest, s.oldest, s.count);
            *(*h).pending.get_unchecked_mut(i) = Pending::EMPTY;
            set_bit(&(*h).pending_mask, i, false);
        }
    }

    /// Sends the chain `newest ..= oldest` of `count` blocks of one page
    /// of `owner` alone, with `oldest` as the message.
    ///
    /// # Safety
    /// The chain is linked with its page's keys and consists of blocks of
    /// `owner` that the caller gave up.
    unsafe fn send(owner: *mut Heap, newest: *mut Block, oldest: *mut Block, count: u32) {
        // SAFETY: per contract; blocks are at least two words.
        unsafe {
            oldest.cast::<usize>().add(1).write(pack(newest, count));
            Heap::push(owner, oldest, oldest);
        }
    }

    /// Sends a chain as [`Heap::send`] does, but through `h`'s outgoing
    /// batch for `owner`: up to [`OUT_MAX`] messages to one owner go with
    /// one CAS (programs whose remote frees hit scattered pages make
    /// one-block chains, and would otherwise pay a CAS on the owner's inbox
    /// line per block). When the batch's first message has room, the others
    /// are written into its block, so the owner reads them one after
    /// another instead of following links from block to block (each link a
    /// cache miss that waits for the one before).
    ///
    /// # Safety
    /// As for [`Heap::send`]; the calling thread owns `h`, a real heap;
    /// `page` is the chain's page.
    unsafe fn post(
        h: *mut Heap,
        owner: *mut Heap,
        page: *mut Page,
        newest: *mut Block,
        oldest: *mut Block,
        n: u32,
    ) {
        // SAFETY: per contract; an array is the first message's block, free
        // and ours until pushed, with room for `cap` entries.
        unsafe {
            let packed = pack(newest, n);
            let i = out_slot(owner);
            let o = ptr::addr_of_mut!((*h).out).cast::<Outgoing>().add(i);
            if (*o).dest == owner {
                if !(*o).array.is_null() && (*o).len < (*o).cap {
                    let e = (*o).array.add(2 * (1 + (*o).len as usize));
                    e.write(oldest as usize);
                    e.add(1).write(packed);
                    (*o).len += 1;
                    return;
                }
                if (*o).array.is_null() && (*o).len < OUT_MAX {
                    oldest.cast::<usize>().add(1).write(packed);
                    Block::set_next(oldest, (*o).first, (*owner).keys);
                    (*o).first = oldest;
                    (*o).len += 1;
                    return;
                }
            }
            Heap::flush_out(h, i);
            set_bit(&(*h).out_mask, i, true);
            oldest.cast::<usize>().add(1).write(packed);
            let room = ((*page).block_size as usize / 16).saturating_sub(1);
            let cap = if crate::keys::ENABLED {
                // The owner would have to junk-fill the entries again.
                0
            } else {
                room.min(OUT_MAX as usize) as u32
            };
            *o = if cap > 0 {
                Outgoing {
                    dest: owner,
                    array: oldest.cast(),
                    cap,
                    ..Outgoing::EMPTY
                }
            } else {
                Block::set_next(oldest, ptr::null_mut(), (*owner).keys);
                Outgoing {
                    dest: owner,
                    first: oldest,
                    last: oldest,
                    len: 1,
                    ..Outgoing::EMPTY
                }
            };
        }
    }

    /// Pushes `h`'s outgoing batch in slot `i`, if any.
    ///
    /// # Safety
    /// The calling thread owns `h` (or `h` is the empty heap, whose batches
    /// are empty); `i < OUT_SLOTS`.
    unsafe fn flush_out(h: *mut Heap, i: usize) {
        // SAFETY: per contract.
        unsafe {
            let o = ptr::addr_of_mut!((*h).out).cast::<Outgoing>().add(i);
            let b = *o;
            if b.dest.is_null() {
                return;
            }
            if b.array.is_null() {
                Heap::push(b.dest, b.first, b.last);
            } else {
                let w = b.array.add(1);
                w.write(w.read() | (b.len as usize) << ENTRIES_SHIFT);
                Heap::push(b.dest, b.array.cast(), b.array.cast());
            }
            *o = Outgoing::EMPTY;
            set_bit(&(*h).out_mask, i, false);
        }
    }

    /// Splices the messages `first ..= last` (linked with `owner`'s keys)
    /// onto `owner`'s inbox with one CAS.
    ///
    /// # Safety
    /// The messages are chains of blocks of `owner` that the caller gave
    /// up.
    unsafe fn push(owner: *mut Heap, first: *mut Block, last: *mut Block) {
        // SAFETY: heaps outlive their blocks; the messages are ours until
        // the CAS publishes them.
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

    /// Takes back every chain other threads sent us: per message, splices
    /// the chain onto its page's `local_free`. The messages a message's
    /// block carries as entries are read one after another (their misses
    /// overlap: none waits for the one before).
    ///
    /// # Safety
    /// The calling thread owns `h`.
    #[inline]
    pub unsafe fn drain_remote(h: *mut Heap) {
        // A load first: most slow paths find the inbox empty, and a swap
        // would take the line exclusive for nothing. The loop is out of
        // line, so a slow path that finds nothing saves no registers.
        // SAFETY: per contract.
        unsafe {
            if !(*h).remote.load(Ordering::Relaxed).is_null() {
                Heap::drain_remote_now(h);
            }
        }
    }

    /// [`Heap::drain_remote`] once the inbox was seen non-empty.
    ///
    /// # Safety
    /// As for [`Heap::drain_remote`].
    #[inline(never)]
    unsafe fn drain_remote_now(h: *mut Heap) {
        // SAFETY: per contract; messages on `remote` are blocks of our
        // pages, each the oldest of a chain of its page, and so are the
        // entries they carry.
        unsafe {
            let mut m = (*h).remote.swap(ptr::null_mut(), Ordering::Acquire);
            let keys = (*h).keys;
            let mut n = 0;
            while !m.is_null() {
                let next = Block::next(m, keys);
                let packed = m.cast::<usize>().add(1).read();
                // The entries first: splicing `m` overwrites its link.
                let entries = (packed as u32 >> ENTRIES_SHIFT) as usize;
                for i in 1..=entries {
                    let e = m.cast::<usize>().add(2 * i);
                    n += Heap::splice(h, e.read() as *mut Block, e.add(1).read());
                }
                n += Heap::splice(h, m, packed);
                m = next;
            }
            bump(&(*h).stats.remote_frees, n);
        }
    }

    /// Splices the chain of message `m` (with packed word `packed`) onto
    /// its page's `local_free`; returns the chain's length.
    ///
    /// # Safety
    /// The calling thread owns `h`; `m` is a message sent to `h`: the
    /// oldest block of a chain of one of its pages.
    #[inline(always)]
    unsafe fn splice(h: *mut Heap, m: *mut Block, packed: usize) -> usize {
        // SAFETY: per contract.
        unsafe {
            let seg = segment_of(m.cast()).cast::<Segment>();
            let newest = seg.cast::<u8>().add(packed >> 32).cast::<Block>();
            let count = (packed & COUNT_MASK) as u32;
            let page = Segment::page_of(seg.cast(), m.cast());
            Block::set_next(m, (*page).local_free, (*page).keys);
            // The packed word overwrote some of the junk.
            checks::reseal_message(m.cast());
            (*page).local_free = newest;
            (*page).used -= count;
            if (*page).used == 0 || !(*page).in_queue() {
                Heap::free_local_slow(h, page);
            }
            count as usize
        }
    }
}
