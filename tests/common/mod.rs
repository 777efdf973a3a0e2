//! Helpers shared by the integration tests: a seeded PRNG, byte patterns
//! that prove a block kept its contents, cookies for blocks that travel
//! between threads, the size-class boundaries, and a type-erased handle on
//! an instance so one test can drive several instances at once.
//!
//! Every test binary includes this module and uses a different part of it,
//! hence the `dead_code` allowance (tests/common is not a test itself).
#![allow(dead_code)]
#![allow(clippy::undocumented_unsafe_blocks)]

use core::alloc::{GlobalAlloc, Layout};
use emma::{InstanceExt, Stats};

// ---- scale -------------------------------------------------------------

/// `EMMA_TEST_SCALE` (default 1): multiplies the iteration counts of the
/// random and stress tests (e.g. `EMMA_TEST_SCALE=50` for a soak run).
pub fn scale() -> usize {
    std::env::var("EMMA_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(1)
}

/// `n` iterations scaled by [`scale`], and cut by 8 in unoptimised builds
/// (the pattern loops are 20x slower there), but never below 1.
pub fn scaled(n: usize) -> usize {
    let cut = if unoptimised() { 8 } else { 1 };
    (n * scale() / cut).max(1)
}

/// Whether this test binary was built by the `dev`/`test` profile (it lives
/// in `target/debug/`). Not `cfg!(debug_assertions)`: CI's optimised
/// profile keeps debug assertions on and must run the full counts.
pub fn unoptimised() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.file_name()? == "debug"))
        .unwrap_or(false)
}

// ---- PRNG --------------------------------------------------------------

/// xorshift64* (Vigna): tiny, deterministic, good enough to drive tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero (a fixed point of xorshift), and seeds 1, 2, 3 start far apart.
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    /// A request size skewed like real programs: mostly tiny, some medium,
    /// a few large, rarely huge (beyond [`emma::MAX_CLASS_SIZE`]).
    pub fn size(&mut self) -> usize {
        match self.below(1000) {
            0..=599 => self.range(1, 128),
            600..=879 => self.range(129, 4096),
            880..=969 => self.range(4097, 64 << 10),
            970..=993 => self.range((64 << 10) + 1, emma::MAX_CLASS_SIZE),
            _ => self.range(emma::MAX_CLASS_SIZE + 1, 6 << 20),
        }
    }

    /// An alignment: mostly at most the minimum, sometimes up to a slice
    /// (served from pages), rarely beyond (huge blocks).
    pub fn align(&mut self) -> usize {
        let shift = match self.below(100) {
            0..=69 => self.range(0, 4),
            70..=91 => self.range(5, 12),
            92..=97 => self.range(13, 16),
            _ => self.range(17, 23),
        };
        1 << shift
    }
}

/// splitmix64's finaliser: a bijective scrambler of 64-bit values.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---- patterns ----------------------------------------------------------
//
// A pattern is a function of (seed, offset): word k of a block holds
// `mix(seed ^ k * GOLDEN)`, byte j is byte j % 8 of word j / 8 (little
// endian). Offsets, not addresses, so a pattern survives a moving realloc;
// seeding with the address makes it address-derived where that is wanted.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn word(seed: u64, k: usize) -> u64 {
    mix(seed ^ (k as u64).wrapping_mul(GOLDEN))
}

#[inline(always)]
fn byte(seed: u64, j: usize) -> u8 {
    (word(seed, j / 8) >> (8 * (j % 8))) as u8
}

/// Writes the pattern `seed` over bytes `from..to` of the block at `p`
/// (`p` 8-byte aligned, as every emma block is).
///
/// # Safety
/// `p + from .. p + to` is writable.
pub unsafe fn fill_range(p: *mut u8, from: usize, to: usize, seed: u64) {
    debug_assert_eq!(p as usize % 8, 0);
    let mut j = from;
    unsafe {
        while j < to && !j.is_multiple_of(8) {
            p.add(j).write(byte(seed, j));
            j += 1;
        }
        while j + 8 <= to {
            p.add(j).cast::<u64>().write(word(seed, j / 8));
            j += 8;
        }
        while j < to {
            p.add(j).write(byte(seed, j));
            j += 1;
        }
    }
}

/// Writes the pattern over the first `len` bytes of `p`.
///
/// # Safety
/// As for [`fill_range`].
pub unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    unsafe { fill_range(p, 0, len, seed) }
}

