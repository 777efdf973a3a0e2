#!/usr/bin/env bash
# Instructions per small (32-byte) alloc+free pair, counted with callgrind.
#
#   bench/fastpath.sh [allocator ...]     default: emma-tls emma mimalloc
#
# emma-tls-hardened is emma-tls with the `hardened` feature (what a checked pair costs).
#
# For each allocator it builds the `fastpath` binary with that allocator selected, then runs it
# under callgrind: N1 and N2 pairs, and the same loop without allocator calls ("baseline") for
# N1 and N2. Instructions per pair =
#   ((Ir(pairs,N2) - Ir(pairs,N1)) - (Ir(baseline,N2) - Ir(baseline,N1))) / (N2 - N1)
# The difference of two N removes everything that does not scale with N (process start-up,
# first-use heap creation); subtracting the baseline removes the loop's own instructions.
# Two pair loops: "layout" hides size and alignment from the compiler, "size" only the size
# (the alignment is a constant, as in Box and Vec).
#
# Then the C path: bench/fastpath_c.c (malloc+free pairs, malloc_usable_size) with emma's
# drop-in library preloaded, counted the same way; its loops call through the PLT, so the
# call, the PLT jump and the return are part of the count. glibc's count (nothing preloaded)
# is printed for reference. C_ONLY=1 skips the Rust part.
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
    emma-tls-hardened) echo a-emma-tls-hardened ;;
    jemalloc) echo a-jemalloc ;; snmalloc) echo a-snmalloc ;; glibc) echo a-system ;;
    emma-0.0.1) echo a-emma-orig ;; *) echo "unknown allocator $1" >&2; return 1 ;;
  esac
}

# Total instructions (Ir) of one callgrind run; fails if the program fails under valgrind.
# With $preload set, the program runs with that library preloaded.
preload=
instructions() {
  local bin=$1 mode=$2 n=$3 file="$out/callgrind.$4.$2.$3.out"
  env ${preload:+LD_PRELOAD="$preload"} valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$bin" "$mode" "$n" >"$file.log" 2>&1 || return 1
  awk '/^summary:/ { print $2 }' "$file"
}

allocs=("$@")
[ ${#allocs[@]} -gt 0 ] || allocs=(emma-tls emma mimalloc)
# Per-operation count: ((run(mode,N2) - run(mode,N1)) - (run(base,N2) - run(base,N1))) / (N2 - N1).
per_op() { # bin mode base-mode tag
  local bin=$1 mode=$2 base=$3 tag=$4 m1 m2 b1 b2
  m1=$(instructions "$bin" "$mode" "$N1" "$tag") && m2=$(instructions "$bin" "$mode" "$N2" "$tag") &&
    b1=$(instructions "$bin" "$base" "$N1" "$tag") && b2=$(instructions "$bin" "$base" "$N2" "$tag") || return 1
  awk -v m1="$m1" -v m2="$m2" -v b1="$b1" -v b2="$b2" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "%.1f", ((m2 - m1) - (b2 - b1)) / (n2 - n1) }'
}

if [ -z "${C_ONLY:-}" ]; then
printf '%-12s %-28s %s\n' allocator "pair, layout unknown" "pair, alignment constant"
for a in "${allocs[@]}"; do
  feature=$(feature_of "$a")
  if ! cargo build --quiet --release -p emma-bench --bin fastpath --features "$feature" 2>"$out/build-$a.log"; then
    printf '%-12s build failed (see %s)\n' "$a" "$out/build-$a.log"
    continue
  fi
  bin="$out/fastpath-$a"
  cp "$CARGO_TARGET_DIR/release/fastpath" "$bin"
  if ! { l=$(per_op "$bin" pairs baseline "$a") && z=$(per_op "$bin" sized baseline "$a"); }; then
    # snmalloc, for one, refuses to initialise under valgrind.
    printf '%-12s does not run under valgrind (see %s)\n' "$a" "$out/callgrind.$a.*.log"
    continue
  fi
  printf '%-12s %-28s %s\n' "$a" "$l" "$z"
done
echo
fi

# The C path. The drop-in library: its path is kept in this one variable (and its build in the
# line after it).
preload_lib="$CARGO_TARGET_DIR/release/libemma.so"
cargo build --quiet --release -p emma-malloc 2>"$out/build-preload.log" ||
  { echo "building the preload library failed (see $out/build-preload.log)" >&2; exit 1; }
cbin="$out/fastpath_c"
${CC:-cc} -O2 -o "$cbin" bench/fastpath_c.c
printf '%-12s %-28s %s\n' "C library" "malloc+free pair" "malloc_usable_size"
for c in emma-tls glibc; do
  if [ "$c" = glibc ]; then preload=; else preload=$preload_lib; fi
  pair=$(per_op "$cbin" pairs pairs-base "c-$c") || pair="failed (see $out/callgrind.c-$c.*.log)"
  usable=$(per_op "$cbin" usable usable-base "c-$c") || usable="failed"
  printf '%-12s %-28s %s\n' "$c" "$pair" "$usable"
done
