//! Growing a huge block without copying it and without faulting in fresh
//! pages where memory the program just freed is at hand.
//!
//! `mremap` grows a block in place or moves it, but its new tail is fresh
//! memory, faulted in page by page as the program writes it; and it
//! cannot resize a block whose mapping became several kernel mappings
//! (after a move onto part of another one). Here the block instead
//! *exchanges* its pages with the front of another span of at least the
//! new length ([`os::exchange_fronts`]): the block's data moves there (no
//! copy), and that span's front pages move to where the block was, which
//! becomes a cached span of its own. Taken from the span cache, the span's
//! tail is warm memory: a `Vec` that grows to tens of MiB again and again
//! reuses its last round's pages.

use super::cache::{cut, nonnull, put_locked, write_free_header};
use super::HugeHeader;
use crate::keys;
use crate::os::{self, Exchange};
use crate::store::{SegmentStore, Span};
use core::sync::atomic::Ordering;

/// Where [`grow`] may take the span the block moves into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Donor {
    /// Only a cached span warm past the block's length: worth it before
    /// trying `mremap`, since the new tail needs no faults.
    Warm,
    /// Any cached span, else a fresh mapping: when `mremap` could not grow
    /// the block, this still saves the copy.
    Any,
}

/// Grows live huge block `h` to a mapping of at least `need` bytes by
/// exchanging its pages with the front of a span taken as `donor` says.
/// Returns the moved block; `None`, with the block unchanged, when there is
/// no such span or the kernel refuses (the caller grows it otherwise).
///
/// # Safety
/// `h` is the header of a live huge block of this store owned by the
/// caller, aligned to at most a segment, whose mapping is shorter than
/// `need` (whole chunks).
pub(super) unsafe fn grow(
    store: &SegmentStore,
    h: *mut HugeHeader,
    need: usize,
    donor: Donor,
) -> Option<*mut u8> {
    if keys::ENABLED {
        // The guard page and the quarantine rule out moving pages around.
        return None;
    }
    let old = h as usize;
    // SAFETY: per contract.
    let (m, instance) = unsafe { ((*h).map_len, (*h).header.instance) };
    let s = take(store, need, m, donor, instance)?;
    // Afterwards the block is `s.len` bytes and the span at `old` is `m`,
    // all counted committed: `s.len - s.committed` more than before.
    if store.commit(s.len - s.committed).is_err() {
        super::cache::cache_span(store, s, true);
        return None;
    }
    let g = store.lock();
    // SAFETY: the block is the caller's, the span out of the cache, both
    // ours; the lock keeps `for_each_mapping` from reading either header
    // meanwhile.
    let done = unsafe { os::exchange_fronts(nonnull(old), nonnull(s.base), m) };
    // SAFETY: lock held; what `done` says of the block and the span.
    let evicted = unsafe { settle(store, done, h, s) };
    drop(g);
    if let Some(v) = evicted {
        store.release_span(v);
    }
    let moved = matches!(done, Exchange::Done | Exchange::AEmptied);
    if moved {
        // The live blocks grew: the warm spans' bound shrinks by as much
        // (a fresh span's pages are faulted in as the block fills, while
        // the warm spans that could not serve stay resident).
        super::cache::maintain(store, crate::sys::monotonic_ns());
    }
    // SAFETY: the block's header, written by `settle`; the block is the
    // caller's.
    moved.then(|| unsafe { (*(s.base as *mut HugeHeader)).block })
}

/// Books the outcome `done` of exchanging live block `h`'s pages with the
/// front of span `s`: headers, segment map, counts, and the span at the
/// block's old place (or `s` again) put into the cache. Returns the span
/// that pushed out of the cache, for the caller to unmap once the lock is
/// dropped.
///
/// # Safety
/// The store's lock is held; `h` was the caller's live block (its header
/// read before the exchange), `s` a span out of every list, committed as
/// `grow` counts it, and `done` what `exchange_fronts` said of them.
unsafe fn settle(
    store: &SegmentStore,
    done: Exchange,
    h: *mut HugeHeader,
    s: Span,
) -> Option<Span> {
    let old = h as usize;
    match done {
        Exchange::Done | Exchange::AEmptied => {
            let b = s.base as *mut HugeHeader;
            // SAFETY: the block's header came with its pages.
            let (m, instance) = unsafe {
                let m = (*b).map_len;
                (*b).block = (s.base + ((*b).block as usize - old)) as *mut u8;
                (*b).map_len = s.len;
                (m, (*b).header.instance)
            };
            store
                .stats
                .huge_bytes
                .fetch_add(s.len - m, Ordering::Relaxed);
            if done == Exchange::AEmptied {
                // The span's front pages are gone; the block's old place,
                // empty, goes too.
                store.segmap.remove(old, m);
                // SAFETY: ours, empty, in no list.
                unsafe { os::unmap(nonnull(old), m) };
                store.uncharge(m);
                store.decommit(m);
                return None;
            }
            let now = crate::sys::monotonic_ns();
            let freed = Span {
                base: old,
                len: m,
                committed: m,
                since: now,
                warm: s.warm.min(m),
            };
            // SAFETY: lock held; the span's old front, now at `old`, is ours,
            // free and in no list; its header is written first.
            unsafe {
                // Reuse keeps the cache warm, as a free does.
                (*store.huge.get()).note_free(now);
                write_free_header(freed, instance);
                put_locked(store, freed, true)
            }
        }
        Exchange::Unchanged => {
            store.decommit(s.len - s.committed);
            // SAFETY: lock held; the span is intact, ours and free.
            unsafe { put_locked(store, s, true) }
        }
        Exchange::BFrontLost => {
            // The span lost its front's pages: it goes whole.
            store.segmap.remove(s.base, s.len);
            // SAFETY: ours, in no list.
            unsafe { os::unmap(nonnull(s.base), s.len) };
            store.uncharge(s.len);
            store.decommit(s.len);
            None
        }
    }
}

