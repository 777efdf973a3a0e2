#!/usr/bin/env bash
# Runs every check and test of emma. This is the command README.md gives
# for "run every test"; .ci/run calls it. Steps:
#   installs   rustup components and the stable toolchain if missing,
#              cargo-fuzz if missing, Miri's sysroot (network on first run)
#   format, clippy (warnings denied), rustdoc (warnings denied; public
#              and private items)
#   nightly    the whole suite with the default features (per-thread heaps
#              through TLS), doc tests included
#   tp-mode    the suite with --no-default-features (the thread-pointer mode)
#   checks     the suite with boundary-checks and hardened
#   hardened   the hardened tests with hardened alone
#   macros     the macros/ crate (trybuild cases included)
#   stable     the suite and the macros/ crate on the stable toolchain
#   miri       the engine's unit tests under Miri (about a minute of CPU)
#   fuzz       the fuzz target from the checked-in corpus, for a bounded time
# Every step runs even if an earlier one failed; the script ends with the
# time each step took, a line totalling every test result, and exits
# non-zero if any step failed.
#
# Knobs: EMMA_FUZZ_SECS (seconds per fuzz run, default 20).
set -uo pipefail
cd "$(dirname "$0")/.."

# One-shot builds gain nothing from incremental compilation's extra work.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Tests of every configuration share one optimised-with-debug-assertions
# profile, so dependencies are built once per toolchain.
ci=(--profile ci --no-fail-fast)
# With `allocator-api2`, emma's own test of the README's stable example runs.
all_apis=(--features allocator-api,allocator-api2)
MIRIFLAGS="${MIRIFLAGS:--Zmiri-ignore-leaks -Zmiri-permissive-provenance}"
export MIRIFLAGS

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
names=()
secs=()
cpus=()
results=()
n=0

# Sets cpu_now to the CPU seconds (user + system) this script's children
# have used so far: with the wall time it tells a slow step from a loaded
# machine. (`times` must run in this shell, not in a `$(...)` subshell.)
child_cpu() {
    times >"$logdir/times"
    cpu_now=$(awk 'NR == 2 { t = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%d\n", t }' "$logdir/times")
}

# run NAME COMMAND...: runs one step (COMMAND may be a function), logs it,
# times it and records whether it passed. Never stops the script.
run() {
    local name=$1
    shift
    n=$((n + 1))
    printf '\n==> %s\n' "$name"
    local t0=$SECONDS c0
    child_cpu
    c0=$cpu_now
    (
        set -e
        "$@"
    ) 2>&1 | tee "$logdir/$n.log"
    local rc=${PIPESTATUS[0]}
    names+=("$name")
    secs+=($((SECONDS - t0)))
    child_cpu
    cpus+=($((cpu_now - c0)))
    if [ "$rc" -eq 0 ]; then results+=(ok); else results+=(FAILED); fi
    printf '<== %s: %s (%ss wall, %ss CPU)\n' "$name" "${results[-1]}" "${secs[-1]}" "${cpus[-1]}"
}

installs() {
    rustup --version
    rustc --version
    # rust-toolchain.toml lists these; a nightly installed before that
    # file did may lack them. `rustup component add` never prompts.
    local have
    have="$(rustup component list --installed)"
    for c in rustfmt clippy rust-src miri; do
        grep -q "^$c" <<<"$have" || rustup component add "$c"
    done
    rustup run stable rustc --version >/dev/null 2>&1 ||
        rustup toolchain install stable --profile minimal --no-self-update
    rustc +stable --version
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    # Builds Miri's sysroot now, so the Miri step measures only the tests.
    cargo miri setup
}

clippy() {
    cargo clippy --all-targets --features allocator-api,allocator-api2,boundary-checks,hardened -- -D warnings
    cargo clippy --all-targets --no-default-features --features hardened -- -D warnings
    cargo clippy -p emma-macro-tests --all-targets -- -D warnings
}

fuzz() {
    # Fuzzing grows the corpus in place; work on a copy so the checkout
    # stays clean.
    local corpus
    corpus="$(mktemp -d)"
    cp -r fuzz/corpus/ops/. "$corpus"
    local secs="${EMMA_FUZZ_SECS:-20}"
    cargo fuzz run ops "$corpus" -- -max_total_time="$secs" -rss_limit_mb=8192
    cargo fuzz run --features tls,hardened ops "$corpus" -- -max_total_time="$secs" -rss_limit_mb=8192
    rm -rf "$corpus"
}

run "installs" installs
run "format" cargo fmt --all --check
run "clippy" clippy
rustdoc() {
    export RUSTDOCFLAGS="-D warnings"
    cargo doc --no-deps "${all_apis[@]}"
    # The internals are documented for readers of the code: their links
    # must hold too.
    cargo doc --no-deps --document-private-items "${all_apis[@]}"
}
run "rustdoc" rustdoc
run "tests: nightly, default features" cargo test "${ci[@]}" "${all_apis[@]}"
run "tests: thread-pointer mode (--no-default-features)" \
    cargo test "${ci[@]}" --no-default-features --features allocator-api2 --tests
run "tests: boundary-checks, hardened" cargo test "${ci[@]}" --features boundary-checks,hardened --tests
run "tests: hardened alone" cargo test "${ci[@]}" --features hardened --lib --test hardened
run "tests: macros/ crate" cargo test "${ci[@]}" -p emma-macro-tests
# The benchmark suite's own logic (its runner's options, parsing); the
# glibc build, which needs no peer allocator compiled.
run "tests: bench/ crate" cargo test "${ci[@]}" -p emma-bench --features a-system
run "tests: stable toolchain" cargo +stable test "${ci[@]}" --features allocator-api2
run "tests: macros/ crate on stable" cargo +stable test "${ci[@]}" -p emma-macro-tests
# Miri cannot run emma's TLS assembly: the thread-pointer mode it is.
run "miri: engine unit tests" cargo miri test --no-default-features --lib
run "fuzz: bounded, from the checked-in corpus" fuzz

printf '\n==> summary (wall time, CPU time)\n'
failed_steps=0
passed=0
failed=0
skipped=0
for i in "${!names[@]}"; do
    # `test result:` lines come from cargo's harness (unit, integration
    # and doc tests, Miri's run); trybuild prints one line per case
    # (`test tests/ui/... [should pass] ... ok`), counted as tests too.
    read -r p f s < <(awk '{ gsub(/\033\[[0-9;]*m/, "") }
        /^test result:/ { p += $4; f += $6; s += $8 }
        /^test .* \[should (pass|fail to compile)\] \.\.\. / { if ($NF == "ok") p++; else f++ }
        END { print p + 0, f + 0, s + 0 }' "$logdir/$((i + 1)).log")
    if [ "${results[$i]}" != ok ]; then
        failed_steps=$((failed_steps + 1))
        # A step that failed without a failing test (a build error, a
        # crashed test binary, a lint) still counts as one failure.
        [ "$f" -gt 0 ] || f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    printf '%6ss %6ss  %-6s  %s\n' "${secs[$i]}" "${cpus[$i]}" "${results[$i]}" "${names[$i]}"
done
child_cpu
printf '%6ss %6ss  total (wall, CPU)\n' "$SECONDS" "$cpu_now"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed_steps" -eq 0 ]