/// The first offset in `from..to` where the block at `p` differs from the
/// pattern, if any.
///
/// # Safety
/// `p + from .. p + to` is readable.
pub unsafe fn first_mismatch(p: *const u8, from: usize, to: usize, seed: u64) -> Option<usize> {
    let mut j = from;
    unsafe {
        while j < to && !j.is_multiple_of(8) {
            if p.add(j).read() != byte(seed, j) {
                return Some(j);
            }
            j += 1;
        }
        while j + 8 <= to {
            if p.add(j).cast::<u64>().read() != word(seed, j / 8) {
                // Report the exact byte.
                return (j..j + 8).find(|&b| p.add(b).read() != byte(seed, b));
            }
            j += 8;
        }
        while j < to {
            if p.add(j).read() != byte(seed, j) {
                return Some(j);
            }
            j += 1;
        }
    }
    None
}

/// Panics (naming `what`) unless bytes `from..to` of `p` hold the pattern.
///
/// # Safety
/// As for [`first_mismatch`].
#[track_caller]
pub unsafe fn verify_range(p: *const u8, from: usize, to: usize, seed: u64, what: &str) {
    if let Some(j) = unsafe { first_mismatch(p, from, to, seed) } {
        let found = unsafe { p.add(j).read() };
        panic!(
            "{what}: block {p:?} lost its contents at offset {j} of {to} \
             (expected {:#04x}, found {found:#04x})",
            byte(seed, j)
        );
    }
}

/// Panics unless the first `len` bytes of `p` hold the pattern.
///
/// # Safety
/// As for [`first_mismatch`].
#[track_caller]
pub unsafe fn verify(p: *const u8, len: usize, seed: u64, what: &str) {
    unsafe { verify_range(p, 0, len, seed, what) }
}

/// The offset of the first non-zero byte of `p[..len]`, if any.
///
/// # Safety
/// `p .. p + len` is readable and `p` 8-byte aligned.
pub unsafe fn first_nonzero(p: *const u8, len: usize) -> Option<usize> {
    let words = len / 8;
    unsafe {
        let w = core::slice::from_raw_parts(p.cast::<u64>(), words);
        if let Some(k) = w.iter().position(|&x| x != 0) {
            return (k * 8..k * 8 + 8).find(|&j| p.add(j).read() != 0);
        }
        (words * 8..len).find(|&j| p.add(j).read() != 0)
    }
}

/// Panics unless `p[..len]` is all zero.
///
/// # Safety
/// As for [`first_nonzero`].
#[track_caller]
pub unsafe fn verify_zero(p: *const u8, len: usize, what: &str) {
    if let Some(j) = unsafe { first_nonzero(p, len) } {
        let found = unsafe { p.add(j).read() };
        panic!("{what}: zeroed block {p:?} of {len} bytes has {found:#04x} at offset {j}");
    }
}

// ---- cookies -----------------------------------------------------------
//
// A block that travels between threads carries its own layout: word 0 is
// the size and log2 of the alignment, word 1 a cookie derived from the
// address and word 0, the rest a pattern seeded by both. Whoever frees it
// needs nothing but the pointer, and any overlap, lost write or stale
// reuse shows up as a bad cookie or pattern.

/// Smallest block [`stamp`] can describe.
pub const COOKIE_MIN: usize = 16;

fn meta(size: usize, align: usize) -> u64 {
    size as u64 | (align.trailing_zeros() as u64) << 56
}

fn cookie(p: *const u8, meta: u64) -> u64 {
    mix(p as u64 ^ meta.rotate_left(17) ^ 0xC00C_1E5E_ED5E_ED00)
}

/// Fills a fresh block of `size >= COOKIE_MIN` bytes with its meta word,
/// cookie and pattern.
///
/// # Safety
/// `p` is a live block of at least `size` bytes, 8-byte aligned.
pub unsafe fn stamp(p: *mut u8, size: usize, align: usize) {
    assert!((COOKIE_MIN..1 << 56).contains(&size));
    let m = meta(size, align);
    let c = cookie(p, m);
    unsafe {
        p.cast::<u64>().write(m);
        p.add(8).cast::<u64>().write(c);
        fill_range(p, 16, size, c);
    }
}

