#!/usr/bin/env bash
# Runs faka-bench once per variant, in turn, ROUNDS times (A, B, A, B, …),
# each run's output saved with the machine's load average before and after
# it, then prints the targets' figures of every run side by side: the way
# docs/BENCHMARKS.md compares settings or binaries on this shared machine.
#
#   ROUNDS=3 scripts/bench_alternate.sh "--worker-nice 5" "--worker-nice 0" \
#       -- --scenario read,flow,flash --proxy nginx --duration 5 --flash-buyers 2000
#
# A variant is a string of faka-bench flags (`--faka BINARY` compares
# binaries); the flags after `--` go to every run. Output goes to
# target/alternate/<time>/ (round-variant.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

variants=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    variants+=("$1")
    shift
done
[ $# -gt 0 ] && shift
common=("$@")
[ ${#variants[@]} -gt 0 ] || { echo "usage: $0 VARIANT... -- FLAGS..." >&2; exit 2; }
bench=${FAKA_BENCH:-target/release/faka-bench}
out=target/alternate/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
for round in $(seq 1 "${ROUNDS:-3}"); do
    for i in "${!variants[@]}"; do
        file=$out/$round-$i.txt
        {
            echo "variant: ${variants[$i]}"
            echo "loadavg before: $(cat /proc/loadavg)"
        } >"$file"
        # shellcheck disable=SC2086 # a variant is several flags
        "$bench" ${variants[$i]} "${common[@]}" >>"$file" 2>/dev/null || true
        echo "loadavg after: $(cat /proc/loadavg)" >>"$file"
        echo "$file: ${variants[$i]}" >&2
    done
done
for f in "$out"/*.txt; do
    echo "== $f"
    grep -E '^(variant|loadavg)|^  .*(met|missed)' "$f" || true
done
