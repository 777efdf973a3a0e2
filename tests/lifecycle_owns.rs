//! `owns(p)`: true for every byte of every live block of the instance,
//! false for blocks of other instances and for every pointer emma never
//! handed out (stack, statics, code, the system allocator, null, small and
//! huge integers, kernel and non-canonical addresses), and safe to ask
//! about any value. Freed blocks stop being owned once their mapping is
//! unmapped (after `trim`); while a freed block's memory is still cached
//! the answer may be either, so only the unmapped case is asserted.
#![allow(clippy::undocumented_unsafe_blocks)]

use emma::{Instance, InstanceExt, MAX_CLASS_SIZE};
use std::alloc::{GlobalAlloc, Layout, System};

const MIB: usize = 1 << 20;

emma::emma_instance!(Mine);
emma::emma_instance!(Theirs);
emma::emma_instance!(Trimmed);
emma::emma_instance!(Unused);
emma::emma_instance!(Trimmed2);
emma::emma_instance!(Odd);
emma::emma_instance!(Odd2);

static STATIC_BYTES: [u8; 64] = [7; 64];
static mut STATIC_MUT: [u64; 8] = [0; 8];

/// Block shapes: small, medium, the largest class, over-aligned, and huge
/// blocks whose mappings are whole 4 MiB chunks (cached and uncached
/// sizes, aligned within and beyond a segment). `owns` is exact for these.
fn layouts() -> Vec<Layout> {
    let mut v: Vec<Layout> = [1, 8, 16, 17, 100, 1024, 1025, 4000, 16 * 1024, 100_000]
        .iter()
        .map(|&s| Layout::from_size_align(s, 8).unwrap())
        .collect();
    for (size, align) in [
        (MAX_CLASS_SIZE, 16),
        (32, 4096),
        (5000, 65536),
        (4 * MIB - 4096, 16),  // header page + block = 4 MiB
        (12 * MIB - 4096, 8),  // cached size
        (3 * MIB, MIB),        // block at 1 MiB into its 4 MiB
        (300 * MIB - 4096, 8), // too large for the cache
        (8 * MIB, 16 * MIB),   // header chunk + 8 MiB
    ] {
        v.push(Layout::from_size_align(size, align).unwrap());
    }
    v
}

/// Huge blocks whose mappings end inside a 4 MiB chunk. `owns` covers
/// them wholly; past their end see `owns_stops_at_the_end_of_a_huge_mapping`.
fn odd_layouts() -> Vec<Layout> {
    [
        (MAX_CLASS_SIZE + 1, 16),
        (3 * MIB, 8),
        (5 * MIB + 17, 64),
        (40 * MIB, 8),
        (MIB, 8 * MIB),
        (9 * MIB, 32 * MIB),
    ]
    .iter()
    .map(|&(s, a)| Layout::from_size_align(s, a).unwrap())
    .collect()
}

/// Pointers into a block: first, middle and last byte, and every 4 MiB.
fn probes(p: *mut u8, l: Layout) -> Vec<*const u8> {
    let mut v = vec![
        p as *const u8,
        p.wrapping_add(l.size() / 2),
        p.wrapping_add(l.size() - 1),
    ];
    v.extend(
        (0..l.size())
            .step_by(4 * MIB)
            .map(|o| p.wrapping_add(o) as *const u8),
    );
    v
}

fn alloc_all<I: GlobalAlloc>(inst: &I, layouts: Vec<Layout>) -> Vec<(*mut u8, Layout)> {
    layouts
        .into_iter()
        .map(|l| {
            let p = unsafe { inst.alloc(l) };
            assert!(!p.is_null(), "{l:?}");
            assert_eq!(p as usize % l.align(), 0);
            (p, l)
        })
        .collect()
}