/// Checks a stamped block and returns its layout; panics naming the first
/// broken part.
///
/// # Safety
/// `p` is a live block that was [`stamp`]ed.
#[track_caller]
pub unsafe fn check_stamp(p: *const u8) -> Layout {
    unsafe {
        let m = p.cast::<u64>().read();
        let c = p.add(8).cast::<u64>().read();
        assert_eq!(
            c,
            cookie(p, m),
            "block {p:?}: cookie broken (meta word {m:#x}); overwritten or handed out twice"
        );
        let size = (m & ((1 << 56) - 1)) as usize;
        let align = 1usize << (m >> 56);
        verify_range(p, 16, size, c, "stamped block");
        Layout::from_size_align(size, align).unwrap()
    }
}

// ---- size classes ------------------------------------------------------

/// The block sizes emma documents: 16-byte steps to 128, then four per
/// doubling up to [`emma::MAX_CLASS_SIZE`].
pub fn class_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=8).map(|i| i * 16).collect();
    let mut base = 128;
    while base < emma::MAX_CLASS_SIZE {
        for step in 1..=4 {
            v.push(base + step * base / 4);
        }
        base *= 2;
    }
    assert_eq!(*v.last().unwrap(), emma::MAX_CLASS_SIZE);
    v
}

/// The class size a request of `size` bytes (alignment at most
/// [`emma::MIN_ALIGN`]) must get.
pub fn class_of(size: usize) -> usize {
    *class_sizes()
        .iter()
        .find(|&&c| c >= size.max(1))
        .expect("not a class size")
}

/// Every class size and its neighbours (±1), then powers of two and their
/// neighbours up to `max`: the sizes where off-by-one bugs live.
pub fn boundary_sizes(max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    for c in class_sizes() {
        v.extend([c - 1, c, c + 1]);
    }
    let mut p = emma::MAX_CLASS_SIZE * 2;
    while p <= max {
        v.extend([p - 4096 - 1, p - 1, p, p + 1, p + 4096 + 1]);
        p *= 2;
    }
    v.retain(|&s| s > 0 && s <= max);
    v.sort_unstable();
    v.dedup();
    v
}

// ---- instances, type-erased ---------------------------------------------

/// One instance behind function pointers, so a test can pick among several
/// instance types at run time.
#[derive(Clone, Copy)]
pub struct Dyn {
    pub name: &'static str,
    pub alloc: unsafe fn(Layout) -> *mut u8,
    pub alloc_zeroed: unsafe fn(Layout) -> *mut u8,
    pub dealloc: unsafe fn(*mut u8, Layout),
    pub realloc: unsafe fn(*mut u8, Layout, usize) -> *mut u8,
    pub usable_size: unsafe fn(*mut u8) -> usize,
    pub owns: fn(*const u8) -> bool,
    /// `InstanceExt::check`: the instance's shared structures and the
    /// calling thread's heap.
    pub check: fn() -> Result<(), &'static str>,
    pub stats: fn() -> Stats,
    pub trim: fn(),
}

/// The [`Dyn`] of instance type `I`.
pub fn dyn_of<I: GlobalAlloc + InstanceExt + Default>(name: &'static str) -> Dyn {
    unsafe fn alloc<I: GlobalAlloc + Default>(l: Layout) -> *mut u8 {
        unsafe { I::default().alloc(l) }
    }
    unsafe fn alloc_zeroed<I: GlobalAlloc + Default>(l: Layout) -> *mut u8 {
        unsafe { I::default().alloc_zeroed(l) }
    }
    unsafe fn dealloc<I: GlobalAlloc + Default>(p: *mut u8, l: Layout) {
        unsafe { I::default().dealloc(p, l) }
    }
    unsafe fn realloc<I: GlobalAlloc + Default>(p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        unsafe { I::default().realloc(p, l, n) }
    }
    unsafe fn usable_size<I: InstanceExt + Default>(p: *mut u8) -> usize {
        unsafe { I::default().usable_size(p) }
    }
    Dyn {
        name,
        alloc: alloc::<I>,
        alloc_zeroed: alloc_zeroed::<I>,
        dealloc: dealloc::<I>,
        realloc: realloc::<I>,
        usable_size: usable_size::<I>,
        owns: |p| I::default().owns(p),
        check: || I::default().check(),
        stats: || I::default().stats(),
        trim: || I::default().trim(),
    }
}

impl Dyn {
    /// Panics with the instance's name unless the instance and the calling
    /// thread's heap are consistent (`InstanceExt::check`).
    #[track_caller]
    pub fn assert_heap_ok(&self, when: &str) {
        if let Err(e) = (self.check)() {
            panic!("{}: check failed {when}: {e}", self.name);
        }
    }
}

