//! `hardened`: what happens to a freed huge block. Its *addresses* are
//! quarantined: emptied, made inaccessible (`PROT_NONE`, all but the header
//! page, which keeps them visible to `owns`, `for_each_mapping` and the
//! double-free check) and never handed out again until newer spans push
//! them out of the quarantine, so a stale pointer faults instead of
//! reaching a later block. Its *pages* are not thrown away: before the
//! quarantine empties them, they move ([`keep_pages`]) to a fresh mapping,
//! at an address no live or quarantined block has, which the span cache
//! keeps warm like any freed span. That mapping is placed beside the
//! warmest cached span (or that span moved beside it), so the pages of
//! many freed blocks gather into one span, from which a block larger than
//! any of them is cut whole. A program that keeps replacing big buffers so
//! reuses its memory without faulting it in again, as without `hardened`,
//! while no address comes back before it has left the quarantine. (Once
//! it has, it is the kernel's again: a later mapping, ours or the
//! program's, may be placed there.)

use super::cache::{nonnull, put_locked, write_free_header};
use super::{HugeHeader, LEAD_PAGES, QUARANTINE_BYTES_MAX};
use crate::os::{self, Purged};
use crate::store::{SegmentStore, Span};
use crate::sys::{self, PAGE_SIZE};
use core::ptr::NonNull;

/// Empties a freed span and makes all of it but the header page
/// inaccessible, then keeps it (still recorded, so a stale free is
/// recognised) until newer ones push it out. Unmaps it at once if the
/// kernel refuses the protection.
pub(super) fn quarantine(store: &SegmentStore, mut s: Span) {
    let body = s.len - PAGE_SIZE;
    // SAFETY: inside a mapping of ours, so not 0.
    let addr = unsafe { nonnull(s.base + PAGE_SIZE) };
    // SAFETY: the span is free and ours; the header page is left alone.
    let emptied = unsafe { os::purge(addr, body, crate::os::Purge::DontNeed) };
    if emptied == Purged::Zeroed {
        // (Nothing left to count if its pages moved on: `keep_pages`.)
        store.decommit(s.committed.saturating_sub(PAGE_SIZE));
        s.committed = s.committed.min(PAGE_SIZE);
    }
    // SAFETY: as above; nothing may use the body from now on.
    if unsafe { sys::mprotect_none(addr.as_ptr(), body) }.is_err() {
        store.release_span(s);
        return;
    }
    s.warm = 0;
    let evicted = {
        let _g = store.lock();
        // SAFETY: lock held. Not merged: each span leaves on its own turn.
        unsafe { (*store.quarantined.get()).put(s, false).1 }
    };
    if let Some(v) = evicted {
        store.release_span(v);
    }
    loop {
        let v = {
            let _g = store.lock();
            // SAFETY: lock held.
            unsafe { (*store.quarantined.get()).pop_victim(QUARANTINE_BYTES_MAX, 0) }
        };
        match v {
            Some(v) => store.release_span(v),
            None => return,
        }
    }
}

/// A fresh mapping of `len` bytes right below or right above one of the
/// warmest cached spans, if the address space there is free: the kept
/// pages then merge with that span in the cache (see [`keep_pages`]). Kept
/// each at an address of its own, the pages of freed blocks would stay in
/// pieces no larger than the blocks they came from, and a larger request
/// would fault fresh memory while they sit warm. (The kernel places
/// mappings top down: the range below a span is the likelier to be free.)
fn map_beside_warm(store: &SegmentStore, len: usize) -> Option<NonNull<u8>> {
    /// Cached spans tried, warmest first.
    const TRIES: usize = 2;
    let mut at = [0usize; 2 * TRIES];
    {
        let _g = store.lock();
        // SAFETY: lock held.
        let c = unsafe { &*store.huge.get() };
        let mut taken = [usize::MAX; TRIES];
        for t in 0..TRIES {
            let best = (0..c.live().len())
                .filter(|i| !taken.contains(i) && c.live()[*i].warm > 0)
                .max_by_key(|&i| c.live()[i].warm);
            let Some(i) = best else { break };
            taken[t] = i;
            let n = c.live()[i];
            at[2 * t] = n.base.saturating_sub(len);
            // Above a span only if all of it is warm: a span's warm bytes
            // are taken to lie at its front (what is purged is its end).
            if n.warm == n.len {
                at[2 * t + 1] = n.base + n.len;
            }
        }
    }
    // 0: no candidate (or none below the span).
    at.iter()
        .filter(|&&a| a != 0)
        .find_map(|&a| store.map_at(a, len))
}