/// Addresses emma never hands out, whoever asks.
fn foreign_pointers() -> Vec<(String, usize)> {
    let stack = 0u64;
    let boxed = Box::new([0u8; 100]);
    let sys_small = unsafe { System.alloc(Layout::from_size_align(64, 8).unwrap()) };
    let big = Layout::from_size_align(64 * MIB, 8).unwrap();
    let sys_big = unsafe { System.alloc(big) }; // glibc: a mapping of its own
    let v = vec![
        ("null".into(), 0),
        ("1".into(), 1),
        ("4095".into(), 4095),
        ("4 MiB".into(), 4 * MIB),
        ("stack".into(), &stack as *const u64 as usize),
        ("static".into(), STATIC_BYTES.as_ptr() as usize),
        ("static mut".into(), std::ptr::addr_of!(STATIC_MUT) as usize),
        ("code".into(), foreign_pointers as fn() -> _ as usize),
        ("boxed".into(), &*boxed as *const [u8; 100] as usize),
        ("System small".into(), sys_small as usize),
        ("System big".into(), sys_big as usize),
        ("System big, end".into(), sys_big as usize + big.size() - 1),
        ("last user page".into(), 0x7fff_ffff_f000),
        ("2^47".into(), 1 << 47),
        ("2^47 + 4 MiB".into(), (1 << 47) + 4 * MIB),
        ("2^63".into(), 1 << 63),
        ("kernel half".into(), 0xffff_8000_0000_0000),
        ("kernel text".into(), 0xffff_ffff_8100_0000),
        ("usize::MAX - 4095".into(), usize::MAX - 4095),
        ("usize::MAX".into(), usize::MAX),
    ];
    unsafe {
        System.dealloc(sys_small, Layout::from_size_align(64, 8).unwrap());
        System.dealloc(sys_big, big);
    }
    v
}

fn assert_foreign<I: Instance>(inst: I, name: &str) {
    for (what, addr) in foreign_pointers() {
        assert!(
            !inst.owns(addr as *const u8),
            "{name} claims {what} ({addr:#x})"
        );
    }
}

#[test]
fn owns_exactly_its_own_blocks() {
    // A thread that never allocates from either instance, started first
    // (its stack then cannot sit in a gap next to a huge block, see
    // `owns_stops_at_the_end_of_a_huge_mapping`).
    let (tx, rx) = std::sync::mpsc::channel::<Vec<(usize, usize)>>();
    let other = std::thread::spawn(move || {
        for (p, size) in rx.recv().unwrap() {
            assert!(Mine.owns(p as *const u8) && Mine.owns((p + size - 1) as *const u8));
            assert!(!Theirs.owns(p as *const u8));
        }
        assert_foreign(Mine, "Mine, from another thread");
    });

    let mine = alloc_all(&Mine, layouts());
    let theirs = alloc_all(&Theirs, layouts());
    for &(p, l) in &mine {
        for q in probes(p, l) {
            assert!(Mine.owns(q), "{l:?} at {p:p}: {q:p} not owned");
            assert!(
                !Theirs.owns(q),
                "{l:?} at {p:p}: {q:p} owned by the other instance"
            );
            assert!(!Unused.owns(q));
        }
    }
    for &(p, l) in &theirs {
        for q in probes(p, l) {
            assert!(Theirs.owns(q) && !Mine.owns(q), "{l:?} at {p:p}: {q:p}");
        }
    }
    assert_foreign(Mine, "Mine");
    assert_foreign(Theirs, "Theirs");
    assert_foreign(Unused, "an unused instance");

    // Every owned probe lies in a mapping the instance reports.
    let mut maps = Vec::new();
    Mine.for_each_mapping(|b, l| maps.push((b, l)));
    for &(p, l) in &mine {
        for q in probes(p, l) {
            let q = q as usize;
            assert!(
                maps.iter().any(|&(b, len)| (b..b + len).contains(&q)),
                "{q:#x}"
            );
        }
    }

    // From the thread that never allocated from either instance.
    tx.send(mine.iter().map(|&(p, l)| (p as usize, l.size())).collect())
        .unwrap();
    other.join().unwrap();

    for (p, l) in mine {
        unsafe { Mine.dealloc(p, l) };
    }
    for (p, l) in theirs {
        unsafe { Theirs.dealloc(p, l) };
    }
}

/// Huge blocks of any size are owned to their last byte, and only by
/// their instance.
#[test]
fn owns_covers_huge_blocks_of_any_size() {
    let blocks = alloc_all(&Odd2, odd_layouts());
    for &(p, l) in &blocks {
        for q in probes(p, l) {
            assert!(Odd2.owns(q), "{l:?} at {p:p}: {q:p} not owned");
            assert!(!Unused.owns(q));
        }
    }
    for (p, l) in blocks {
        unsafe { Odd2.dealloc(p, l) };
    }
}

