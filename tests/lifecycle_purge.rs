//! Memory goes back to the OS: 300 MiB of small objects allocated on four
//! threads, freed (a quarter of them by other threads than their
//! allocator), then trimmed on every thread.
//!
//! Two rounds per purge mode:
//! - *sparse*: one object per 2 MiB survives, so (almost) every segment
//!   stays mapped and only purging can give the memory back. With
//!   `Purge::DontNeed` the process's RSS drops to near the baseline at
//!   once. With `Purge::Free` the kernel takes the pages back only under
//!   memory pressure, so RSS may stay high: there we check what emma did
//!   (`purged`), not what the kernel did.
//! - *all*: the survivors are freed too; trim unmaps everything in both
//!   modes, so `mapped` and `committed` are back to the heap metadata and
//!   RSS to the baseline.
//!
//! Uses a non-global instance, so the harness's own allocations (glibc)
//! stay out of the figures; one test in this binary, so nothing else runs
//! beside it. RSS figures are printed for the record (`--nocapture`).
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::{Instance, InstanceExt, Purge};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier};

const MIB: usize = 1 << 20;
const THREADS: usize = 4;
const TOTAL: usize = 300 * MIB;
/// Allowed RSS above the baseline once everything is given back.
const SLACK: usize = 32 * MIB;
/// One object survives the sparse round per this many bytes allocated.
const SURVIVOR_EVERY: usize = 2 * MIB;

emma::emma_instance!(DontNeedHeap);
emma::emma_instance!(FreeHeap);

