//! Plugins: `cdylib`s with an emma instance as their global allocator,
//! loaded into a C host whose own `malloc` is glibc's.
//!
//! The host (tests/embed/host.c) `dlopen`s `plugin_a` and `plugin_b` (two
//! builds of one source, examples/plugin/common.rs) and the `no_std`
//! plugin (examples/plugin_nostd), once with `RTLD_LOCAL` and, in another
//! process, with `RTLD_GLOBAL`, and calls them from several threads. The
//! design's concern: two copies of emma in one process must not share
//! anything even when their symbols are global. They cannot: a plugin
//! exports only its own C interface (checked here with `nm`), so each
//! copy's statics and functions are private to its library. The host
//! checks the consequences: each plugin owns exactly its own blocks, the
//! plugins' mappings are disjoint, and unloading one (its `.fini_array`
//! releases its allocator) unmaps all of its memory while the others keep
//! working.

#[path = "embed/util.rs"]
mod util;

use std::path::PathBuf;
use std::process::Command;
use util::*;

/// The C interface every plugin exports, and nothing else.
const INTERFACE: [&str; 8] = [
    "plugin_heaps",
    "plugin_keep",
    "plugin_mappings",
    "plugin_name",
    "plugin_owns",
    "plugin_release",
    "plugin_stats",
    "plugin_work",
];

fn host() -> PathBuf {
    compile(
        "gcc",
        &["host.c"],
        "host",
        &["-O2", "-Wall", "-pthread", "-ldl"],
    )
}

/// The `no_std` plugin built with `features`.
fn nostd_plugin(features: &str) -> PathBuf {
    nested_crate("plugin_nostd", features).join("libemma_plugin_nostd.so")
}

fn run_host(mode: &str, plugins: &[PathBuf]) -> String {
    let out = run_ok(Command::new(host()).arg(mode).args(plugins));
    assert!(out.contains("host: OK"), "{out}");
    out
}

fn all_plugins() -> Vec<PathBuf> {
    vec![
        example_cdylib("plugin_a"),
        example_cdylib("plugin_b"),
        nostd_plugin(&features()),
    ]
}

fn check_host_output(out: &str) {
    // Both builds of the same source compute the same results.
    let work: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("work plugin_"))
        .collect();
    assert_eq!(work.len(), 3, "{out}");
    let value = |l: &str| l.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(value(work[0]), value(work[1]), "{out}");
    for name in ["plugin_a", "plugin_b", "plugin_nostd"] {
        assert!(
            out.contains(&format!("mappings {name}:")) && out.contains(&format!("unload {name}:")),
            "{out}"
        );
    }
    assert!(out.contains("threads: 4 threads x 3 plugins"), "{out}");
    assert!(out.contains("others still work after the unload"), "{out}");
}

/// `dlopen(RTLD_LOCAL)`: every plugin on its own heap.
#[test]
fn plugins_rtld_local() {
    let out = run_host("local", &all_plugins());
    check_host_output(&out);
    assert!(
        out.contains("global scope: plugin_name not visible"),
        "{out}"
    );
}

/// `dlopen(RTLD_GLOBAL)`: the same, although the plugins' symbols (the
/// same names in all three) are now in the global scope.
#[test]
fn plugins_rtld_global() {
    let out = run_host("global", &all_plugins());
    check_host_output(&out);
    assert!(out.contains("global scope: plugin_name visible"), "{out}");
}

/// A plugin exports its C interface and nothing of emma: not the
/// instance's state, not emma's functions, not Rust's allocator shims.
/// (No filter is needed: `nm -D --defined-only` lists exactly the
/// interface.)
#[test]
fn plugins_export_only_their_interface() {
    for lib in all_plugins() {
        assert_eq!(
            dynamic_symbols(&lib, "--defined-only"),
            INTERFACE,
            "{}",
            lib.display()
        );
    }
}

/// The `no_std` plugin imports nothing but the `mem*` functions that
/// `core` lowers copies, fills and comparisons to, and needs no library
/// (no DT_NEEDED): the `mem*` symbols are resolved from whatever C library
/// the host has loaded.
#[test]
fn nostd_plugin_imports_only_mem_functions() {
    let lib = nostd_plugin(&features());
    let undefined = dynamic_symbols(&lib, "--undefined-only");
    assert!(!undefined.is_empty());
    for s in &undefined {
        assert!(
            matches!(
                s.as_str(),
                "memcpy" | "memmove" | "memset" | "memcmp" | "bcmp"
            ),
            "the no_std plugin imports {s}: {undefined:?}"
        );
    }
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&lib));
    assert!(!dynamic.contains("(NEEDED)"), "{dynamic}");
}

/// With `tls` (emma's default), emma keeps each thread's heap in a
/// thread-local slot per instance, yet the `no_std` plugin contains no
/// call to `__tls_get_addr` (the loader's general-dynamic TLS resolver,
/// which may call the host's `malloc`): emma defines the slot in assembly
/// and reads it with the initial-exec model (`mov reg, [rip +
/// slot@GOTTPOFF]; mov reg, fs:[reg]`, see src/thread.rs). The library
/// therefore has a TLS segment of 8 bytes (its one instance's slot, all
/// it asks of the loader's static TLS surplus) and the `STATIC_TLS` flag,
/// and still loads with `dlopen`: the host runs it.
#[test]
fn nostd_plugin_tls_has_no_tls_get_addr() {
    let lib = nostd_plugin("tls");
    let disasm = run_ok(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(&lib),
    );
    assert!(
        !disasm.contains("__tls_get_addr"),
        "a call to __tls_get_addr"
    );
    assert!(
        disasm.contains("%fs:"),
        "no fs-relative access: is the tls feature on?"
    );
    assert!(!dynamic_symbols(&lib, "--undefined-only")
        .iter()
        .any(|s| s == "__tls_get_addr"));
    let headers = run_ok(Command::new("readelf").args(["-l", "-d", "-W"]).arg(&lib));
    // Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
    let tls: Vec<&str> = headers
        .lines()
        .find(|l| l.trim_start().starts_with("TLS "))
        .unwrap_or_else(|| panic!("no TLS segment:\n{headers}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        u64::from_str_radix(tls[5].trim_start_matches("0x"), 16).unwrap(),
        8,
        "TLS segment size (MemSiz) is not one 8-byte slot:\n{headers}"
    );
    assert!(
        headers.contains("STATIC_TLS"),
        "no STATIC_TLS flag:\n{headers}"
    );
    let out = run_host("local", &[lib]);
    assert!(out.contains("unload plugin_nostd:"), "{out}");
}
