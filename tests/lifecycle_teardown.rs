//! Teardown and release: one instance of three is torn down while threads
//! keep working on the other two, whose data stays intact; the torn-down
//! instance holds nothing but its heap metadata afterwards and works again
//! from scratch, on old and new threads. `release_all` leaves no mapping
//! at all. Both report the blocks that were still live (leaks).
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use emma::{Instance, InstanceExt, Live, Stats};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};

const MIB: usize = 1 << 20;

emma::emma_instance!(Keep1);
emma::emma_instance!(Keep2);
emma::emma_instance!(Gone);
emma::emma_instance!(Unloaded);
emma::emma_instance!(Cycled);
emma::emma_instance!(NeverUsed);
emma::emma_instance!(Reclaimed);
emma::emma_instance!(Leaky);
emma::emma_instance!(LeakyPlugin);

/// The tests here look at the process's mappings: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- blocks with checkable contents ------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A live block and the seed of its contents.
#[derive(Clone, Copy, Debug)]
struct Block {
    p: usize,
    layout: Layout,
    seed: u64,
}

unsafe impl Send for Block {}

impl Block {
    fn new<I: GlobalAlloc>(inst: &I, size: usize, align: usize, seed: u64) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = unsafe { inst.alloc(layout) };
        assert!(!p.is_null(), "allocation of {size} failed");
        let b = Block {
            p: p as usize,
            layout,
            seed,
        };
        b.fill();
        b
    }

    fn words(&self) -> impl Iterator<Item = (usize, u64)> {
        let seed = self.seed;
        (0..self.layout.size() / 8).map(move |i| (i, splitmix(seed ^ i as u64)))
    }

    fn fill(&self) {
        let p = self.p as *mut u64;
        for (i, w) in self.words() {
            unsafe { p.add(i).write_unaligned(w) };
        }
        for i in self.layout.size() / 8 * 8..self.layout.size() {
            unsafe { (self.p as *mut u8).add(i).write(self.seed as u8) };
        }
    }

    fn verify(&self) {
        let p = self.p as *const u64;
        for (i, w) in self.words() {
            let got = unsafe { p.add(i).read_unaligned() };
            assert_eq!(
                got, w,
                "block {:#x} ({:?}) corrupted at word {i}",
                self.p, self.layout
            );
        }
        for i in self.layout.size() / 8 * 8..self.layout.size() {
            assert_eq!(unsafe { *(self.p as *const u8).add(i) }, self.seed as u8);
        }
    }

    unsafe fn free<I: GlobalAlloc>(self, inst: &I) {
        self.verify();
        unsafe { inst.dealloc(self.p as *mut u8, self.layout) };
    }
}

/// A data set of small, medium, aligned and huge blocks.
fn data_set<I: GlobalAlloc>(inst: &I, seed: u64) -> Vec<Block> {
    let mut v = Vec::new();
    for i in 0..3000u64 {
        let r = splitmix(seed + i);
        let size = 1 + (r % 2000) as usize;
        let align = 1 << ((r >> 60) % 8); // up to 128
        v.push(Block::new(inst, size, align, r));
    }
    for i in 0..20u64 {
        let r = splitmix(seed + 10_000 + i);
        v.push(Block::new(
            inst,
            16 * 1024 + (r % MIB as u64) as usize,
            16,
            r,
        ));
    }
    v.push(Block::new(inst, 4096, 65536, seed + 1));
    for (i, size) in [2 * MIB, 5 * MIB + 3, 9 * MIB].into_iter().enumerate() {
        v.push(Block::new(inst, size, 64, seed + 100 + i as u64));
    }
    v.push(Block::new(inst, 3 * MIB, 8 * MIB, seed + 200));
    v
}

fn verify_all(v: &[Block]) {
    for b in v {
        b.verify();
    }
}

fn mappings<I: Instance>(inst: I) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    inst.for_each_mapping(|b, l| v.push((b, l)));
    v
}