/// When [`map_beside_warm`] finds no room: a fresh mapping of `len`
/// bytes followed by the warmest cached span, moved there (`mremap`, its
/// pages carried along, its old addresses unmapped; they were never a
/// block's, so nothing is quarantined). The span goes back into the cache
/// at its new place, where the kept pages will merge with it. `None`, with
/// the cache unchanged, if there is no warm span or the kernel refuses.
fn map_before_moved_warm(store: &SegmentStore, len: usize) -> Option<NonNull<u8>> {
    let w = {
        let _g = store.lock();
        // SAFETY: lock held.
        let c = unsafe { &mut *store.huge.get() };
        let w = c.take_warmest()?;
        if len.checked_add(w.len).is_none() {
            // Cannot happen (both are mapped), but `w` must not be lost.
            let _ = c.put(w, false);
            return None;
        }
        // Out of the map while it moves: `for_each_mapping` must not read
        // its header meanwhile.
        store.segmap.remove(w.base, w.len);
        w
    };
    let instance = {
        // SAFETY: the header of a cached span of ours.
        unsafe { (*(w.base as *const HugeHeader)).header.instance }
    };
    let put_back = |w: Span| {
        let _g = store.lock();
        // The chunks' leaf exists (they were recorded): cannot fail.
        let _ = store.segmap.insert(w.base, w.len);
        // SAFETY: lock held; the span is free, ours, its header intact.
        unsafe { put_locked(store, w, false) }
    };
    let total = len + w.len;
    let moved = store.map(total).and_then(|base| {
        let to = base.as_ptr() as usize + len;
        // SAFETY: the span left the cache and the map, so nobody uses it;
        // the target is the end of our fresh mapping.
        match unsafe { sys::mremap_to(nonnull(w.base), w.len, w.len, nonnull(to)) } {
            Ok(()) => Some(base),
            Err(_) => {
                // SAFETY: fresh, seen by nobody.
                unsafe { store.unmap(base, total) };
                None
            }
        }
    });
    let Some(base) = moved else {
        if let Some(v) = put_back(w) {
            store.release_span(v);
        }
        return None;
    };
    // Its old addresses are gone with the move.
    store.uncharge(w.len);
    let w = Span {
        base: base.as_ptr() as usize + len,
        ..w
    };
    let evicted = {
        let _g = store.lock();
        // The fresh mapping is recorded as one: its second part gets a
        // header chunk of its own (the leaf exists).
        let _ = store.segmap.insert(w.base, w.len);
        // SAFETY: lock held; the span is free and ours, its header page
        // moved with it (its block address is rewritten).
        unsafe {
            write_free_header(w, instance);
            put_locked(store, w, false)
        }
    };
    if let Some(v) = evicted {
        store.release_span(v);
    }
    Some(base)
}

/// Moves the body of freed span `s` (everything after its header and guard
/// pages) into a fresh mapping of the same length, at the same offset
/// after a free header, and returns that mapping as a warm span for the
/// cache (without a guard page: cached spans get theirs when a block is
/// cut from them, see `cache::alloc_cached`). `s` keeps its addresses, mapped
/// and empty, for [`quarantine`]; its committed bytes go to the new span.
/// `None`, with `s` unchanged, when the kernel refuses (a kernel before
/// Linux 5.7; before Linux 6.17, a body made of several kernel mappings,
/// which the gathering and the page moves of `realloc` are then kept from
/// making; no address space) or the instance's limit leaves no room for
/// the new header page.
pub(super) fn keep_pages(store: &SegmentStore, s: &mut Span) -> Option<Span> {
    // The new span's header page is memory the old span did not have: not
    // kept at all if it would take the instance past its limit.
    if !store.try_commit(PAGE_SIZE) {
        return None;
    }
    // Beside a warm span only where the kernel can later move a body
    // that spans the two (see `os::moves_mapping_runs`).
    let gather = os::moves_mapping_runs();
    let Some(base) = gather
        .then(|| map_beside_warm(store, s.len).or_else(|| map_before_moved_warm(store, s.len)))
        .flatten()
        .or_else(|| store.map(s.len))
    else {
        store.decommit(PAGE_SIZE);
        return None;
    };
    let lead = LEAD_PAGES * PAGE_SIZE;
    // SAFETY: `s` is free and ours, its body one private anonymous mapping
    // (or the call fails); the target is our fresh mapping.
    let moved = unsafe {
        sys::mremap_keep_source(
            nonnull(s.base + lead),
            s.len - lead,
            nonnull(base.as_ptr() as usize + lead),
        )
    };
    if moved.is_err() {
        store.decommit(PAGE_SIZE);
        // SAFETY: fresh, seen by nobody.
        unsafe { store.unmap(base, s.len) };
        return None;
    }
    // What `s` had committed went with its pages, but for its header page,
    // which stays; the new span's header page was counted above.
    let k = Span {
        base: base.as_ptr() as usize,
        len: s.len,
        committed: s.committed,
        since: s.since,
        warm: s.len,
    };
    s.committed = PAGE_SIZE;
    // SAFETY: `s`'s header is ours (the instance it names is this one's).
    let instance = unsafe { (*(s.base as *const HugeHeader)).header.instance };
    let _g = store.lock();
    // SAFETY: lock held; the new span is free, ours and in no list.
    unsafe { write_free_header(k, instance) };
    Some(k)
}
