//! Huge blocks freed and allocated again: without `hardened`, freed spans
//! are reused warm (same addresses, no new mapping), split for smaller
//! blocks and coalesced again, grown into by a block that `realloc` grows, purged after the purge delay and bounded;
//! the statistics stay exact through all of it. With `hardened`, freed
//! spans are never reused (quarantine) and the quarantine stays bounded in
//! mappings, while their pages are reused at new addresses, where the
//! pages of several freed blocks come together for a larger one.
//!
//! Each test uses an instance of its own, so tests running in parallel do
//! not see each other's spans.
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Touches every page of a block.
fn touch(p: *mut u8, size: usize, v: u8) {
    for off in (0..size).step_by(PAGE) {
        unsafe { p.add(off).write(v) };
    }
}

fn mappings<I: InstanceExt + Copy>(i: I) -> usize {
    let mut n = 0;
    i.for_each_mapping(|_, _| n += 1);
    n
}

/// Page faults the calling thread has taken so far.
fn thread_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Field 10 (minflt), counted after the command name's ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Writes a different value at the start of every page of a block.
fn stamp(p: *mut u8, size: usize) {
    for (i, off) in (0..size).step_by(PAGE).enumerate() {
        unsafe { p.add(off).cast::<u64>().write(i as u64 ^ 0x5eed) };
    }
}

fn stamped(p: *mut u8, size: usize) -> bool {
    (0..size)
        .step_by(PAGE)
        .enumerate()
        .all(|(i, off)| unsafe { p.add(off).cast::<u64>().read() } == i as u64 ^ 0x5eed)
}

#[cfg(not(feature = "hardened"))]
mod reuse {
    use super::*;
    use std::time::Duration;

    emma::emma_instance!(Reused);
    emma::emma_instance!(Split);
    emma::emma_instance!(Decay);
    emma::emma_instance!(Bounded);
    emma::emma_instance!(Grown);

    #[test]
    fn a_freed_span_is_reused_at_the_same_address() {
        let l = layout(8 * MIB);
        let p = unsafe { Reused.alloc(l) };
        touch(p, 8 * MIB, 1);
        let before = Reused.stats();
        unsafe { Reused.dealloc(p, l) };
        let freed = Reused.stats();
        assert_eq!((freed.huge_blocks, freed.huge_bytes), (0, 0));
        assert_eq!(freed.mapped, before.mapped, "cached, still mapped");
        for round in 0..100 {
            let q = unsafe { Reused.alloc(l) };
            assert_eq!(q, p, "round {round}: the cached span must come back");
            touch(q, 8 * MIB, round as u8);
            unsafe { Reused.dealloc(q, l) };
        }
        assert_eq!(Reused.stats().peak_mapped, before.peak_mapped);
        Reused.trim();
        let s = Reused.stats();
        assert_eq!((s.mapped, s.committed), (s.meta, s.meta), "{s:?}");
        assert_eq!(mappings(Reused), 0);
    }

    #[test]
    fn spans_split_for_smaller_blocks_and_coalesce_again() {
        let big = layout(24 * MIB);
        let small = layout(6 * MIB);
        let p = unsafe { Split.alloc(big) };
        touch(p, 24 * MIB, 1);
        let mapped = Split.stats().mapped;
        unsafe { Split.dealloc(p, big) };
        // Two 6 MiB blocks (8 MiB each with the header page) out of the
        // 28 MiB span, one after the other.
        let a = unsafe { Split.alloc(small) };
        let b = unsafe { Split.alloc(small) };
        assert_eq!(a, p, "the front of the span");
        assert_eq!(b as usize, a as usize + 8 * MIB, "the rest of the span");
        touch(a, 6 * MIB, 2);
        touch(b, 6 * MIB, 3);
        let s = Split.stats();
        assert_eq!(s.mapped, mapped, "no new mapping for split blocks");
        assert_eq!((s.huge_blocks, s.huge_bytes), (2, 16 * MIB), "{s:?}");
        // The cached rest, up to the span's last byte, is still the instance's.
        assert!(Split.owns(a) && Split.owns(b.wrapping_add(20 * MIB - PAGE - 1)));
        // Three pieces (two blocks and a 12 MiB rest) are three mappings
        // to `for_each_mapping`, covering the span exactly.
        let mut seen = Vec::new();
        Split.for_each_mapping(|base, len| seen.push((base, len)));
        seen.sort();
        let base = p as usize & !(4 * MIB - 1);
        assert_eq!(
            seen,
            vec![
                (base, 8 * MIB),
                (base + 8 * MIB, 8 * MIB),
                (base + 16 * MIB, 12 * MIB)
            ]
        );
        unsafe {
            Split.dealloc(b, small);
            Split.dealloc(a, small);
        }
        assert_eq!(mappings(Split), 1, "the pieces coalesced");
        let q = unsafe { Split.alloc(big) };
        assert_eq!(q, p, "the whole span again");
        unsafe { Split.dealloc(q, big) };
        Split.trim();
        let s = Split.stats();
        assert_eq!((s.mapped, s.committed), (s.meta, s.meta), "{s:?}");
        assert!(!Split.owns(p));
    }