/// Only the heap metadata is left: the state teardown promises.
fn assert_torn_down(s: Stats) {
    assert_eq!(s.live, Live::default(), "{s:?}");
    assert_eq!(s.mapped, s.meta, "{s:?}");
    assert_eq!(s.committed, s.meta, "{s:?}");
    assert_eq!(
        (s.segments, s.huge_blocks, s.huge_bytes, s.pages),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

/// Allocation churn on one instance until `stop`: a window of live blocks,
/// each checked before it is freed, and some handed to the other worker of
/// the same instance to free (`mailbox`).
fn churn<I: GlobalAlloc + Copy>(
    inst: I,
    seed: u64,
    stop: Arc<AtomicBool>,
    mailbox: Arc<Mutex<Vec<Block>>>,
    rounds: Arc<AtomicUsize>,
) {
    let mut live: Vec<Block> = Vec::new();
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        let r = splitmix(seed ^ i);
        i += 1;
        let size = match r % 100 {
            0 => 2 * MIB + (r >> 40) as usize % MIB,
            1..=5 => 8 * 1024 + (r >> 40) as usize % (256 * 1024),
            _ => 8 + (r >> 40) as usize % 1024,
        };
        live.push(Block::new(&inst, size, 16, r));
        if live.len() > 400 {
            let b = live.swap_remove((r >> 8) as usize % live.len());
            if r.is_multiple_of(4) {
                mailbox.lock().unwrap().push(b);
            } else {
                unsafe { b.free(&inst) };
            }
        }
        if i.is_multiple_of(64) {
            let theirs = std::mem::take(&mut *mailbox.lock().unwrap());
            for b in theirs {
                unsafe { b.free(&inst) };
            }
            rounds.fetch_add(1, Relaxed);
        }
    }
    for b in live {
        unsafe { b.free(&inst) };
    }
}

#[test]
fn teardown_one_instance_while_others_work() {
    let _serial = serial();
    const GONE_THREADS: usize = 2;

    // Data in all three instances, from the main thread.
    let keep1 = data_set(&Keep1, 1);
    let keep2 = data_set(&Keep2, 2);
    let gone = data_set(&Gone, 3);

    // Threads that use `Gone` and then wait, alive, through the teardown;
    // each leaves blocks of its own and blocks freed by the other (pending
    // in its heap's inbox).
    let parked = Arc::new(Barrier::new(GONE_THREADS + 1));
    let resume = Arc::new(Barrier::new(GONE_THREADS + 1));
    let swap: Arc<Mutex<Vec<Block>>> = Arc::default();
    let gone_threads: Vec<_> = (0..GONE_THREADS)
        .map(|t| {
            let (parked, resume, swap) = (parked.clone(), resume.clone(), swap.clone());
            std::thread::spawn(move || {
                let mine = data_set(&Gone, 10 + t as u64);
                swap.lock().unwrap().extend_from_slice(&mine[..1000]);
                parked.wait(); // both published
                let theirs: Vec<Block> = {
                    let mut s = swap.lock().unwrap();
                    let at = s
                        .iter()
                        .position(|b| !mine.iter().any(|m| m.p == b.p))
                        .unwrap();
                    s.drain(at..at + 1000).collect()
                };
                for b in theirs {
                    unsafe { b.free(&Gone) }; // remote frees, left pending
                }
                parked.wait(); // ready for the teardown
                resume.wait(); // torn down: `mine` is dead, leak it
                std::mem::forget(mine);
                // Same thread, fresh instance.
                let again = data_set(&Gone, 20 + t as u64);
                verify_all(&again);
                Gone.check().unwrap();
                for b in again {
                    unsafe { b.free(&Gone) };
                }
                Gone.trim();
            })
        })
        .collect();
    parked.wait();
    parked.wait();

    // Workers churning the two other instances, through the teardown.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds: Arc<AtomicUsize> = Arc::default();
    let mailboxes: [Arc<Mutex<Vec<Block>>>; 2] = Default::default();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            let mailbox = mailboxes[w as usize % 2].clone();
            std::thread::spawn(move || {
                if w % 2 == 0 {
                    churn(Keep1, w, stop, mailbox, rounds)
                } else {
                    churn(Keep2, w, stop, mailbox, rounds)
                }
            })
        })
        .collect();
    while rounds.load(Relaxed) < 40 {
        std::thread::yield_now();
    }

    // Tear `Gone` down: every block of it is dead from here on.
    let before = Gone.stats();
    let before_maps = mappings(Gone);
    assert!(before.segments > 0 && before.huge_blocks >= 4, "{before:?}");
    let heaps = before.heaps;
    assert_eq!(heaps, 1 + GONE_THREADS);
    unsafe { Gone.teardown() };
    let rounds_at_teardown = rounds.load(Relaxed);

    let s = Gone.stats();
    assert_torn_down(s);
    assert_eq!(s.heaps, heaps, "heaps stay, emptied");
    assert_eq!(mappings(Gone), [], "mappings left after teardown");
    for b in &gone {
        assert!(!Gone.owns(b.p as *const u8), "{b:?} still owned");
    }
    std::mem::forget(gone);
    drop(before_maps);

    // The other instances kept working and kept their data.
    while rounds.load(Relaxed) < rounds_at_teardown + 40 {
        std::thread::yield_now();
    }
    verify_all(&keep1);
    verify_all(&keep2);
    assert!(keep1.iter().all(|b| Keep1.owns(b.p as *const u8)));
    assert!(keep2.iter().all(|b| Keep2.owns(b.p as *const u8)));

    // `Gone` works again from scratch: from the main thread ...
    let fresh = data_set(&Gone, 4);
    verify_all(&fresh);
    assert!(fresh.iter().all(|b| Gone.owns(b.p as *const u8)));
    Gone.check().unwrap();
    // ... from the threads that used it before ...
    resume.wait();
    for t in gone_threads {
        t.join().unwrap();
    }
    // ... and from new threads.
    let new_threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let v = data_set(&Gone, 30 + t);
                verify_all(&v);
                v
            })
        })
        .collect();
    for t in new_threads {
        for b in t.join().unwrap() {
            unsafe { b.free(&Gone) }; // remote frees into exited threads' heaps
        }
    }
    let s = Gone.stats();
    assert!(s.heaps <= heaps + 3, "heaps were not reused: {s:?}");
    verify_all(&fresh);
    for b in fresh {
        unsafe { b.free(&Gone) };
    }
    Gone.trim();
    Gone.check().unwrap();

    // Stop the workers; the surviving instances still hold their data and
    // keep allocating.
    stop.store(true, Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for m in &mailboxes {
        for b in m.lock().unwrap().drain(..) {
            let inst_is_1 = Keep1.owns(b.p as *const u8);
            unsafe {
                if inst_is_1 {
                    b.free(&Keep1)
                } else {
                    b.free(&Keep2)
                }
            };
        }
    }
    verify_all(&keep1);
    verify_all(&keep2);
    let more1 = data_set(&Keep1, 5);
    let more2 = data_set(&Keep2, 6);
    for (inst_blocks, inst) in [(keep1, 1), (more1, 1), (keep2, 2), (more2, 2)] {
        for b in inst_blocks {
            if inst == 1 {
                unsafe { b.free(&Keep1) }
            } else {
                unsafe { b.free(&Keep2) }
            }
        }
    }
    Keep1.trim();
    Keep2.trim();
    Keep1.check().unwrap();
    Keep2.check().unwrap();
}

