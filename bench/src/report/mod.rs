//! Results of a run, their statistics, and the report files made from them.

pub mod machine;
pub mod markdown;
pub mod svg;

use crate::runner::alloc::{Allocator, Mode};
use crate::runner::config::Config;
use crate::workloads::Workload;
use machine::Machine;
use std::fmt::Write;

/// What one workload process reported.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Wall time of the workload inside the process.
    pub seconds: f64,
    /// The workload's checksum (must be equal for every allocator).
    pub checksum: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_kib: u64,
    /// Resident set size after the workload freed everything, KiB.
    pub end_kib: u64,
    /// The run started while other processes kept the CPUs busy (set by the runner).
    pub busy: bool,
}

/// Every measurement of a run.
pub struct Results {
    /// Workloads, in report order.
    pub workloads: Vec<&'static Workload>,
    /// Allocators that were built and run, in report order.
    pub allocators: Vec<Allocator>,
    /// Allocators left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// `samples[workload][allocator]`: one per successful repetition.
    pub samples: Vec<Vec<Vec<Sample>>>,
    /// `failures[workload][allocator]`: the last error, if a run failed.
    pub failures: Vec<Vec<Option<String>>>,
    /// Repetitions asked for and completed so far.
    pub reps: usize,
    /// Repetitions completed.
    pub reps_done: usize,
    /// Work multiplier.
    pub scale: f64,
    /// Whether this was a `--quick` smoke run.
    pub quick: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Runs that started although other processes were still using the CPUs.
    pub busy_runs: usize,
}

impl Results {
    /// Empty results for the configured workloads and the allocators that were built.
    pub fn new(
        cfg: &Config,
        allocators: Vec<Allocator>,
        skipped: Vec<(String, String)>,
        machine: Machine,
    ) -> Results {
        let (w, a) = (cfg.workloads.len(), allocators.len());
        Results {
            workloads: cfg.workloads.clone(),
            allocators,
            skipped,
            samples: vec![vec![Vec::new(); a]; w],
            failures: vec![vec![None; a]; w],
            reps: cfg.reps,
            reps_done: 0,
            scale: cfg.scale,
            quick: cfg.quick,
            machine,
            busy_runs: 0,
        }
    }
}

/// Statistics of one (workload, allocator) cell.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    /// Median time, seconds.
    pub median_s: f64,
    /// Fastest and slowest repetition.
    pub min_s: f64,
    /// Slowest repetition.
    pub max_s: f64,
    /// Median time / the baseline's median time.
    pub ratio: Option<f64>,
    /// Median peak RSS, MiB.
    pub peak_mib: f64,
    /// Median peak RSS / the baseline's.
    pub rss_ratio: Option<f64>,
    /// Median RSS after everything was freed, MiB.
    pub end_mib: f64,
}