    #[test]
    fn idle_spans_are_purged_after_a_delay_and_stay_mapped() {
        Decay.set_purge_delay(Duration::from_millis(5));
        let l = layout(12 * MIB);
        let p = unsafe { Decay.alloc(l) };
        touch(p, 12 * MIB, 7);
        let meta = Decay.stats().meta;
        unsafe { Decay.dealloc(p, l) };
        let warm = Decay.stats();
        assert!(warm.committed >= meta + 12 * MIB, "warm at first: {warm:?}");
        // Warm spans wait ten purge delays.
        std::thread::sleep(Duration::from_millis(80));
        // Any huge free looks at the clock; this one is too big to cache
        // (and only its header page is touched).
        let other = layout(300 * MIB);
        let o = unsafe { Decay.alloc(other) };
        unsafe { Decay.dealloc(o, other) };
        let cold = Decay.stats();
        assert_eq!(
            cold.committed,
            meta + PAGE,
            "only the header page: {cold:?}"
        );
        assert!(cold.purged >= 12 * MIB);
        assert_eq!(cold.mapped, warm.mapped, "purged, still cached");
        // A purged span is still reused, and reads as zero.
        let q = unsafe { Decay.alloc(l) };
        assert_eq!(q, p);
        assert_eq!(unsafe { q.add(5 * MIB).read() }, 0);
        assert_eq!(Decay.stats().committed, warm.committed);
        unsafe { Decay.dealloc(q, l) };
        Decay.trim();
        let s = Decay.stats();
        assert_eq!((s.mapped, s.committed), (s.meta, s.meta), "{s:?}");
    }

    /// A block growing by `realloc` moves into a warm cached span: its data
    /// comes along without a copy, its new tail is the span's memory (no
    /// page faults), and the span's front takes the block's old place in
    /// the cache. Grown again with no warm span big enough, it still moves
    /// (the block is now two kernel mappings, which `mremap` cannot resize
    /// on kernels that can move them at all).
    #[test]
    fn a_growing_block_moves_into_a_warm_span() {
        let a = unsafe { Grown.alloc(layout(40 * MIB)) };
        touch(a, 40 * MIB, 1);
        unsafe { Grown.dealloc(a, layout(40 * MIB)) };
        let b = unsafe { Grown.alloc(layout(6 * MIB)) };
        assert_eq!(b, a, "the front of the cached span");
        stamp(b, 6 * MIB);
        let mapped = Grown.stats().mapped;
        let faults = thread_faults();
        let c = unsafe { Grown.realloc(b, layout(6 * MIB), 30 * MIB) };
        assert!(!c.is_null());
        assert_ne!(c, b, "moved into the rest of the span");
        assert!(stamped(c, 6 * MIB), "the data came along");
        touch(unsafe { c.add(6 * MIB) }, 24 * MIB, 2);
        let faulted = thread_faults() - faults;
        // Fresh memory would take one fault per page: 6144.
        assert!(
            faulted < 200,
            "{faulted} page faults growing into warm memory"
        );
        let s = Grown.stats();
        assert_eq!(s.mapped, mapped, "no new mapping");
        assert_eq!((s.huge_blocks, s.huge_bytes), (1, 32 * MIB), "{s:?}");
        Grown.check().unwrap();
        stamp(c, 30 * MIB);
        let d = unsafe { Grown.realloc(c, layout(30 * MIB), 100 * MIB) };
        assert!(!d.is_null());
        assert!(stamped(d, 30 * MIB), "the data came along again");
        touch(unsafe { d.add(30 * MIB) }, 70 * MIB, 3);
        Grown.check().unwrap();
        unsafe { Grown.dealloc(d, layout(100 * MIB)) };
        Grown.trim();
        let s = Grown.stats();
        assert_eq!((s.mapped, s.committed, s.huge_blocks), (s.meta, s.meta, 0));
        assert_eq!(mappings(Grown), 0);
    }