/// After teardown "the instance can be used again from scratch by any
/// thread", concurrently: a thread that used the instance before the
/// teardown frees blocks the main thread allocates afterwards, while the
/// main thread keeps allocating. Those frees are cross-thread frees and
/// must take the remote path; no block may be handed out twice.
#[test]
fn teardown_then_old_thread_and_new_owner_concurrently() {
    let _serial = serial();
    const ROUNDS: usize = 5000;
    const BATCH: usize = 64;
    let l = Layout::from_size_align(48, 8).unwrap();
    unsafe { Reclaimed.dealloc(Reclaimed.alloc(l), l) }; // main's heap
    let ready = Arc::new(Barrier::new(2));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let old = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            unsafe { Reclaimed.dealloc(Reclaimed.alloc(l), l) }; // its heap, made last
            ready.wait(); // main tears down
            let mut n = 0;
            for batch in rx {
                for p in batch {
                    unsafe { Reclaimed.dealloc(p as *mut u8, l) };
                    n += 1;
                }
            }
            // Remote frees are handed over in batches; trim hands over the
            // last, partial one.
            Reclaimed.trim();
            n
        })
    };
    ready.wait();
    unsafe { Reclaimed.teardown() };

    let mut live = std::collections::HashSet::new();
    for round in 0..ROUNDS {
        let mut theirs = Vec::with_capacity(BATCH / 2);
        let mut mine = Vec::with_capacity(BATCH / 2);
        for i in 0..BATCH {
            let p = unsafe { Reclaimed.alloc(l) } as usize;
            assert!(
                live.insert(p),
                "round {round}: block {p:#x} handed out twice"
            );
            if i % 2 == 0 {
                theirs.push(p)
            } else {
                mine.push(p)
            }
        }
        for p in &theirs {
            live.remove(p);
        }
        tx.send(theirs).unwrap();
        for p in mine {
            live.remove(&p);
            unsafe { Reclaimed.dealloc(p as *mut u8, l) };
        }
    }
    drop(tx);
    let freed_by_old = old.join().unwrap();
    Reclaimed.trim();
    Reclaimed.check().unwrap();
    let s = Reclaimed.stats();
    assert!(
        s.remote_frees >= freed_by_old,
        "{freed_by_old} blocks freed by another thread, only {} went the remote path: {s:?}",
        s.remote_frees
    );
    assert_eq!(s.pages, 0, "{s:?}");
}

