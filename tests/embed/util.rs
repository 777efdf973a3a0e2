//! Helpers shared by the `tests/embed_*.rs` tests: building the example
//! libraries and programs they exercise, compiling C/C++ sources, running
//! commands and checking their output.
//!
//! Artifacts are built by the tests themselves, so `cargo test` from a
//! clean clone needs nothing prepared: the same `cargo` that built the test
//! is run again, with the test's profile and features, into a target
//! directory of its own (`target/embed/…`) so the outer build's artifacts
//! are never rebuilt with other flags. (The outer `cargo test` has released
//! its build lock by the time tests run.)

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The outer target directory (`target/` unless overridden).
pub fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// Where the embedding tests put what they build.
pub fn embed_dir() -> PathBuf {
    let d = target_dir().join("embed");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The cargo profile this test binary was built with (`ci`, `dev`, ...),
/// from its path `<target>/<profile dir>/deps/<test>`.
pub fn profile() -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .expect("profile dir")
        .to_string_lossy()
        .into_owned();
    let name = match dir.as_str() {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    };
    (name, dir)
}

/// emma's features this test was built with, as a `--features` value.
pub fn features() -> String {
    let mut f = Vec::new();
    if cfg!(feature = "tls") {
        f.push("tls");
    }
    if cfg!(feature = "boundary-checks") {
        f.push("boundary-checks");
    }
    f.join(",")
}

/// Selects exactly `features` (a `--features` value, possibly empty):
/// default features off, since `tls` is one of them and a test built
/// without it must build its artifacts without it too.
fn feature_args(cmd: &mut Command, features: &str) {
    cmd.arg("--no-default-features");
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    check_status(cmd, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` and returns its output, whatever its status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Panics with the output of `cmd` unless it exited with status 0.
pub fn check_status(cmd: &Command, out: &Output) {
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 60)
        );
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Builds each artifact once per test process, even when several tests
/// ask for it at the same time.
fn once(key: String, build: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = m.get(&key) {
        return p.clone();
    }
    let p = build();
    m.insert(key, p.clone());
    p
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root());
    // Keep the child's output out of a terminal-less colour guess.
    c.env("CARGO_TERM_COLOR", "never");
    c
}

/// Builds example `name` of the emma package (a `cdylib`) with this test's
/// profile and features; returns the path of `lib<name>.so`.
pub fn example_cdylib(name: &str) -> PathBuf {
    once(format!("example:{name}"), || {
        let (profile, dir) = profile();
        let target = embed_dir().join("emma");
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--profile", &profile, "--example", name])
            .arg("--target-dir")
            .arg(&target);
        feature_args(&mut cmd, &features());
        run_ok(&mut cmd);
        let so = target
            .join(dir)
            .join("examples")
            .join(format!("lib{name}.so"));
        assert!(so.exists(), "{} missing after the build", so.display());
        so
    })
}

/// Builds the drop-in library `libemma.so` (package `emma-malloc`) with this
/// test's profile and emma features (`tls`, `boundary-checks`, `hardened`
/// as this test was built), into a target directory of its own per feature
/// set; returns its path. The one place tests name the library.
#[allow(dead_code)] // not every test binary that includes this file preloads
pub fn libemma() -> PathBuf {
    libemma_mode(cfg!(feature = "tls"))
}

/// [`libemma`] with per-thread heaps (`tls`) on or off, whatever this test
/// was built with.
pub fn libemma_mode(tls: bool) -> PathBuf {
    let mut f = Vec::new();
    for (on, name) in [
        (tls, "tls"),
        (cfg!(feature = "boundary-checks"), "boundary-checks"),
        (cfg!(feature = "hardened"), "hardened"),
    ] {
        if on {
            f.push(name);
        }
    }
    let features = f.join(",");
    once(format!("libemma:{features}"), || {
        let (profile, dir) = profile();
        let target = embed_dir().join(format!("malloc-{}", features.replace(',', "-")));
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--quiet",
            "--profile",
            &profile,
            "-p",
            "emma-malloc",
        ])
        .arg("--target-dir")
        .arg(&target);
        feature_args(&mut cmd, &features);
        run_ok(&mut cmd);
        let so = target.join(dir).join("libemma.so");
        assert!(so.exists(), "{} missing after the build", so.display());
        so
    })
}

/// Builds the crate in `examples/<dir>` (a separate workspace) in release
/// mode with exactly `features`, into `target/embed/<dir>[-features]`; returns
/// that target directory.
pub fn nested_crate(dir: &str, features: &str) -> PathBuf {
    once(format!("crate:{dir}:{features}"), || {
        let suffix = if features.is_empty() {
            String::new()
        } else {
            format!("-{}", features.replace(',', "-"))
        };
        let target = embed_dir().join(format!("{dir}{suffix}"));
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--release", "--manifest-path"])
            .arg(root().join("examples").join(dir).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target);
        feature_args(&mut cmd, features);
        run_ok(&mut cmd);
        target.join("release")
    })
}

/// Compiles C or C++ sources from `tests/embed/` with `compiler` (gcc,
/// g++) into `target/embed/<out>`, with extra `args`.
pub fn compile(compiler: &str, sources: &[&str], out: &str, args: &[&str]) -> PathBuf {
    let key = format!("cc:{compiler}:{sources:?}:{out}:{args:?}");
    once(key, || {
        let exe = embed_dir().join(out);
        let mut cmd = Command::new(compiler);
        for s in sources {
            cmd.arg(root().join("tests/embed").join(s));
        }
        cmd.arg("-o").arg(&exe).args(args);
        run_ok(&mut cmd);
        exe
    })
}

/// The dynamic symbols of `lib` that `nm -D` lists with `which`
/// (`--defined-only`, `--undefined-only`), without versions, sorted.
pub fn dynamic_symbols(lib: &Path, which: &str) -> Vec<String> {
    let out = run_ok(Command::new("nm").args(["-D", which]).arg(lib));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Whether `tool` can be run (`tool --version` succeeds).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