/// Panics unless instance `I` and the calling thread's heap of it are
/// consistent (`InstanceExt::check`).
#[track_caller]
pub fn assert_heap_ok<I: InstanceExt>(i: I, when: &str) {
    if let Err(e) = i.check() {
        panic!("check failed {when}: {e}");
    }
}

/// A `Layout`, unwrapped.
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Allocates `n` small stamped blocks; returns their addresses.
pub fn stamped_blocks<I: GlobalAlloc + Copy>(i: I, seed: u64, n: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let s = rng.range(COOKIE_MIN, 100);
            let p = unsafe { i.alloc(layout(s, 16)) };
            assert!(!p.is_null());
            unsafe { stamp(p, s, 16) };
            p as usize
        })
        .collect()
}

/// Every mapping of an instance, sorted.
pub fn mappings<I: InstanceExt>(i: I) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    i.for_each_mapping(|b, l| v.push((b, l)));
    v.sort_unstable();
    v
}

// ---- child processes ------------------------------------------------------

/// For tests whose failure may be a crash (SIGSEGV) rather than a panic:
/// re-runs the test binary filtered to the test `name` with a marker in
/// the environment. Returns true in that child, where the caller runs the
/// test's body; in the parent, waits for the child, asserts it succeeded
/// (reporting its exit status and output otherwise) and returns false.
pub fn in_child(name: &str) -> bool {
    const KEY: &str = "EMMA_TEST_IN_CHILD";
    if std::env::var(KEY).as_deref() == Ok(name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(KEY, name)
        .output()
        .unwrap();
    let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
    assert!(
        out.status.success() && ran,
        "{name} failed in a child process ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

// ---- misuse that must end the process ------------------------------------

/// SIGABRT: what emma's checks end the process with.
pub const SIGABRT: i32 = 6;
/// SIGSEGV: what a guard page or an inaccessible zero-size block gives.
pub const SIGSEGV: i32 = 11;

/// The environment variable naming the misuse case a child runs.
const MISUSE_KEY: &str = "EMMA_TEST_MISUSE";

/// Runs `misuse` in a child process and asserts that the child dies by
/// `signal`, and (if `message` is not empty) that its stderr holds
/// `emma: <message> (pointer 0x`.
///
/// `test` is the name of the calling `#[test]`: the child is this test
/// binary re-executed with a filter for exactly that test and
/// `EMMA_TEST_MISUSE=<case>` in its environment. In the child this
/// function runs `misuse` (other cases of the same test are skipped) and,
/// if it returns, exits with status 0 after saying so, which the parent
/// reports as "not caught". No test body passes by doing nothing.
pub fn must_die(test: &str, case: &str, signal: i32, message: &str, misuse: impl FnOnce()) {
    match std::env::var(MISUSE_KEY) {
        Ok(c) if c == case => {
            misuse();
            eprintln!("misuse `{case}` was not caught");
            std::process::exit(0);
        }
        Ok(_) => return,
        Err(_) => {}
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(MISUSE_KEY, case)
        .output()
        .unwrap();
    assert_died(&out, signal, message, case);
}

/// Asserts that a process died by `signal` with `emma: <message> (pointer
/// 0x` on its stderr (any stderr if `message` is empty).
pub fn assert_died(out: &std::process::Output, signal: i32, message: &str, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "{what}: expected signal {signal}, got {:?}; stderr:\n{stderr}",
        out.status
    );
    let line = format!("emma: {message} (pointer 0x");
    assert!(
        message.is_empty() || stderr.contains(&line),
        "{what}: expected \"{line}\" in stderr:\n{stderr}"
    );
}

// ---- /proc/self/maps --------------------------------------------------------

/// The address ranges of `/proc/self/maps`, sorted.
pub fn proc_maps() -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut v: Vec<(usize, usize)> = text
        .lines()
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

/// Whether `[base, base + len)` is covered by contiguous entries of `maps`.
pub fn covered(maps: &[(usize, usize)], base: usize, len: usize) -> bool {
    let mut at = base;
    for &(a, b) in maps {
        if a <= at && at < b {
            at = b;
            if at >= base + len {
                return true;
            }
        }
    }
    false
}

// ---- memory of the process ------------------------------------------------

/// The process's resident set size in bytes, from `/proc/self/statm`.
pub fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `b` bytes in MiB, for messages.
pub fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}