/// Any value at all may be asked about: no fault, and no claim on
/// addresses that are not user-space addresses.
#[test]
fn owns_is_safe_for_any_value() {
    let keep = alloc_all(&Odd, [layouts(), odd_layouts()].concat());
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut owned = 0;
    for i in 0..1_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = match i % 4 {
            0 => x as usize,
            1 => x as usize & ((1 << 47) - 1), // user half
            2 => (x as usize) | (1 << 63),     // kernel half / non-canonical
            _ => keep[i as usize % keep.len()].0 as usize ^ (x as usize & 0xfff_ffff), // near blocks
        };
        let o = Odd.owns(a as *const u8);
        if a >> 47 != 0 {
            assert!(!o, "non-user address {a:#x} owned");
        }
        owned += o as usize;
    }
    assert!(owned > 0, "no probe near the live blocks was owned");
    for (p, l) in keep {
        unsafe { Odd.dealloc(p, l) };
    }
}

/// Once freed blocks' mappings are gone (`trim`), they are not owned any
/// more; huge blocks too large for the cache are unmapped at once.
#[test]
fn freed_and_trimmed_blocks_are_not_owned() {
    // Small blocks from one thread (the instance is used by no other).
    let small = Layout::from_size_align(200, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..50_000)
        .map(|_| unsafe { Trimmed.alloc(small) })
        .collect();
    assert!(blocks.iter().all(|&p| Trimmed.owns(p)));

    // Too large for the huge-block cache: unmapped by the free itself.
    let uncached = Layout::from_size_align(300 * MIB, 8).unwrap();
    let u = unsafe { Trimmed.alloc(uncached) };
    assert!(Trimmed.owns(u) && Trimmed.owns(u.wrapping_add(300 * MIB - 1)));
    unsafe { Trimmed.dealloc(u, uncached) };
    assert!(!Trimmed.owns(u) && !Trimmed.owns(u.wrapping_add(300 * MIB - 1)));

    // Cacheable: may still be owned after the free (cached), not after trim.
    let cached = Layout::from_size_align(6 * MIB, 8).unwrap();
    let c = unsafe { Trimmed.alloc(cached) };
    unsafe { Trimmed.dealloc(c, cached) };

    for &p in &blocks {
        unsafe { Trimmed.dealloc(p, small) };
    }
    Trimmed.trim();
    assert_eq!(Trimmed.stats().segments, 0);
    assert!(!Trimmed.owns(c) && !Trimmed.owns(c.wrapping_add(5 * MIB)));
    for &p in &blocks {
        assert!(!Trimmed.owns(p), "{p:p} still owned after trim");
    }
    let mut n = 0;
    Trimmed.for_each_mapping(|_, _| n += 1);
    assert_eq!(n, 0);
}

/// `owns` is answered per 4 MiB chunk, so a huge mapping must cover whole
/// chunks: otherwise the rest of its last chunk is free address space where
/// the kernel puts other mappings (a new thread's stack, say), and `owns`
/// would claim them.
#[test]
fn owns_stops_at_the_end_of_a_huge_mapping() {
    let l = Layout::from_size_align(40 * MIB + 12_345, 8).unwrap();
    let p = unsafe { Trimmed2.alloc(l) };
    let mut maps = Vec::new();
    Trimmed2.for_each_mapping(|b, len| maps.push((b, len)));
    let &(base, len) = maps
        .iter()
        .find(|&&(b, len)| b < p as usize && p as usize - b < len)
        .unwrap();
    let end = base + len;
    assert!(end.is_multiple_of(4 * MIB), "mapping ends mid-chunk");
    assert!(Trimmed2.owns((end - 1) as *const u8));
    // Whatever lies just past the mapping (another library's mapping, a
    // thread's stack, or nothing) is not ours, unless it is another mapping
    // of this very instance.
    let next_is_ours = maps.iter().any(|&(b, _)| b == end);
    assert_eq!(Trimmed2.owns(end as *const u8), next_is_ours);
    unsafe { Trimmed2.dealloc(p, l) };
}
