//! The C ABI under prefixes: `emma_instance!(…, c_prefix = p_)` exports
//! `p_malloc`, `p_free`, … with glibc's semantics.
//!
//! - In this process: two prefixed instances, called through `extern "C"`
//!   declarations, one of them reporting errors through a `c_errno` sink.
//! - In a `cdylib` (the `plugin_cabi` example): `nm -D --defined-only`
//!   lists the two prefixed families and nothing else, and a C program
//!   linked against it passes the C contract (tests/embed/c_contract.c)
//!   on both prefixes.

#[path = "embed/util.rs"]
mod util;

use emma::InstanceExt;
use std::cell::Cell;
use std::ffi::c_void;
use std::process::Command;
use util::*;

emma::emma_instance!(pub Quiet, c_prefix = embed_quiet_);
emma::emma_instance!(pub Loud, c_prefix = embed_loud_, c_errno = record_errno);

thread_local! {
    static ERRNO: Cell<i32> = const { Cell::new(0) };
}

fn record_errno(code: i32) {
    ERRNO.with(|e| e.set(code));
}

fn errno() -> i32 {
    ERRNO.with(|e| e.replace(0))
}

unsafe extern "C" {
    fn embed_quiet_malloc(n: usize) -> *mut c_void;
    fn embed_quiet_free(p: *mut c_void);
    fn embed_quiet_realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn embed_quiet_malloc_usable_size(p: *mut c_void) -> usize;

    fn embed_loud_malloc(n: usize) -> *mut c_void;
    fn embed_loud_calloc(c: usize, n: usize) -> *mut c_void;
    fn embed_loud_realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn embed_loud_reallocarray(p: *mut c_void, c: usize, n: usize) -> *mut c_void;
    fn embed_loud_free(p: *mut c_void);
    fn embed_loud_aligned_alloc(a: usize, n: usize) -> *mut c_void;
    fn embed_loud_posix_memalign(out: *mut *mut c_void, a: usize, n: usize) -> i32;
    fn embed_loud_memalign(a: usize, n: usize) -> *mut c_void;
    fn embed_loud_valloc(n: usize) -> *mut c_void;
    fn embed_loud_pvalloc(n: usize) -> *mut c_void;
    fn embed_loud_malloc_usable_size(p: *mut c_void) -> usize;
}

const ENOMEM: i32 = 12;
const EINVAL: i32 = 22;

fn aligned(p: *mut c_void, a: usize) -> bool {
    (p as usize).is_multiple_of(a)
}

/// The C semantics, called through the exported prefixed symbols.
#[test]
fn prefixed_functions_follow_the_c_contract() {
    // SAFETY: every pointer passed back is a live block of the same
    // instance, freed once.
    unsafe {
        // malloc(0): unique and freeable.
        let (a, b) = (embed_loud_malloc(0), embed_loud_malloc(0));
        assert!(!a.is_null() && !b.is_null() && a != b);
        embed_loud_free(a);
        embed_loud_free(b);

        // 16-byte alignment and usable size for every small size and some
        // large ones.
        let mut v = Vec::new();
        for n in (1..=2048).chain([5000, 70_000, 300_000, 5 << 20]) {
            let p = embed_loud_malloc(n);
            assert!(aligned(p, 16), "malloc({n}) = {p:?}");
            assert!(embed_loud_malloc_usable_size(p) >= n);
            p.cast::<u8>().write_bytes(0xEE, n);
            v.push(p);
        }
        for p in v {
            embed_loud_free(p);
        }
        assert_eq!(embed_loud_malloc_usable_size(std::ptr::null_mut()), 0);

        // Impossible sizes: null and ENOMEM.
        assert!(embed_loud_malloc(usize::MAX).is_null());
        assert_eq!(errno(), ENOMEM);
        assert!(embed_loud_malloc(isize::MAX as usize + 1).is_null());
        assert_eq!(errno(), ENOMEM);

        // calloc: zeroed; overflow is null with ENOMEM.
        let d = embed_loud_malloc(4000);
        d.cast::<u8>().write_bytes(0xFF, 4000);
        embed_loud_free(d);
        let c = embed_loud_calloc(500, 8);
        assert!(std::slice::from_raw_parts(c.cast::<u8>(), 4000)
            .iter()
            .all(|&x| x == 0));
        embed_loud_free(c);
        assert!(embed_loud_calloc(1 << 33, 1 << 33).is_null());
        assert_eq!(errno(), ENOMEM);

        // reallocarray overflow: null, ENOMEM, the block untouched.
        let r = embed_loud_reallocarray(std::ptr::null_mut(), 10, 10);
        r.cast::<u8>().write_bytes(7, 100);
        assert!(embed_loud_reallocarray(r, usize::MAX / 2, 3).is_null());
        assert_eq!(errno(), ENOMEM);
        assert!(std::slice::from_raw_parts(r.cast::<u8>(), 100)
            .iter()
            .all(|&x| x == 7));
        embed_loud_free(r);

        // posix_memalign: EINVAL for bad alignments, output untouched, no
        // errno; good ones honoured.
        for bad in [0, 1, 2, 3, 4, 12, 24, 48] {
            let mut out = 0x1234 as *mut c_void;
            assert_eq!(
                embed_loud_posix_memalign(&mut out, bad, 64),
                EINVAL,
                "align {bad}"
            );
            assert_eq!(out as usize, 0x1234);
            assert_eq!(errno(), 0, "posix_memalign must not set errno");
        }
        for good in [8, 16, 64, 4096, 1 << 21] {
            let mut out = std::ptr::null_mut();
            assert_eq!(embed_loud_posix_memalign(&mut out, good, 100), 0);
            assert!(aligned(out, good) && aligned(out, 16));
            embed_loud_free(out);
        }

        // free(NULL) does nothing and no function touches errno on success.
        embed_loud_free(std::ptr::null_mut());
        assert_eq!(errno(), 0);

        // realloc(NULL, n) allocates; realloc(p, 0) frees and gives null.
        let r = embed_loud_realloc(std::ptr::null_mut(), 100);
        assert!(Loud.owns(r.cast()) && embed_loud_malloc_usable_size(r) >= 100);
        assert!(embed_loud_realloc(r, 0).is_null());
        assert_eq!(errno(), 0);

        // aligned_alloc: a non-power-of-two alignment is refused.
        for bad in [0, 3, 24, 100] {
            assert!(embed_loud_aligned_alloc(bad, 64).is_null());
            assert_eq!(errno(), EINVAL);
        }
        let p = embed_loud_aligned_alloc(256, 10);
        assert!(aligned(p, 256));
        embed_loud_free(p);

        // memalign rounds up; valloc/pvalloc give pages.
        let m = embed_loud_memalign(48, 10);
        assert!(aligned(m, 64));
        embed_loud_free(m);
        let p = embed_loud_valloc(1);
        assert!(aligned(p, 4096));
        embed_loud_free(p);
        let p = embed_loud_pvalloc(1);
        assert!(aligned(p, 4096) && embed_loud_malloc_usable_size(p) >= 4096);
        embed_loud_free(p);
    }
}