/// Per-allocator aggregates.
#[derive(Clone, Debug, Default)]
pub struct AllocSummary {
    /// Geometric mean of the time ratios, and over how many workloads.
    pub geomean: Option<(f64, usize)>,
    /// Largest time ratio and its workload.
    pub worst: Option<(f64, &'static str)>,
    /// Geometric mean of the peak-RSS ratios.
    pub rss_geomean: Option<f64>,
    /// churn-2t throughput over churn-1t throughput (2.0 is perfect on 2 cores).
    pub scaling: Option<f64>,
}

/// Everything the report shows for one mode, computed once from [`Results`].
pub struct Summary {
    /// The mode: only its allocators have cells, ratios are to its baseline.
    pub mode: Mode,
    /// `cells[workload][allocator]`, `None` where no run succeeded or the allocator is not of
    /// this mode.
    pub cells: Vec<Vec<Option<Cell>>>,
    /// One per allocator.
    pub per_alloc: Vec<AllocSummary>,
    /// Per workload: allocators whose checksum differed from the others'.
    pub checksum_mismatch: Vec<Vec<&'static str>>,
}

/// Median of a non-empty slice.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Geometric mean of positive values (`None` if empty).
pub fn geomean(values: &[f64]) -> Option<f64> {
    (!values.is_empty())
        .then(|| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

impl Summary {
    /// Computes medians, ratios to the mode's baseline and the aggregates, for the allocators
    /// of `mode`.
    pub fn of(r: &Results, mode: Mode) -> Summary {
        let base = r.allocators.iter().position(|a| a.name == mode.baseline());
        let mut cells: Vec<Vec<Option<Cell>>> = r
            .samples
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&r.allocators)
                    .map(|(s, a)| {
                        (!s.is_empty() && a.in_mode(mode)).then(|| {
                            let times: Vec<f64> = s.iter().map(|x| x.seconds).collect();
                            let mib = |f: fn(&Sample) -> u64| {
                                median(&s.iter().map(|x| f(x) as f64 / 1024.0).collect::<Vec<_>>())
                            };
                            Cell {
                                median_s: median(&times),
                                min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
                                max_s: times.iter().copied().fold(0.0, f64::max),
                                ratio: None,
                                peak_mib: mib(|x| x.peak_kib),
                                rss_ratio: None,
                                end_mib: mib(|x| x.end_kib),
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        if let Some(b) = base {
            for row in &mut cells {
                if let Some(bc) = row[b] {
                    for c in row.iter_mut().flatten() {
                        c.ratio = Some(c.median_s / bc.median_s);
                        c.rss_ratio = (bc.peak_mib > 0.0).then(|| c.peak_mib / bc.peak_mib);
                    }
                }
            }
        }

        let per_alloc = (0..r.allocators.len())
            .map(|a| {
                let col: Vec<(&'static str, Cell)> = r
                    .workloads
                    .iter()
                    .zip(&cells)
                    .filter_map(|(w, row)| row[a].map(|c| (w.name, c)))
                    .collect();
                let ratios: Vec<f64> = col.iter().filter_map(|(_, c)| c.ratio).collect();
                let rss: Vec<f64> = col.iter().filter_map(|(_, c)| c.rss_ratio).collect();
                let time_of = |name: &str| {
                    col.iter()
                        .find(|(w, _)| *w == name)
                        .map(|(_, c)| c.median_s)
                };
                AllocSummary {
                    geomean: geomean(&ratios).map(|g| (g, ratios.len())),
                    worst: col
                        .iter()
                        .filter_map(|(w, c)| c.ratio.map(|x| (x, *w)))
                        .max_by(|x, y| x.0.total_cmp(&y.0)),
                    rss_geomean: geomean(&rss),
                    scaling: time_of("churn-1t")
                        .zip(time_of("churn-2t"))
                        .map(|(t1, t2)| 2.0 * t1 / t2),
                }
            })
            .collect();

        // Checksums: the value most allocators agree on is taken as right.
        let checksum_mismatch = r
            .samples
            .iter()
            .map(|row| {
                let mut counts: Vec<(u64, usize)> = Vec::new();
                for s in row.iter().flatten() {
                    match counts.iter_mut().find(|(c, _)| *c == s.checksum) {
                        Some(e) => e.1 += 1,
                        None => counts.push((s.checksum, 1)),
                    }
                }
                let Some(&(majority, _)) = counts.iter().max_by_key(|e| e.1) else {
                    return Vec::new();
                };
                r.allocators
                    .iter()
                    .zip(row)
                    .filter(|(_, s)| s.iter().any(|x| x.checksum != majority))
                    .map(|(a, _)| a.name)
                    .collect()
            })
            .collect();
        Summary {
            mode,
            cells,
            per_alloc,
            checksum_mismatch,
        }
    }
}

/// Every run as tab-separated values, for anyone who wants more than the medians.
pub fn tsv(r: &Results) -> String {
    let mut out = String::from(
        "workload\tallocator\trep\tseconds\tchecksum\tpeak_rss_kib\tend_rss_kib\tmachine_busy\n",
    );
    for (w, row) in r.workloads.iter().zip(&r.samples) {
        for (a, samples) in r.allocators.iter().zip(row) {
            for (i, s) in samples.iter().enumerate() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{:.6}\t{:016x}\t{}\t{}\t{}",
                    w.name,
                    a.name,
                    i + 1,
                    s.seconds,
                    s.checksum,
                    s.peak_kib,
                    s.end_kib,
                    s.busy
                )
                .unwrap();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_and_geomean() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let g = super::geomean(&[0.5, 2.0]).unwrap();
        assert!((g - 1.0).abs() < 1e-12);
        assert!(super::geomean(&[]).is_none());
    }
}
