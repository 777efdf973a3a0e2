//! The runner: build every allocator's workload binary, run the suite interleaved, report.
//!
//! Order of runs: for each repetition, for each workload, every allocator once (round-robin),
//! with the allocator order rotated from one repetition and workload to the next. Interleaving
//! spreads slow drifts of the machine (thermal, noisy neighbours) over all allocators instead of
//! penalising whichever ran last; the median over repetitions then drops outliers.

pub mod alloc;
pub mod build;
pub mod config;
pub mod exec;
pub mod progress;
pub mod quiet;

use crate::report::{self, machine::Machine, Results, Sample};
use build::Paths;
use config::Config;
use progress::Progress;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Entry point of the `runner` binary.
pub fn main() -> ExitCode {
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = match Config::from_args(std::env::args().skip(1), bench_dir.clone()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let paths = Paths::new(&bench_dir);
    let machine = Machine::detect(&paths.root);

    let (runnable, skipped) = build_all(&cfg, &paths);
    if runnable.is_empty() {
        eprintln!("no allocator could be built; nothing to run");
        return ExitCode::FAILURE;
    }

    let mut results = Results::new(
        &cfg,
        runnable.iter().map(|(a, _, _)| *a).collect(),
        skipped,
        machine,
    );
    let total: usize = runnable
        .iter()
        .map(|(a, _, _)| a.max_reps.min(cfg.reps))
        .sum::<usize>()
        * cfg.workloads.len();
    let timeout = Duration::from_secs_f64((300.0 * cfg.scale).max(60.0));
    let mut progress = Progress::new();
    let mut done = 0;
    let mut quiet = quiet::Quiet::default();
    let n = runnable.len();
    // Strides coprime with the number of allocators: each repetition runs
    // them in another order, so no allocator always follows the same one
    // (a process can leave the machine in a state the next one pays for,
    // e.g. fragmented memory that the kernel compacts on the next process's
    // first huge-page faults), and the median drops such a run.
    let strides: Vec<usize> = (1..n.max(2)).filter(|&s| gcd(s, n) == 1).collect();
    for rep in 0..cfg.reps {
        let stride = strides[rep % strides.len()];
        for (wi, workload) in cfg.workloads.iter().enumerate() {
            for k in 0..n {
                let ai = (rep + wi + k * stride) % n;
                let (alloc, bin, preload) = &runnable[ai];
                if rep >= alloc.max_reps {
                    continue;
                }
                done += 1;
                let status = format!(
                    "run {done}/{total}  rep {}/{}  {:<14} {:<11}",
                    rep + 1,
                    cfg.reps,
                    workload.name,
                    alloc.name
                );
                progress.update(&status);
                let quiet_now = quiet.wait(|waited| {
                    progress.update(&format!("{status} (machine busy, waiting {waited}s)"))
                });
                if !quiet_now {
                    results.busy_runs += 1;
                }
                progress.update(&status);
                let run = exec::run(
                    bin,
                    alloc.binary_name(),
                    preload.as_deref(),
                    workload.name,
                    cfg.scale,
                    timeout,
                );
                match run {
                    Ok(sample) => results.samples[wi][ai].push(Sample {
                        busy: !quiet_now,
                        ..sample
                    }),
                    Err(e) => {
                        progress.finish_line();
                        eprintln!("  {} on {}: {e}", workload.name, alloc.name);
                        results.failures[wi][ai] = Some(e);
                    }
                }
            }
        }
        // Write after every repetition, so an interrupted run still leaves a report.
        results.reps_done = rep + 1;
        if let Err(e) = write_outputs(&results, &cfg.out_dir) {
            progress.finish_line();
            eprintln!("cannot write results: {e}");
            return ExitCode::FAILURE;
        }
    }
    if results.busy_runs > 0 {
        progress.finish_line();
        eprintln!(
            "note: {} runs started while other processes kept the CPUs busy",
            results.busy_runs
        );
    }
    progress.update(&format!("done: {total} runs"));
    progress.finish_line();

    for s in report::markdown::modes(&results) {
        println!("{}", s.mode.title());
        println!("{}", report::markdown::summary_table(&results, &s));
    }
    println!(
        "written: {}/latest.md, chart.svg, runs.tsv",
        cfg.out_dir.display()
    );
    ExitCode::SUCCESS
}

/// Allocators ready to run, each with its workload binary and, in C mode, its library.
type Runnable = Vec<(alloc::Allocator, PathBuf, Option<PathBuf>)>;
/// Allocators left out: name and reason.
type Skipped = Vec<(String, String)>;

/// Builds (or, with `--no-build`, finds) every configured allocator's binary. Returns the ones
/// that can run and, for the others, why not.
fn build_all(cfg: &Config, paths: &Paths) -> (Runnable, Skipped) {
    let mut runnable = Vec::new();
    let mut skipped = Vec::new();
    let mut progress = Progress::new();
    for a in &cfg.allocators {
        let result = if cfg.no_build {
            let bin = paths.binary(a);
            if bin.exists() {
                Ok(bin)
            } else {
                Err(format!(
                    "no binary at {} (run without --no-build)",
                    bin.display()
                ))
            }
        } else {
            progress.update(&format!("building workload binary for {} ...", a.name));
            build::build(paths, a)
        };
        let result = result.and_then(|bin| Ok((bin, build::preload(paths, a, cfg.no_build)?)));
        match result {
            Ok((bin, lib)) => runnable.push((*a, bin, lib)),
            Err(e) => {
                progress.finish_line();
                eprintln!("SKIPPING {}: {e}", a.name);
                skipped.push((a.name.to_string(), e));
            }
        }
    }
    progress.finish_line();
    (runnable, skipped)
}

fn write_outputs(results: &Results, out_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let summaries = report::markdown::modes(results);
    std::fs::write(
        out_dir.join("latest.md"),
        report::markdown::render(results, &summaries),
    )?;
    let rust = report::Summary::of(results, alloc::Mode::Rust);
    std::fs::write(
        out_dir.join("chart.svg"),
        report::svg::render(results, &rust),
    )?;
    std::fs::write(out_dir.join("runs.tsv"), report::tsv(results))?;
    Ok(())
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
