//! `hardened`: what happens to a freed huge block. Its *addresses* are
//! quarantined: emptied, made inaccessible (`PROT_NONE`, all but the header
//! page, which keeps them visible to `owns`, `for_each_mapping` and the
//! double-free check) and never handed out again until newer spans push
//! them out of the quarantine, so a stale pointer faults instead of
//! reaching a later block. Its *pages* are not thrown away: before the
//! quarantine empties them, they move ([`keep_pages`]) to a fresh mapping,
//! at an address no block has had, which the span cache keeps warm like any
//! freed span. A program that keeps replacing big buffers so reuses its
//! memory without faulting it in again, as without `hardened`, while no
//! address is reused.

use super::cache::nonnull;
use super::{HugeHeader, LEAD_PAGES, QUARANTINE_BYTES_MAX};
use crate::os::{self, Purged};
use crate::store::{SegmentStore, Span};
use crate::sys::{self, PAGE_SIZE};

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

/// Moves the body of freed span `s` (everything after its header and guard
/// pages) into a fresh mapping of the same length, at the same offset
/// after a free header, and returns that mapping as a warm span for the
/// cache (without a guard page: cached spans get theirs when a block is
/// cut from them, see `cache::alloc_cached`). `s` keeps its addresses, mapped
/// and empty, for [`quarantine`]; its committed bytes go to the new span.
/// `None`, with `s` unchanged, when the kernel refuses (a kernel before
/// Linux 5.7, a body made of several kernel mappings: the front moved in by
/// a growing `realloc`, no address space) or the instance's limit leaves
/// no room for the new header page.
pub(super) fn keep_pages(store: &SegmentStore, s: &mut Span) -> Option<Span> {
    // The new span's header page is memory the old span did not have: not
    // kept at all if it would take the instance past its limit.
    if !store.try_commit(PAGE_SIZE) {
        return None;
    }
    let Some(base) = store.map(s.len) else {
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
    unsafe { super::cache::write_free_header(k, instance) };
    Some(k)
}
