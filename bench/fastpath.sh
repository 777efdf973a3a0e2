#!/usr/bin/env bash
# Instructions per small (32-byte) alloc+free pair, counted with callgrind.
#
#   bench/fastpath.sh [allocator ...]     default: emma-tls emma mimalloc
#
# For each allocator it builds the `fastpath` binary with that allocator selected, then runs it
# under callgrind four times: N1 and N2 pairs, and the same loop without allocator calls
# ("baseline") for N1 and N2. Instructions per pair =
#   ((Ir(pairs,N2) - Ir(pairs,N1)) - (Ir(baseline,N2) - Ir(baseline,N1))) / (N2 - N1)
# The difference of two N removes everything that does not scale with N (process start-up,
# first-use heap creation); subtracting the baseline removes the loop's own instructions.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="$root/target/bench-run"
out="$CARGO_TARGET_DIR/fastpath"
mkdir -p "$out"
N1=${N1:-100000}
N2=${N2:-300000}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }

feature_of() {
  case "$1" in
    emma-tls) echo a-emma-tls ;; emma) echo a-emma ;; mimalloc) echo a-mimalloc ;;
    jemalloc) echo a-jemalloc ;; snmalloc) echo a-snmalloc ;; glibc) echo a-system ;;
    emma-0.0.1) echo a-emma-orig ;; *) echo "unknown allocator $1" >&2; return 1 ;;
  esac
}

# Total instructions (Ir) of one callgrind run; fails if the program fails under valgrind.
instructions() {
  local bin=$1 mode=$2 n=$3 file="$out/callgrind.$4.$2.$3.out"
  valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" "$mode" "$n" >"$file.log" 2>&1 || return 1
  awk '/^summary:/ { print $2 }' "$file"
}

allocs=("$@")
[ ${#allocs[@]} -gt 0 ] || allocs=(emma-tls emma mimalloc)
printf '%-12s %s\n' allocator "instructions per 32-byte alloc+free pair"
for a in "${allocs[@]}"; do
  feature=$(feature_of "$a")
  if ! cargo build --quiet --release -p emma-bench --bin fastpath --features "$feature" 2>"$out/build-$a.log"; then
    printf '%-12s build failed (see %s)\n' "$a" "$out/build-$a.log"
    continue
  fi
  bin="$out/fastpath-$a"
  cp "$CARGO_TARGET_DIR/release/fastpath" "$bin"
  if ! { p1=$(instructions "$bin" pairs "$N1" "$a") && p2=$(instructions "$bin" pairs "$N2" "$a") &&
         b1=$(instructions "$bin" baseline "$N1" "$a") && b2=$(instructions "$bin" baseline "$N2" "$a"); }; then
    # snmalloc, for one, refuses to initialise under valgrind.
    printf '%-12s does not run under valgrind (see %s)\n' "$a" "$out/callgrind.$a.*.log"
    continue
  fi
  awk -v a="$a" -v p1="$p1" -v p2="$p2" -v b1="$b1" -v b2="$b2" -v n1="$N1" -v n2="$N2" 'BEGIN {
    printf "%-12s %.1f   (loop overhead %.1f subtracted)\n", a, ((p2 - p1) - (b2 - b1)) / (n2 - n1), (b2 - b1) / (n2 - n1)
  }'
done
