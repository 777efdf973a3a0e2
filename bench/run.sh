#!/usr/bin/env bash
# Runs emma's benchmark suite: builds one workload binary per allocator, runs every workload
# on each of them (interleaved, several repetitions), and writes bench/results/latest.md,
# chart.svg and runs.tsv. Options are passed to the runner; see `bench/run.sh --help`.
#   bench/run.sh            full suite, 3 repetitions (EMMA_BENCH_REPS to change)
#   bench/run.sh --quick    smoke run, results in bench/results/quick/
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# A target directory of its own, so the suite never waits on (or invalidates) the
# workspace's usual target/ lock.
export CARGO_TARGET_DIR="$root/target/bench-run"
cargo build --quiet --release -p emma-bench --bin runner
exec "$CARGO_TARGET_DIR/release/runner" "$@"
