//! One workload, one process: `workload <name> [scale]`.
//!
//! Built once per allocator (see `emma_bench::selected`). Prints a single line the runner parses:
//! `alloc=<name> workload=<name> seconds=<f> checksum=<hex> peak_rss_kib=<n> end_rss_kib=<n>
//! preload=<none|loaded|missing>` (whether the library in `LD_PRELOAD`, if any, is mapped).
//! The time covers the workload only (process start-up and exit excluded), including dropping
//! everything it allocated; the RSS figures are read after that.

use emma_bench::{proc_status, selected, workloads};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(name) = args.get(1) else {
        eprintln!(
            "usage: {} <workload> [scale]   (alloc: {})",
            args[0],
            selected::NAME
        );
        for w in workloads::ALL {
            eprintln!("  {:<15} {}", w.name, w.what);
        }
        return ExitCode::from(2);
    };
    if name == "--list" {
        for w in workloads::ALL {
            println!("{}", w.name);
        }
        return ExitCode::SUCCESS;
    }
    let Some(workload) = workloads::find(name) else {
        eprintln!("unknown workload {name:?}; try --list");
        return ExitCode::from(2);
    };
    let scale: f64 = match args.get(2).map(|s| s.parse()) {
        None => 1.0,
        Some(Ok(s)) if s > 0.0 => s,
        _ => {
            eprintln!("scale must be a positive number");
            return ExitCode::from(2);
        }
    };

    let start = Instant::now();
    let checksum = std::hint::black_box((workload.run)(scale));
    let seconds = start.elapsed().as_secs_f64();
    let rss = proc_status::rss();
    println!(
        "alloc={} workload={} seconds={seconds:.6} checksum={checksum:016x} peak_rss_kib={} end_rss_kib={} preload={}",
        selected::NAME,
        workload.name,
        rss.peak_kib,
        rss.now_kib,
        proc_status::preload()
    );
    ExitCode::SUCCESS
}