/// Resident set size of the process, from `/proc/self/statm`.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Bytes marked `MADV_FREE` and not yet reclaimed, from
/// `/proc/self/smaps_rollup` (`None` where the kernel does not tell).
fn lazy_free() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = s.lines().find(|l| l.starts_with("LazyFree:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// Objects are linked through their first word; the second holds the size.
const HDR: usize = 16;

unsafe fn layout_of(p: *mut u8) -> Layout {
    Layout::from_size_align(unsafe { *(p as *const usize).add(1) }, 16).unwrap()
}

/// Frees a list of objects, checking each one's fill byte.
unsafe fn free_list<I: GlobalAlloc>(inst: &I, mut p: *mut u8) -> usize {
    let mut n = 0;
    while !p.is_null() {
        unsafe {
            let next = *(p as *const *mut u8);
            let l = layout_of(p);
            assert_eq!(*p.add(l.size() - 1), fill_byte(p), "object {p:p} corrupted");
            inst.dealloc(p, l);
            p = next;
        }
        n += 1;
    }
    n
}

fn fill_byte(p: *mut u8) -> u8 {
    (p as usize >> 4) as u8 | 1
}

/// What one thread hands to the others: list heads, `[destination]`.
struct Lists {
    heads: Vec<AtomicUsize>, // THREADS * THREADS: [src * THREADS + dst]
    survivors: Vec<AtomicUsize>,
}

/// Allocates `bytes` of objects of 32..=512 bytes from `inst` on the
/// calling thread `t`, filling them; a quarter go to the lists of other
/// threads, one per `SURVIVOR_EVERY` to the survivor list.
fn allocate<I: GlobalAlloc>(inst: &I, t: usize, bytes: usize, lists: &Lists) {
    let mut heads = [std::ptr::null_mut::<u8>(); THREADS];
    let mut survivors = std::ptr::null_mut::<u8>();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((t as u64 + 1) * 0x2545_F491_4F6C_DD1D);
    let (mut done, mut next_survivor, mut n) = (0, SURVIVOR_EVERY, 0usize);
    while done < bytes {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = 32 + (rng % 481) as usize;
        let l = Layout::from_size_align(size, 16).unwrap();
        let p = unsafe { inst.alloc(l) };
        assert!(!p.is_null(), "out of memory at {done} bytes");
        unsafe {
            p.add(HDR).write_bytes(fill_byte(p), size - HDR);
            *(p as *mut usize).add(1) = size;
        }
        done += size;
        let slot = if done >= next_survivor {
            next_survivor += SURVIVOR_EVERY;
            &mut survivors
        } else if n % 4 == 0 {
            &mut heads[(t + 1 + (n / 4) % (THREADS - 1)) % THREADS]
        } else {
            &mut heads[t]
        };
        unsafe { *(p as *mut *mut u8) = *slot };
        *slot = p;
        n += 1;
    }
    for (dst, h) in heads.iter().enumerate() {
        lists.heads[t * THREADS + dst].store(*h as usize, Relaxed);
    }
    lists.survivors[t].store(survivors as usize, Relaxed);
}

#[derive(Debug)]
struct Figures {
    baseline: usize,
    peak: usize,
    sparse: usize,
    /// `LazyFree` after the sparse round's trim.
    sparse_lazy: Option<usize>,
    all: usize,
}

/// One round in purge mode `how`; `bytes` in total over the threads.
fn round<I: Instance + GlobalAlloc + Send + Sync>(inst: I, how: Purge, bytes: usize) -> Figures {
    inst.set_purge(how);
    let lists = Arc::new(Lists {
        heads: (0..THREADS * THREADS)
            .map(|_| AtomicUsize::new(0))
            .collect(),
        survivors: (0..THREADS).map(|_| AtomicUsize::new(0)).collect(),
    });
    // Every step is a barrier shared by the workers and the main thread.
    let step = Arc::new(Barrier::new(THREADS + 1));
    let baseline = rss();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (lists, step) = (lists.clone(), step.clone());
            std::thread::spawn(move || {
                allocate(&inst, t, bytes / THREADS, &lists);
                step.wait(); // 1: allocated
                step.wait(); // 2: main measured the peak
                let mut freed = 0;
                for src in 0..THREADS {
                    let head = lists.heads[src * THREADS + t].swap(0, Relaxed);
                    freed += unsafe { free_list(&inst, head as *mut u8) };
                }
                assert!(freed > 0);
                step.wait(); // 3: everything but the survivors freed
                             // Sends what we freed into others' heaps: remote frees wait
                             // in the freeing heap until its next slow path or trim.
                inst.trim();
                step.wait(); // 3b: every thread sent its frees
                inst.trim(); // collects what others freed into our heap
                inst.check().unwrap();
                step.wait(); // 4: trimmed; main measures
                step.wait(); // 5: go on
                let s = lists.survivors[t].swap(0, Relaxed);
                unsafe { free_list(&inst, s as *mut u8) };
                inst.trim();
                step.wait(); // 6: all freed and trimmed; main measures
                step.wait(); // 7: main done; exit
            })
        })
        .collect();

    step.wait(); // 1
    let peak = rss();
    let s_peak = inst.stats();
    step.wait(); // 2
    step.wait(); // 3
    step.wait(); // 3b
    step.wait(); // 4
    inst.trim();
    let sparse = rss();
    let sparse_lazy = lazy_free();
    let s_sparse = inst.stats();
    step.wait(); // 5
    step.wait(); // 6
    inst.trim();
    let all = rss();
    let s_all = inst.stats();
    step.wait(); // 7
    for w in workers {
        w.join().unwrap();
    }

    let f = Figures {
        baseline,
        peak,
        sparse,
        sparse_lazy,
        all,
    };
    if bytes == TOTAL {
        eprintln!(
            "{how:?}: RSS baseline {}, peak {}, after sparse free + trim {} (of which LazyFree {}), \
             after full free + trim {}",
            mib(baseline),
            mib(peak),
            mib(sparse),
            sparse_lazy.map_or("unknown".into(), mib),
            mib(all)
        );
        eprintln!("{how:?}: stats at peak\n{s_peak}");
        eprintln!("{how:?}: stats after sparse free + trim\n{s_sparse}");
        eprintln!("{how:?}: stats after full free + trim\n{s_all}");
    }

    // emma's own figures, in both modes.
    assert!(s_peak.committed >= bytes, "{s_peak:?}");
    assert!(
        s_sparse.segments > 0,
        "survivors keep segments: {s_sparse:?}"
    );
    assert!(
        s_sparse.purged >= s_peak.purged + bytes * 3 / 4,
        "trim purged too little: {s_peak:?} -> {s_sparse:?}"
    );
    assert_eq!(s_all.segments, 0, "{s_all:?}");
    assert_eq!(s_all.mapped, s_all.meta, "{s_all:?}");
    assert_eq!(s_all.committed, s_all.meta, "{s_all:?}");
    assert_eq!(s_all.failures, 0);
    f
}

#[test]
fn memory_goes_back_to_the_os() {
    for how in [Purge::DontNeed, Purge::Free] {
        // Warm up at small scale (threads, the harness, page tables), then
        // the real round. One instance per mode.
        let f = match how {
            Purge::DontNeed => {
                round(DontNeedHeap, how, 8 * MIB);
                round(DontNeedHeap, how, TOTAL)
            }
            Purge::Free => {
                round(FreeHeap, how, 8 * MIB);
                round(FreeHeap, how, TOTAL)
            }
        };
        assert!(
            f.peak >= f.baseline + TOTAL,
            "{how:?}: RSS did not grow: {f:?}"
        );
        if how == Purge::DontNeed {
            // Segments stay mapped, but their free slices are given back.
            assert!(
                f.sparse <= f.baseline + SLACK,
                "{how:?}: RSS stayed up after trim: {f:?}"
            );
        } else if let Some(lazy) = f.sparse_lazy {
            // RSS may stay up, but the kernel knows it may take it back.
            assert!(
                f.sparse.saturating_sub(lazy) <= f.baseline + SLACK,
                "{how:?}: too little marked lazily freeable: {f:?}"
            );
        }
        // Everything unmapped: RSS back in both modes.
        assert!(f.all <= f.baseline + SLACK, "{how:?}: RSS stayed up: {f:?}");
    }
}