/// Two prefixed instances in one process are two allocators.
#[test]
fn two_prefixes_two_allocators() {
    // SAFETY: each block is freed once, by its own instance.
    unsafe {
        let q = embed_quiet_malloc(100);
        let l = embed_loud_malloc(100);
        assert!(Quiet.owns(q.cast()) && !Loud.owns(q.cast()));
        assert!(Loud.owns(l.cast()) && !Quiet.owns(l.cast()));
        let sys = Box::new(0u64);
        assert!(!Quiet.owns((&*sys as *const u64).cast()));
        let q = embed_quiet_realloc(q, 1 << 20);
        assert!(Quiet.owns(q.cast()) && embed_quiet_malloc_usable_size(q) >= 1 << 20);
        embed_quiet_free(q);
        embed_loud_free(l);
        // The quiet instance has no errno sink: failures just give null.
        assert!(embed_quiet_malloc(usize::MAX).is_null());
        assert_eq!(errno(), 0);
    }
}

/// The names of the defined dynamic symbols of `lib`.
fn exported(lib: &std::path::Path) -> Vec<String> {
    let out = run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(lib));
    let mut v: Vec<String> = out
        .lines()
        // "<address> <type> <name>"; a name may carry a version ("@@V").
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|n| n.split('@').next().unwrap().to_string())
        // Linker-made markers some toolchains export from every shared
        // object; they are not emma's.
        .filter(|n| {
            !matches!(
                n.as_str(),
                "_init" | "_fini" | "_edata" | "_end" | "__bss_start"
            )
        })
        .collect();
    v.sort();
    v
}

const FAMILY: [&str; 11] = [
    "malloc",
    "calloc",
    "realloc",
    "free",
    "aligned_alloc",
    "posix_memalign",
    "memalign",
    "valloc",
    "pvalloc",
    "reallocarray",
    "malloc_usable_size",
];

/// `nm -D --defined-only` of a cdylib with two prefixed instances: the two
/// families, and no other symbol (emma's internals, the instances' state
/// and Rust's allocator shims all stay local to the library).
///
/// The filter: only the linker markers `_init`, `_fini`, `_edata`,
/// `_end` and `__bss_start`, which older toolchains export from every
/// shared object, are ignored (with this toolchain there are none).
#[test]
fn cdylib_exports_exactly_the_two_families() {
    let lib = example_cdylib("plugin_cabi");
    let mut want: Vec<String> = ["first_", "second_"]
        .iter()
        .flat_map(|p| FAMILY.iter().map(move |f| format!("{p}{f}")))
        .collect();
    want.sort();
    assert_eq!(exported(&lib), want);
}

/// The C contract, from C, through each prefix of the cdylib (`second_`
/// also sets `errno`).
#[test]
fn c_contract_through_both_prefixes() {
    let lib = example_cdylib("plugin_cabi");
    let dir = lib.parent().unwrap().to_str().unwrap().to_string();
    for (prefix, extra) in [("first_", None), ("second_", Some("-DCHECK_ERRNO"))] {
        let mut args = vec![
            "-O1".to_string(),
            "-fno-builtin".into(),
            "-Wno-alloc-size-larger-than".into(),
            format!("-DPFX={prefix}"),
            format!("-L{dir}"),
            format!("-Wl,-rpath,{dir}"),
            "-lplugin_cabi".into(),
        ];
        args.extend(extra.map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let exe = compile(
            "gcc",
            &["c_contract.c"],
            &format!("c_contract_{prefix}"),
            &args,
        );
        let out = run_ok(&mut Command::new(exe));
        assert!(out.contains(&format!("c_contract {prefix}: OK")), "{out}");
    }
}