/// Repeated teardown and reuse: nothing accumulates, and teardown of an
/// instance that was never used (or was just torn down) is harmless.
#[test]
fn teardown_cycles_do_not_accumulate() {
    let _serial = serial();
    unsafe { NeverUsed.teardown() };
    assert_eq!(NeverUsed.stats(), Stats::default());
    let p = Block::new(&NeverUsed, 100, 8, 1);
    unsafe { p.free(&NeverUsed) };

    let mut meta = None;
    for cycle in 0..20u64 {
        // Blocks from the main thread and from a short-lived thread.
        let mine = data_set(&Cycled, cycle);
        let theirs = std::thread::spawn(move || data_set(&Cycled, 1000 + cycle))
            .join()
            .unwrap();
        verify_all(&mine);
        verify_all(&theirs);
        unsafe { Cycled.teardown() };
        unsafe { Cycled.teardown() }; // twice: still fine
        std::mem::forget((mine, theirs));
        let s = Cycled.stats();
        assert_torn_down(s);
        assert_eq!(mappings(Cycled), []);
        assert!(s.heaps <= 3, "{s:?}");
        assert_eq!(
            *meta.get_or_insert(s.meta),
            s.meta,
            "metadata grows per cycle"
        );
    }
}

/// `release_all` from a thread that never used the instance, after the
/// threads that did have exited: not a single mapping stays.
#[test]
fn release_all_leaves_nothing_mapped() {
    let _serial = serial();
    let users: Vec<_> = (0..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                let v = data_set(&Unloaded, 50 + t);
                // Leave most of it live (dead after release_all), free some.
                for b in v[..500].iter().copied() {
                    unsafe { b.free(&Unloaded) };
                }
                std::mem::forget(v);
            })
        })
        .collect();
    for u in users {
        u.join().unwrap();
    }
    let s = Unloaded.stats();
    assert!(
        s.segments > 0 && s.huge_blocks > 0 && s.meta > 0 && s.heaps >= 1,
        "{s:?}"
    );
    let old = mappings(Unloaded);
    assert!(!old.is_empty());

    // The releasing thread never allocated from `Unloaded`.
    std::thread::spawn(|| unsafe { Unloaded.release_all() })
        .join()
        .unwrap();

    let s = Unloaded.stats();
    assert_eq!(
        (
            s.mapped,
            s.meta,
            s.committed,
            s.segments,
            s.huge_blocks,
            s.huge_bytes,
            s.heaps
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(mappings(Unloaded), []);
    // The kernel agrees: nothing is mapped where the instance's mappings were.
    let maps = common::proc_maps();
    for &(base, len) in &old {
        assert!(!Unloaded.owns((base + 4096) as *const u8));
        for &(start, end) in &maps {
            assert!(
                end <= base || start >= base + len,
                "{base:#x}+{len:#x} still mapped ({start:#x}-{end:#x})"
            );
        }
    }

    // Threads that never used it may use it again.
    let v = std::thread::spawn(|| {
        let v = data_set(&Unloaded, 60);
        verify_all(&v);
        Unloaded.check().unwrap();
        let s = Unloaded.stats();
        assert!(s.heaps == 1 && s.mapped > s.meta, "{s:?}");
        v
    })
    .join()
    .unwrap();
    for b in v {
        unsafe { b.free(&Unloaded) }; // from the main thread: remote frees
    }
}

/// The usable bytes of `blocks` in `inst`.
fn usable<I: Instance>(inst: I, blocks: &[Block]) -> usize {
    blocks
        .iter()
        .map(|b| unsafe { inst.usable_size(b.p as *mut u8) })
        .sum()
}

/// `teardown` and `release_all` return the blocks nobody freed: exactly
/// those, when every thread's frees were collected; nothing when called
/// again.
#[test]
#[cfg_attr(
    feature = "hardened",
    ignore = "hardened's usable_size is the requested size, live bytes count whole blocks"
)]
fn teardown_and_release_all_report_leaks() {
    let _serial = serial();
    for (release, seed) in [(false, 70), (true, 80)] {
        let mut v = std::thread::spawn(move || {
            if release {
                data_set(&LeakyPlugin, seed)
            } else {
                data_set(&Leaky, seed)
            }
        })
        .join()
        .unwrap();
        let mine = if release {
            data_set(&LeakyPlugin, seed + 1)
        } else {
            data_set(&Leaky, seed + 1)
        };
        // Free a third of each set; the rest leaks.
        let leaked: Vec<Block> = v
            .drain(..)
            .chain(mine)
            .enumerate()
            .filter_map(|(i, b)| {
                if i % 3 == 0 {
                    unsafe {
                        if release {
                            b.free(&LeakyPlugin)
                        } else {
                            b.free(&Leaky)
                        }
                    };
                    None
                } else {
                    Some(b)
                }
            })
            .collect();
        let want = Live {
            blocks: leaked.len(),
            bytes: if release {
                usable(LeakyPlugin, &leaked)
            } else {
                usable(Leaky, &leaked)
            },
        };
        // Frees into the exited thread's heap wait in its inbox (and in
        // our batch) until collected: with `tls`, `trim` collects them.
        let got = if release {
            LeakyPlugin.trim();
            unsafe { LeakyPlugin.release_all() }
        } else {
            Leaky.trim();
            unsafe { Leaky.teardown() }
        };
        std::mem::forget(leaked);
        if cfg!(feature = "tls") {
            assert_eq!(got, want, "release_all: {release}");
        } else {
            assert!(
                got.blocks >= want.blocks && got.bytes >= want.bytes,
                "{got:?} < {want:?}"
            );
        }
        let again = if release {
            unsafe { LeakyPlugin.release_all() }
        } else {
            unsafe { Leaky.teardown() }
        };
        assert_eq!(again, Live::default());
    }
}
