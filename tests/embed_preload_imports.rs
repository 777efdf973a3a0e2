//! What `libemma.so` (the drop-in malloc, `examples/malloc/`) asks of the
//! process it is preloaded into. It is a `no_std` library: it must import
//! only the few C library functions it calls, need no library but the C
//! library, run no initialiser but its own, and (with `tls`) read its
//! thread-local slot without `__tls_get_addr`. Linked with Rust's `std`, it
//! imported `__tls_get_addr`, `getenv`, `dl_iterate_phdr`, the unwinder and
//! more, and needed `libgcc_s.so.1` and `ld-linux-x86-64.so.2`: this test
//! fails on such a library.
//!
//! Fast: `nm` and `readelf` on the library the other preload tests build
//! (`util::libemma`, this test's profile and features).

#[path = "embed/util.rs"]
mod util;

use std::process::Command;
use util::*;

/// Every symbol the library may import, and why it does.
const ALLOWED_IMPORTS: &[&str] = &[
    // The calling thread's `errno`, which failing C functions set.
    "__errno_location",
    // `malloc_info` writes to a C stdio `FILE *`.
    "fwrite",
    // What `core` lowers copies, fills and comparisons to.
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "bcmp",
    // What `core::ffi::CStr::from_ptr` calls: the environment is read at load.
    "strlen",
    // No weak symbols: the linker adds those with the C start files
    // (`__gmon_start__`, `__cxa_finalize`, `_ITM_*`), which the library is
    // linked without (examples/malloc/build.rs).
];

/// The library's undefined dynamic symbols are all in `ALLOWED_IMPORTS`.
#[test]
fn preload_imports_only_what_it_calls() {
    let undefined = dynamic_symbols(&libemma(), "--undefined-only");
    assert!(
        undefined.iter().any(|s| s == "__errno_location"),
        "nm output not understood: {undefined:?}"
    );
    let extra: Vec<&String> = undefined
        .iter()
        .filter(|s| !ALLOWED_IMPORTS.contains(&s.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "libemma.so imports {extra:?}, which it should not need (all: {undefined:?})"
    );
}

/// The library needs the C library alone, has one initialiser (its own,
/// which reads the options) and no `DT_INIT`; with `tls`, one 8-byte
/// thread-local slot in the static TLS surplus (`STATIC_TLS`, no
/// `__tls_get_addr`), and without it no TLS at all.
#[test]
fn preload_needs_only_libc_and_runs_only_its_initialiser() {
    let headers = run_ok(
        Command::new("readelf")
            .args(["-l", "-d", "-W"])
            .arg(libemma()),
    );
    let needed: Vec<&str> = headers
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(needed, ["libc.so.6"], "{headers}");
    let init_array = headers
        .lines()
        .find(|l| l.contains("(INIT_ARRAYSZ)"))
        .unwrap_or_else(|| panic!("no INIT_ARRAYSZ:\n{headers}"));
    assert!(
        init_array.trim_end().ends_with(" 8 (bytes)"),
        "more than one initialiser: {init_array}"
    );
    assert!(!headers.contains("(INIT) "), "a DT_INIT entry:\n{headers}");
    // Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
    let tls = headers.lines().find(|l| l.trim_start().starts_with("TLS "));
    if cfg!(feature = "tls") {
        let tls: Vec<&str> = tls
            .unwrap_or_else(|| panic!("no TLS segment:\n{headers}"))
            .split_whitespace()
            .collect();
        assert_eq!(tls[5], "0x000008", "TLS is not one 8-byte slot:\n{headers}");
        assert!(headers.contains("STATIC_TLS"), "no STATIC_TLS:\n{headers}");
    } else {
        assert!(tls.is_none(), "TLS without `tls`:\n{headers}");
    }
}