/// A span of exactly `need` bytes (or a little more) for a block of `m`
/// bytes to grow into, out of every list: from the cache as `donor` allows,
/// else (with [`Donor::Any`]) a fresh mapping.
fn take(
    store: &SegmentStore,
    need: usize,
    m: usize,
    donor: Donor,
    instance: usize,
) -> Option<Span> {
    {
        let _g = store.lock();
        // SAFETY: lock held.
        let c = unsafe { &mut *store.huge.get() };
        if let Some(s) = c.take(need) {
            if donor == Donor::Warm && s.warm <= m {
                // Its warm bytes would all go where the block was: no gain
                // over `mremap`. (A span was just taken: none is evicted.)
                let _ = c.put(s, false);
                return None;
            }
            // SAFETY: lock held; `s` just left the cache.
            return Some(unsafe { cut(store, s, need, instance) });
        }
    }
    if donor == Donor::Warm {
        return None;
    }
    // A fresh mapping: its pages are untouched, so moving its front away
    // costs nothing. Charged and recorded by `map`; committed by the caller.
    let base = store.map(need)?;
    Some(Span {
        base: base.as_ptr() as usize,
        len: need,
        committed: 0,
        since: 0,
        warm: 0,
    })
}

/// What [`move_pages`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Nothing: the kernel refused. The caller copies.
    No,
    /// The data moved; `from`'s range is mapped and empty.
    Emptied,
    /// The data moved, and `from`'s range holds the pages `to` had at its
    /// front (warm ones, if `to` was cut from a warm cached span), so that
    /// freeing `from` with its pages kept loses none of them.
    Swapped,
}

/// `hardened`: moves the first `len` bytes of live huge block `from` (its
/// data, rounded up to whole pages) into the front of live huge block `to`
/// without copying, and the pages that were there into `from`'s place:
/// `to` is often cut from a warm cached span, whose front pages would
/// otherwise be thrown away (and faulted in again by the next large
/// block). `from`'s addresses stay mapped throughout (every move keeps its
/// source mapped, `MREMAP_DONTUNMAP`), so they stay ours until the free
/// that follows quarantines them (`PROT_NONE`): a stale pointer faults
/// rather than read what is mapped there next. Without `hardened` a
/// growing block moves with its whole mapping ([`grow`], `mremap`); with
/// it, the guard page after the header splits the mapping, so only the
/// block's pages move.
///
/// The swap is [`os::exchange_fronts`], made only if `to` came with warm
/// pages (see [`HugeHeader::warm`]): a fresh block's front holds none
/// worth keeping.
///
/// [`Moved::No`] if the kernel refuses (older than Linux 6.17, see
/// [`os::moves_mapping_runs`], or out of mappings or address space): the
/// caller copies. If only the swap back fails, `to`'s old front pages are
/// dropped ([`Moved::Emptied`]). A refused move may have unmapped its
/// target already (the kernel unmaps it first): every range of ours it
/// leaves a hole is mapped again at once ([`os::refill`]), so the caller's
/// copy and the quarantine find memory there.
///
/// # Safety
/// `from` and `to` are distinct live huge blocks of this instance owned by
/// the caller, each with at least `len` bytes to the end of its mapping;
/// `to`'s first `len` bytes (rounded up to a page) hold nothing yet.
pub unsafe fn move_pages(from: *mut u8, to: *mut u8, len: usize) -> Moved {
    // After one move a block spans two kernel mappings, which an older
    // kernel cannot move again (see `os::moves_mapping_runs`): there the
    // caller copies.
    if !os::moves_mapping_runs() {
        return Moved::No;
    }
    let Some(len) = os::align_up(len, crate::sys::PAGE_SIZE) else {
        return Moved::No;
    };
    // Huge blocks start on a page and their mappings end on one: the
    // rounded length still lies in both.
    debug_assert!(
        (from as usize).is_multiple_of(crate::sys::PAGE_SIZE)
            && (to as usize).is_multiple_of(crate::sys::PAGE_SIZE)
    );
    // SAFETY: blocks are never at address 0.
    let (from, to) = unsafe { (nonnull(from as usize), nonnull(to as usize)) };
    // SAFETY: `to` is a live huge block: its header is at
    // `segment_of(to)`, as for every huge block.
    let warm = unsafe { (*crate::segment::segment_of(to.as_ptr()).cast::<HugeHeader>()).warm > 0 };
    // SAFETY: per contract both ranges are ours, disjoint (distinct
    // mappings) and private anonymous memory; a refused move leaves no
    // hole in either (`refill`).
    unsafe {
        // The data alone into `to` (its front pages are dropped).
        let plain = || match crate::sys::mremap_keep_source(from, len, to) {
            Ok(()) => Moved::Emptied,
            Err(_) => {
                os::refill(to, len);
                Moved::No
            }
        };
        if !warm {
            return plain();
        }
        match os::exchange_fronts(from, to, len) {
            Exchange::Done => Moved::Swapped,
            Exchange::AEmptied => Moved::Emptied,
            // `to`'s front is mapped again, empty: the caller copies.
            Exchange::BFrontLost => Moved::No,
            Exchange::Unchanged => plain(),
        }
    }
}