    /// A malloc-large-style loop: a few blocks of 1-32 MiB live at once,
    /// replaced at random. The cache keeps memory and mappings bounded (the
    /// memory by the live blocks' peak, plus 32 MiB of warm spans and the
    /// header pages of purged ones) and the figures exact.
    #[test]
    fn a_churn_of_large_blocks_stays_bounded() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut live: Vec<(*mut u8, usize)> = Vec::new();
        let mut max_extra = 0;
        let mut peak = 0;
        for i in 0..120 {
            if live.len() == 4 {
                let (p, size) = live.swap_remove((next() % 4) as usize);
                assert_eq!(unsafe { p.read() }, (size % 251) as u8);
                unsafe { Bounded.dealloc(p, layout(size)) };
            }
            let size = MIB + (next() as usize % (31 * MIB));
            let p = unsafe { Bounded.alloc(layout(size)) };
            assert!(!p.is_null(), "iteration {i}");
            touch(p, size, (size % 251) as u8);
            live.push((p, size));
            let s = Bounded.stats();
            peak = peak.max(s.huge_bytes);
            let extra = s.mapped - s.huge_bytes - s.meta;
            max_extra = max_extra.max(extra);
            assert!(extra <= 512 * MIB + 32 * MIB, "cache over its bound: {s:?}");
            assert!(
                s.committed <= peak.max(s.huge_bytes) + s.meta + 32 * MIB + 64 * PAGE,
                "too much warm memory (live peak {peak}): {s:?}"
            );
        }
        assert!(max_extra > 0, "nothing was ever cached");
        for (p, size) in live {
            unsafe { Bounded.dealloc(p, layout(size)) };
        }
        Bounded.trim();
        let s = Bounded.stats();
        assert_eq!((s.mapped, s.committed, s.huge_blocks), (s.meta, s.meta, 0));
        assert_eq!(mappings(Bounded), 0);
    }
}

#[cfg(feature = "hardened")]
mod quarantine {
    use super::*;

    emma::emma_instance!(Quarantined);
    emma::emma_instance!(Moved);
    emma::emma_instance!(Gathered);
    emma::emma_instance!(GatheredMoved);
    emma::emma_instance!(Swapped);

    /// Held by each test here: the first counts the process's mappings,
    /// which the other's would disturb.
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Whether the kernel moves ranges made of several kernel mappings
    /// (Linux 6.17 and later): the gathering of kept pages and the page
    /// moves of `realloc` need it, and are not made without it.
    fn moves_runs(test: &str) -> bool {
        let yes = emma::__private::moves_mapping_runs();
        if !yes {
            eprintln!("{test}: skipped, the kernel cannot move a run of mappings (before 6.17)");
        }
        yes
    }

