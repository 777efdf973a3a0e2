//! Waiting for a quiet machine before each run.
//!
//! The suite runs on the developers' 2-core machines, where a build or test of someone else can
//! take a whole core and skew the multi-threaded workloads by 2× or more. Before each run the
//! runner samples /proc/stat (it runs nothing itself at that moment) and waits while other
//! processes use more than a third of a core; after a limit it runs anyway and the report
//! counts such runs. If the machine stays busy (a long test run next door), waiting before every
//! run would stretch the suite for hours, so after a few fruitless waits in a row it stops
//! waiting, only counting, until it sees the machine quiet again.

use std::time::{Duration, Instant};

/// Busy fraction of all CPUs above which the machine counts as busy.
const BUSY: f64 = 0.33;
/// Longest wait for quiet before running anyway.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Fruitless waits in a row after which the runner stops waiting (but keeps counting).
const GIVE_UP_AFTER: u32 = 3;
/// Length of one /proc/stat sample.
const SAMPLE: Duration = Duration::from_millis(50);

/// (busy, total) jiffies of all CPUs.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum(); // user..steal; guest time is already in user
    let idle = v.get(3)? + v.get(4)?; // idle + iowait
    Some((total - idle, total))
}

/// Fraction of all CPUs busy over one short sample (in units of the whole machine: on 2 CPUs,
/// one busy core is 0.5).
fn busy_fraction() -> Option<f64> {
    let (b0, t0) = cpu_times()?;
    std::thread::sleep(SAMPLE);
    let (b1, t1) = cpu_times()?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// Tracks whether waiting for quiet is still worth it.
#[derive(Default)]
pub struct Quiet {
    fruitless: u32,
}

impl Quiet {
    /// Waits until the machine is quiet, calling `waiting(seconds)` while it waits. Returns
    /// false if the machine was still busy when the run had to start (or true at once if
    /// /proc/stat cannot be read).
    pub fn wait(&mut self, mut waiting: impl FnMut(u64)) -> bool {
        let start = Instant::now();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let max_wait = if self.fruitless >= GIVE_UP_AFTER {
            Duration::ZERO
        } else {
            MAX_WAIT
        };
        loop {
            match busy_fraction() {
                None => return true,
                // Busy cores (fraction × CPUs) at most a third of one core.
                Some(b) if b * cpus <= BUSY => {
                    self.fruitless = 0;
                    return true;
                }
                Some(_) if start.elapsed() >= max_wait => {
                    self.fruitless += 1;
                    return false;
                }
                Some(_) => {
                    waiting(start.elapsed().as_secs());
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}
