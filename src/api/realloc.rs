//! `realloc`: in place when the block's class allows, by moving pages for
//! huge blocks, else by copying.

use super::{alloc, block_meta, release, usable_size, Instance};
use crate::check;
use crate::harden;
use crate::huge::{self, Moved};
use crate::keys;
use crate::segment::{is_small, segment_of, SLICE_SIZE};
use crate::size_class::{MAX_CLASS_SIZE, MIN_ALIGN};
use core::ptr;

/// Resizes block `p` to `new_size` bytes, in place when its class allows,
/// by moving pages for huge blocks, else by copying. `layout` is the
/// `(size, align)` the block was allocated with, if known (the C ABI does
/// not know it: alignment [`MIN_ALIGN`] then). On failure returns null and
/// `p` is untouched.
///
/// # Safety
/// `p` is a live block of instance `I` (allocated with `layout`, which is
/// only checked, with `boundary-checks`).
pub unsafe fn realloc<I: Instance>(
    p: *mut u8,
    layout: Option<(usize, usize)>,
    new_size: usize,
) -> *mut u8 {
    let zero = check::validate(I::state(), p, layout);
    let align = layout.map_or(MIN_ALIGN, |(_, a)| a);
    if zero {
        harden::zero::check(p, false);
        let q = alloc::<I>(new_size, align);
        if !q.is_null() {
            harden::zero::check(p, true);
        }
        return q;
    }
    let seg = segment_of(p);
    // SAFETY: per contract.
    unsafe {
        let usable = usable_size(p);
        // What the block could hold (less the hardened slack).
        let room = block_meta(p).0 - harden::SLACK;
        if is_small(seg) {
            // Stay if the block fits and is not more than twice too big
            // (blocks of the linear classes always stay when shrinking).
            if new_size <= room && (new_size * 2 >= room || room <= 128) {
                return resized(p, new_size);
            }
        } else if new_size > MAX_CLASS_SIZE || align > SLICE_SIZE {
            let st = I::state();
            st.enter();
            let q = huge::realloc(
                &st.store,
                seg.cast(),
                new_size.saturating_add(harden::SLACK),
            );
            if !q.is_null() {
                return resized(q, new_size);
            }
        }
        let q = alloc::<I>(new_size, align);
        if q.is_null() {
            return q;
        }
        let n = usable.min(new_size);
        let moved = if keys::ENABLED && n == usable && !is_small(seg) {
            moved(p, q, n, new_size)
        } else {
            Moved::No
        };
        if moved == Moved::No {
            ptr::copy_nonoverlapping(p, q, n);
        }
        check::on_free(p);
        // Its data left, canary and trailer with them (checked above). If
        // the pages `q` had came in their place, they are kept as a freed
        // block's are; the addresses go to the quarantine either way.
        match moved {
            Moved::No => release::<I>(p),
            Moved::Emptied => huge::free_emptied(&I::state().store, seg.cast()),
            Moved::Swapped => huge::free(&I::state().store, seg.cast()),
        }
        q
    }
}

/// `hardened`: moves the `n` bytes of huge block `p` into the new huge
/// block `q` of `new_size` requested bytes by moving pages
/// ([`huge::move_pages`]) instead of copying; [`Moved::No`] if `q` is not
/// huge or the kernel refused (nothing changed). The old canary came along
/// with the data: it becomes junk, and `q` is sealed again (the moved
/// pages may have covered its canary).
///
/// # Safety
/// `p` is a live huge block holding `n` requested bytes,
/// `q` a fresh block of `new_size > n` requested bytes; both the caller's.
unsafe fn moved(p: *mut u8, q: *mut u8, n: usize, new_size: usize) -> Moved {
    // SAFETY: per contract.
    unsafe {
        if is_small(segment_of(q)) {
            return Moved::No;
        }
        let moved = huge::move_pages(p, q, n);
        if moved != Moved::No {
            q.add(n).write_bytes(keys::JUNK, harden::canary::CANARY);
            let (raw, keys) = block_meta(q);
            harden::canary::seal(q, new_size, raw, keys);
        }
        moved
    }
}

/// Block `p` resized in place to `n` bytes: with `hardened`, its canary and
/// trailer move.
///
/// # Safety
/// `p` is a live block with room for `n + SLACK` bytes.
#[inline]
unsafe fn resized(p: *mut u8, n: usize) -> *mut u8 {
    if keys::ENABLED {
        // SAFETY: per contract.
        unsafe {
            let (raw, keys) = block_meta(p);
            harden::canary::seal(p, n, raw, keys);
        }
    }
    p
}
