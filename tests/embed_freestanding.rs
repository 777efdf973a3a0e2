//! No libc at all: examples/freestanding is a `#![no_std] #![no_main]`
//! static executable with its own `_start`, raw system calls and an emma
//! instance as its global allocator (see its module docs for how it sets
//! up the thread pointer emma needs). The test builds it, checks with
//! `readelf` that it is static (no `PT_INTERP`, no dynamic section, no
//! undefined symbol), runs it and checks its output and exit status.
//!
//! It is built with this test's `tls` and `boundary-checks` features: with
//! `tls` (the default) the program lays out a TLS block for each thread
//! itself, as a libc does, and emma keeps each thread's heap there; without
//! it emma runs in its thread-pointer mode.

#[path = "embed/util.rs"]
mod util;

use std::path::PathBuf;
use std::process::Command;
use util::*;

fn program() -> PathBuf {
    nested_crate("freestanding", &features()).join("emma-freestanding")
}

#[test]
fn freestanding_is_a_static_executable() {
    let exe = program();
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&exe));
    assert!(
        !headers.contains("INTERP"),
        "has a dynamic loader:\n{headers}"
    );
    assert!(
        !headers.contains("DYNAMIC"),
        "has a dynamic segment:\n{headers}"
    );
    // With `tls`, a TLS segment holding just the instance's 8-byte heap
    // slot, which the program lays out for each thread itself.
    let tls = headers
        .lines()
        .find(|l| l.trim_start().starts_with("TLS "))
        .map(|l| l.split_whitespace().nth(5).unwrap().to_string());
    let expected = cfg!(feature = "tls").then(|| "0x000008".to_string());
    assert_eq!(tls, expected, "TLS segment (MemSiz):\n{headers}");
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&exe));
    assert!(dynamic.contains("There is no dynamic section"), "{dynamic}");
    let kind = run_ok(Command::new("readelf").arg("-h").arg(&exe));
    assert!(kind.contains("EXEC (Executable file)"), "{kind}");
    // Not a single symbol left for anyone else to provide.
    let undefined = run_ok(Command::new("nm").arg("--undefined-only").arg(&exe));
    assert!(
        undefined.trim().is_empty(),
        "undefined symbols:\n{undefined}"
    );
}

#[test]
fn freestanding_runs_on_emma() {
    let mut cmd = Command::new(program());
    cmd.args(["hello", "world"]);
    let out = run(&mut cmd);
    check_status(&cmd, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = "args: hello world\n\
        primes below 2000000: 148933, the last 1999993\n\
        ends-in-1=37188 ends-in-2=1 ends-in-3=37256 ends-in-5=1 ends-in-7=37267 ends-in-9=37220\n\
        grown buffer: 64 MiB, sample sum 8585740288\n\
        threads: 4 maps, 162916 bytes of strings, freed by the main thread\n";
    assert!(stdout.starts_with(expected), "{stdout}");
    assert!(stdout.ends_with("freestanding: OK\n"), "{stdout}");
    // One heap per thread: the main thread and four workers.
    assert!(stdout.contains("emma: 5 heaps"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn freestanding_panics_cleanly() {
    let out = run(Command::new(program()).arg("panic"));
    assert_eq!(out.status.code(), Some(101));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("asked to panic"), "{stderr}");
}
