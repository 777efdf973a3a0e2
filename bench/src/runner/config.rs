//! Command-line options of the runner.

use super::alloc::{self, Allocator};
use crate::workloads::{self, Workload};
use std::path::PathBuf;

/// What to run and where to write it.
pub struct Config {
    /// Repetitions of the whole suite; the report takes the median over them.
    pub reps: usize,
    /// Multiplier of every workload's amount of work.
    pub scale: f64,
    /// Allocators to build and run, in report order.
    pub allocators: Vec<Allocator>,
    /// Workloads to run, in report order.
    pub workloads: Vec<&'static Workload>,
    /// Reuse the binaries of the previous build instead of building.
    pub no_build: bool,
    /// A smoke run (`--quick`): 1 repetition at a small scale, written to `results/quick/`.
    pub quick: bool,
    /// Where latest.md, chart.svg and runs.tsv go.
    pub out_dir: PathBuf,
}

const USAGE: &str = "\
usage: runner [--quick] [--reps N] [--scale X] [--alloc a,b,..] [--workload w,..] [--no-build]

  --quick        smoke run: 1 repetition at scale 0.05, results in bench/results/quick/
  --reps N       repetitions (default 3, or $EMMA_BENCH_REPS)
  --scale X      work multiplier (default 1, or $EMMA_BENCH_SCALE)
  --alloc LIST   only these allocators (default: all but the hardened comparison,
                 emma-tls-hardened, c-emma-hardened and c-scudo; with a pair such as
                 emma-tls,emma-tls-hardened the report adds what `hardened` costs)
  --workload L   only these workloads (default: all)
  --no-build     reuse target/bench-run/bins/ from the last build
  --out DIR      output directory (default bench/results)";

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn pick<T: Copy>(
    list: &str,
    all: &[T],
    name: impl Fn(&T) -> &str,
    what: &str,
) -> Result<Vec<T>, String> {
    let wanted: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for w in &wanted {
        if !all.iter().any(|x| name(x) == *w) {
            let known: Vec<&str> = all.iter().map(&name).collect();
            return Err(format!("unknown {what} {w:?}; known: {}", known.join(", ")));
        }
    }
    // Keep report order whatever order they were given in.
    Ok(all
        .iter()
        .copied()
        .filter(|x| wanted.contains(&name(x)))
        .collect())
}

impl Config {
    /// Parses the command line; `Err` carries the message to print (usage included for --help).
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
        bench_dir: PathBuf,
    ) -> Result<Config, String> {
        let mut cfg = Config {
            reps: env_num("EMMA_BENCH_REPS").unwrap_or(3),
            scale: env_num("EMMA_BENCH_SCALE").unwrap_or(1.0),
            allocators: alloc::ALL
                .iter()
                .filter(|a| !alloc::OPT_IN.contains(&a.name))
                .copied()
                .collect(),
            workloads: workloads::ALL.iter().collect(),
            no_build: false,
            quick: false,
            out_dir: bench_dir.join("results"),
        };
        let mut out_given = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--quick" => cfg.quick = true,
                "--no-build" => cfg.no_build = true,
                "--reps" => {
                    cfg.reps = value("--reps")?
                        .parse()
                        .map_err(|e| format!("--reps: {e}"))?
                }
                "--scale" => {
                    cfg.scale = value("--scale")?
                        .parse()
                        .map_err(|e| format!("--scale: {e}"))?
                }
                "--alloc" => {
                    cfg.allocators = pick(&value("--alloc")?, alloc::ALL, |a| a.name, "allocator")?
                }
                "--workload" => {
                    let all: Vec<&Workload> = workloads::ALL.iter().collect();
                    cfg.workloads = pick(&value("--workload")?, &all, |w| w.name, "workload")?;
                }
                "--out" => {
                    cfg.out_dir = PathBuf::from(value("--out")?);
                    out_given = true;
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if cfg.quick {
            cfg.reps = 1;
            cfg.scale = 0.05;
            if !out_given {
                cfg.out_dir = cfg.out_dir.join("quick");
            }
        }
        if cfg.reps == 0 || cfg.scale.is_nan() || cfg.scale <= 0.0 {
            return Err("--reps must be at least 1 and --scale positive".into());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use std::path::PathBuf;

    fn names(args: &[&str]) -> Vec<&'static str> {
        let cfg =
            Config::from_args(args.iter().map(|s| s.to_string()), PathBuf::from("bench")).unwrap();
        cfg.allocators.iter().map(|a| a.name).collect()
    }

    #[test]
    fn the_hardened_comparison_runs_only_when_named() {
        let default = names(&[]);
        assert!(default.contains(&"c-emma") && default.contains(&"emma-tls"));
        for opt_in in ["emma-tls-hardened", "c-emma-hardened", "c-scudo"] {
            assert!(!default.contains(&opt_in), "{opt_in}");
        }
        assert_eq!(
            names(&["--alloc", "c-scudo,c-emma-hardened,c-emma"]),
            ["c-emma", "c-emma-hardened", "c-scudo"]
        );
    }
}
