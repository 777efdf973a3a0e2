#!/usr/bin/env bash
# Runs every check and test of emma: formatting, lints, warning-free docs,
# the full test suite without `tls`, with `tls`, and with
# `tls,boundary-checks,hardened`, the macros/ crate, Miri over the engine's
# unit tests, and the fuzz target for a bounded time.
# This is the command README.md gives for "run every test"; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything is also logged, so the closing line can total the test results.
log="$(mktemp)"
exec > >(tee "$log") 2>&1

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustc --version
cargo --version

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features tls,boundary-checks,hardened,allocator-api,allocator-api2 -- -D warnings
cargo clippy --all-targets --features hardened -- -D warnings
cargo clippy -p emma-macro-tests --all-targets -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features tls,allocator-api,allocator-api2

step "tests (stable engine: no tls)"
cargo test --profile ci --features allocator-api2

step "tests (tls)"
cargo test --profile ci --features tls,allocator-api,allocator-api2

step "tests (boundary-checks, hardened, tls)"
cargo test --profile ci --features tls,boundary-checks,hardened

step "macros crate (no tls, then tls)"
cargo test --profile ci -p emma-macro-tests
cargo test --profile ci -p emma-macro-tests --features tls

step "miri (engine unit tests over the std-backed OS backend)"
rustup component add miri
MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-permissive-provenance" cargo miri test --lib

step "fuzz (bounded, from the checked-in seed corpus)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Fuzzing grows the corpus in place; work on a copy so the checkout stays clean.
corpus="$(mktemp -d)"
cp -r fuzz/corpus/ops/. "$corpus"
cargo fuzz run ops "$corpus" -- -max_total_time="${EMMA_FUZZ_SECS:-45}" -rss_limit_mb=8192
cargo fuzz run --features tls,hardened ops "$corpus" -- -max_total_time="${EMMA_FUZZ_SECS:-30}" -rss_limit_mb=8192
rm -rf "$corpus"

step "done"
# The totals of every `cargo test` run above (the fuzz and Miri steps included).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
