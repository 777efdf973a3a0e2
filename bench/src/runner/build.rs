//! Building one `workload` binary per allocator.
//!
//! All builds share one target directory (`target/bench-run`), so the allocator crates and the
//! workspace's dependencies compile once; cargo keys emma-bench's artefacts by feature set, and
//! after each build the binary is copied to `bins/workload-<allocator>` so that all of them can
//! be run side by side.

use super::alloc::{Allocator, Preload, EMMA_PRELOAD};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Paths the runner builds into.
pub struct Paths {
    /// Workspace root (where Cargo.toml and rust-toolchain.toml are).
    pub root: PathBuf,
    /// `target/bench-run` under the root.
    pub target: PathBuf,
}

impl Paths {
    /// Paths for the workspace whose `bench/` directory is `bench_dir`.
    pub fn new(bench_dir: &Path) -> Paths {
        let root = bench_dir
            .parent()
            .expect("bench/ has a parent")
            .to_path_buf();
        let target = root.join("target").join("bench-run");
        Paths { root, target }
    }

    /// Where the workload binary of `alloc` is kept.
    pub fn binary(&self, alloc: &Allocator) -> PathBuf {
        self.target
            .join("bins")
            .join(format!("workload-{}", alloc.name))
    }

    /// The build log of `alloc`.
    pub fn log(&self, alloc: &Allocator) -> PathBuf {
        self.target
            .join("logs")
            .join(format!("build-{}.log", alloc.name))
    }
}

fn has_cmake() -> bool {
    Command::new("cmake")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `apt-get` quietly; whether it succeeded.
fn apt(args: &[&str]) -> bool {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs a Debian package with apt-get (we run as root on the project's machines) and says
/// whether `present()` holds afterwards.
fn apt_install(package: &str, present: impl Fn() -> bool) -> bool {
    eprintln!("trying `apt-get install -y {package}` ...");
    // The package lists may be stale or absent on a fresh machine: update first.
    let _ = apt(&["update", "-qq"]);
    apt(&["install", "-y", "-qq", package]) && present()
}

/// Makes sure `cmake` is there for snmalloc: installs it with apt-get if it is missing and
/// apt-get works here. `Err` says why not.
pub fn ensure_cmake() -> Result<(), String> {
    if has_cmake() {
        return Ok(());
    }
    eprintln!("cmake is missing (snmalloc needs it)");
    if apt_install("cmake", has_cmake) {
        eprintln!("cmake installed.");
        Ok(())
    } else {
        Err("cmake is missing and `apt-get install -y cmake` did not work".into())
    }
}

/// The library to put in `LD_PRELOAD` for `alloc` (C mode), built (unless `no_build`) or
/// installed if needed.
pub fn preload(
    paths: &Paths,
    alloc: &Allocator,
    no_build: bool,
) -> Result<Option<PathBuf>, String> {
    match alloc.preload {
        Preload::None => Ok(None),
        Preload::Debian { package, path } => {
            let present = || Path::new(path).exists();
            if present() || apt_install(package, present) {
                Ok(Some(PathBuf::from(path)))
            } else {
                Err(format!(
                    "{path} is missing and `apt-get install -y {package}` did not work"
                ))
            }
        }
        Preload::Emma { features } => {
            let target = emma_target(paths, features);
            let lib = target.join(EMMA_PRELOAD.1);
            if !no_build {
                build_emma_preload(paths, alloc, features, &target)?;
            }
            if lib.exists() {
                Ok(Some(lib))
            } else {
                Err(format!(
                    "no library at {} (run without --no-build)",
                    lib.display()
                ))
            }
        }
    }
}

/// The target directory of emma's drop-in library built with `features`: the suite's own for
/// the default build, a subdirectory of it for any other.
fn emma_target(paths: &Paths, features: &str) -> PathBuf {
    if features.is_empty() {
        paths.target.clone()
    } else {
        paths
            .target
            .join(format!("preload-{}", features.replace(',', "-")))
    }
}

/// Builds emma's drop-in library with `features` into `target`.
fn build_emma_preload(
    paths: &Paths,
    alloc: &Allocator,
    features: &str,
    target: &Path,
) -> Result<(), String> {
    let log_path = paths
        .target
        .join("logs")
        .join(format!("preload-{}.log", alloc.name));
    fs::create_dir_all(log_path.parent().unwrap()).map_err(|e| e.to_string())?;
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&paths.root)
        .env("CARGO_TARGET_DIR", target)
        .args(EMMA_PRELOAD.0);
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let ok = cmd
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "building emma's drop-in library failed ({})",
            log_path.display()
        ))
    }
}

/// Builds the workload binary for `alloc` and copies it to [`Paths::binary`]. On failure,
/// `Err` holds the last lines of the build log (the whole log stays in [`Paths::log`]).
pub fn build(paths: &Paths, alloc: &Allocator) -> Result<PathBuf, String> {
    if alloc.needs_cmake {
        ensure_cmake()?;
    }
    let log_path = paths.log(alloc);
    fs::create_dir_all(log_path.parent().unwrap()).map_err(|e| e.to_string())?;
    fs::create_dir_all(paths.binary(alloc).parent().unwrap()).map_err(|e| e.to_string())?;
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&paths.root)
        .env("CARGO_TARGET_DIR", &paths.target)
        .args([
            "build",
            "--release",
            "-p",
            "emma-bench",
            "--bin",
            "workload",
            "--features",
            alloc.feature,
        ])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("error"))
            .take(3)
            .collect();
        let summary = if errors.is_empty() {
            text.lines().last().unwrap_or("").to_string()
        } else {
            errors.join(" / ")
        };
        return Err(format!("build failed ({}): {summary}", log_path.display()));
    }
    let dest = paths.binary(alloc);
    fs::copy(paths.target.join("release").join("workload"), &dest)
        .map_err(|e| format!("copy: {e}"))?;
    Ok(dest)
}