    /// Number of lines of /proc/self/maps (the process's mapping count).
    fn process_mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    /// Freed spans are never handed out again while quarantined, hold no
    /// memory, and the quarantine does not pile up mappings. Their pages
    /// are reused all the same, at new addresses: a block allocated again
    /// and written whole takes few page faults (a fresh one: 1536), and
    /// memory stays at one block's worth beyond the live ones.
    #[test]
    fn freed_spans_are_quarantined_not_reused() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(quarantined_rounds).join().unwrap();
        Quarantined.trim();
        let s = Quarantined.stats();
        assert_eq!((s.mapped, s.committed), (s.meta, s.meta), "{s:?}");
        assert_eq!(mappings(Quarantined), 0);
    }

    fn quarantined_rounds() {
        let l = layout(6 * MIB);
        // The block's mapping: whole 4 MiB chunks.
        let kept = 8 * MIB;
        let maps_before = process_mappings();
        let mut seen = std::collections::HashSet::new();
        let mut maps_full = 0;
        for round in 0..64 {
            let faults = thread_faults();
            let p = unsafe { Quarantined.alloc(l) };
            assert!(!p.is_null());
            // Reused memory or not, a new block starts with junk, not with
            // the last block's data (`touch` wrote the round at offset 0).
            let head = unsafe { std::slice::from_raw_parts(p, 1024) };
            assert!(
                head.iter().all(|&b| b == 0xdb),
                "round {round}: {:?}",
                &head[..8]
            );
            touch(p, 6 * MIB, round as u8);
            let faulted = thread_faults() - faults;
            if round > 0 {
                assert!(
                    faulted < 64,
                    "round {round}: {faulted} faults: pages not reused"
                );
            }
            if round < 16 {
                assert!(
                    seen.insert(p),
                    "round {round}: a quarantined span came back"
                );
            }
            unsafe { Quarantined.dealloc(p, l) };
            if round == 32 {
                maps_full = process_mappings();
            }
            let s = Quarantined.stats();
            assert_eq!((s.huge_blocks, s.huge_bytes), (0, 0));
            assert!(
                s.committed <= s.meta + kept + 16 * PAGE,
                "quarantined spans must be emptied: {s:?}"
            );
            assert!(s.mapped <= s.meta + (1 << 30) + kept, "{s:?}");
        }
        // A quarantined span is a few kernel mappings (header, guard, body),
        // at most 16 spans: bounded, and no more once it is full.
        let more = process_mappings() - maps_before;
        assert!(more < 96, "the quarantine piles up mappings: {more} more");
        assert!(
            process_mappings() <= maps_full + 4,
            "the quarantine piles up mappings: {maps_full} when full, {} now",
            process_mappings()
        );
    }

    /// The pages of freed blocks are kept side by side, so that a block
    /// larger than any of them reuses them together: two blocks of just
    /// under 8 MiB (one 8 MiB mapping each) freed, then one of 15 MiB
    /// written whole takes few page faults (kept each at an address of its
    /// own, the pages of either block are too few for it: 3843 faults).
    /// With `blocked`, the address space on both sides of every mapping of
    /// the instance is taken before the second free, so its pages cannot
    /// be placed beside the first block's: the first block's are moved to
    /// join them instead.
    fn gather_rounds<I: InstanceExt + GlobalAlloc + Copy>(i: I, blocked: bool) {
        unsafe {
            let small = layout(8 * MIB - 64 * 1024);
            let a = i.alloc(small);
            let b = i.alloc(small);
            assert!(!a.is_null() && !b.is_null());
            touch(a, small.size(), 1);
            touch(b, small.size(), 2);
            i.dealloc(a, small);
            let mut taken = Vec::new();
            if blocked {
                let mut maps = Vec::new();
                i.for_each_mapping(|base, len| maps.push((base, len)));
                // Where the second block's 8 MiB of pages could go beside
                // a mapping (what is taken already needs no reservation).
                for (base, len) in maps {
                    for at in [base.wrapping_sub(8 * MIB), base + len] {
                        let p = reserve_at(at, 8 * MIB);
                        if !p.is_null() {
                            taken.push(p);
                        }
                    }
                }
            }
            i.dealloc(b, small);
            let big = layout(15 * MIB);
            let faults = thread_faults();
            let c = i.alloc(big);
            assert!(!c.is_null());
            touch(c, big.size(), 3);
            let faulted = thread_faults() - faults;
            assert!(faulted < 128, "{faulted} page faults: pages not reused");
            i.dealloc(c, big);
            for p in taken {
                assert_eq!(unmap_raw(p, 8 * MIB), 0);
            }
        }
    }

    /// `mmap(at, len, PROT_NONE, MAP_FIXED_NOREPLACE)`: null if anything
    /// is mapped there.
    fn reserve_at(at: usize, len: usize) -> *mut u8 {
        let p = unsafe {
            syscalls::syscall!(
                syscalls::Sysno::mmap,
                at,
                len,
                0usize,
                0x02usize | 0x20 | 0x10_0000,
                usize::MAX,
                0usize
            )
        };
        match p {
            Ok(p) if p == at => p as *mut u8,
            _ => std::ptr::null_mut(),
        }
    }

    fn unmap_raw(p: *mut u8, len: usize) -> usize {
        unsafe { syscalls::syscall!(syscalls::Sysno::munmap, p, len) }.unwrap()
    }

    /// [`gather_rounds`] on a thread of its own, then the instance's
    /// checks; what moved is counted where it went: after `trim` nothing
    /// is left over.
    fn gathers<I: InstanceExt + GlobalAlloc + Copy + Send + 'static>(i: I, blocked: bool) {
        std::thread::spawn(move || gather_rounds(i, blocked))
            .join()
            .unwrap();
        i.check().unwrap();
        i.trim();
        let s = i.stats();
        assert_eq!((s.mapped, s.committed), (s.meta, s.meta), "{s:?}");
    }

    #[test]
    fn pages_of_several_freed_blocks_serve_a_larger_one() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        if moves_runs("pages_of_several_freed_blocks_serve_a_larger_one") {
            gathers(Gathered, false);
        }
    }

    #[test]
    fn pages_gather_when_nothing_is_free_beside_them() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        if moves_runs("pages_gather_when_nothing_is_free_beside_them") {
            gathers(GatheredMoved, true);
        }
    }

    /// A block that a moving `realloc` cuts from a warm span does not
    /// lose that span's pages under the data moved in: they take the old
    /// block's place, and are kept when it is freed. 32 MiB of warm memory
    /// serve a 4 MiB block grown to 12 MiB, then, all freed, a 30 MiB
    /// block with few page faults (without the swap, the pages at the new
    /// block's front are dropped: 7683 faults).
    #[test]
    fn a_moving_realloc_keeps_the_warm_pages_it_lands_on() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        if !moves_runs("a_moving_realloc_keeps_the_warm_pages_it_lands_on") {
            return;
        }
        std::thread::spawn(|| unsafe {
            let whole = layout(30 * MIB);
            let a = Swapped.alloc(whole);
            assert!(!a.is_null());
            touch(a, whole.size(), 1);
            Swapped.dealloc(a, whole);
            let small = layout(4 * MIB - 64 * 1024);
            let p = Swapped.alloc(small);
            assert!(!p.is_null());
            stamp(p, small.size());
            let q = Swapped.realloc(p, small, 12 * MIB);
            assert!(!q.is_null() && q != p);
            assert!(stamped(q, small.size()), "data lost");
            touch(q, 12 * MIB, 2);
            Swapped.dealloc(q, layout(12 * MIB));
            let faults = thread_faults();
            let b = Swapped.alloc(whole);
            assert!(!b.is_null());
            touch(b, whole.size(), 3);
            let faulted = thread_faults() - faults;
            assert!(faulted < 128, "{faulted} page faults: warm pages dropped");
            Swapped.dealloc(b, whole);
        })
        .join()
        .unwrap();
        Swapped.check().unwrap();
    }

    /// A huge block that must move to grow (with `hardened` it never grows
    /// in place) takes its pages along: the realloc costs the thread a few
    /// page faults, not one per page of the block (a copy writes every
    /// page of the new block: 2048 faults for 8 MiB). The data comes along,
    /// and round after round (the block is then made of several kernel
    /// mappings) it still moves.
    #[test]
    fn a_growing_block_moves_its_pages_rather_than_copying() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        if !moves_runs("a_growing_block_moves_its_pages_rather_than_copying") {
            return;
        }
        std::thread::spawn(|| unsafe {
            let mut size = 8 * MIB;
            let mut p = Moved.alloc(layout(size));
            stamp(p, size);
            for round in 0..4 {
                let faults = thread_faults();
                let q = Moved.realloc(p, layout(size), 2 * size);
                let faulted = thread_faults() - faults;
                assert!(!q.is_null() && q != p, "round {round}: not moved");
                assert!(faulted < 64, "round {round}: {faulted} page faults: copied");
                assert!(stamped(q, size), "round {round}: data lost");
                // The old block's pages left with the move: nothing of it
                // stays committed (or cached as if it had memory).
                let s = Moved.stats();
                assert!(
                    s.committed <= s.meta + 2 * size + 4 * MIB + 16 * PAGE,
                    "round {round}: the emptied block still counts: {s:?}"
                );
                // The old canary is no longer there: the new block's end
                // checks out, and its new bytes can be written.
                assert_eq!(Moved.usable_size(q), 2 * size);
                touch(q.add(size), size, round as u8);
                stamp(q, 2 * size);
                size *= 2;
                p = q;
            }
            Moved.dealloc(p, layout(size));
        })
        .join()
        .unwrap();
        Moved.check().unwrap();
    }
}
