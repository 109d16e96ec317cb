#!/usr/bin/env bash
# Profiles faka while faka-bench drives one scenario: CPU per thread and the
# hottest symbols, from `perf record` on the faka process (installed here
# when missing). With FLAMEGRAPH=1 it also draws a flame graph with inferno
# (installed with `cargo install inferno` when missing).
#
#   scripts/profile.sh [scenario] [seconds]     # default: flow 5
#   FLAMEGRAPH=1 scripts/profile.sh import 10
#
# Output goes to target/profile/<scenario>/ (perf.data, threads.txt,
# symbols.txt, bench.txt, flame.svg). See docs/BENCHMARKS.md, "Where the
# time goes", for how the numbers there were taken.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:-flow}
secs=${2:-5}
# Each timed part runs for `run` seconds. Set-up before it: flow and mixed
# first import 200,000 keys; read first measures the trivial ceiling for a
# whole run (faka is idle meanwhile).
run=$((secs + 9))
case "$scenario" in
flow | mixed) default_warmup=12 ;;
import) default_warmup=2 ;;
read) default_warmup=$((run + 4)) ;;
*) default_warmup=4 ;;
esac
warmup=${WARMUP_SECS:-$default_warmup}
out="target/profile/$scenario"
mkdir -p "$out"

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v perf >/dev/null 2>&1 || ! perf --version >/dev/null 2>&1; then
    echo "profile: installing perf" >&2
    need_root apt-get update -qq
    need_root apt-get install -y -qq linux-perf >/dev/null 2>&1 ||
        need_root apt-get install -y -qq linux-tools-generic >/dev/null
fi
if [ "${FLAMEGRAPH:-0}" = 1 ] && ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "profile: installing inferno (flame graphs)" >&2
    cargo install inferno --locked >/dev/null
fi

cargo build --release --bins
# The bench runs longer than the recording, so faka is busy the whole time.
if [ "$scenario" != read ]; then run=$((secs + warmup + 5)); fi
target/release/faka-bench --scenario "$scenario" --duration "$run" \
    >"$out/bench.txt" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT

pid=""
deadline=$((SECONDS + 120))
while [ -z "$pid" ]; do
    pid=$(pgrep -n -P "$bench" -x faka || true)
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$bench" 2>/dev/null; then
        echo "profile: faka did not start; see $out/bench.txt" >&2
        exit 1
    fi
    [ -n "$pid" ] || sleep 0.2
done
echo "profile: faka pid $pid; $warmup s of set-up and warm-up, then $secs s recorded" >&2
sleep "$warmup"
perf record -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2>"$out/perf-record.txt"

perf report -i "$out/perf.data" --no-children --stdio --sort comm 2>/dev/null |
    grep -E '^ +[0-9]' >"$out/threads.txt" || true
perf report -i "$out/perf.data" --no-children --stdio --sort comm,symbol 2>/dev/null |
    grep -E '^ +[0-9]' | head -60 >"$out/symbols.txt" || true
if [ "${FLAMEGRAPH:-0}" = 1 ]; then
    perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/stacks.folded"
    if [ -s "$out/stacks.folded" ]; then
        inferno-flamegraph <"$out/stacks.folded" >"$out/flame.svg"
    else
        echo "profile: no samples recorded; is the warm-up (WARMUP_SECS) right?" >&2
    fi
fi

wait "$bench" || true
trap - EXIT
echo "== CPU by thread (share of faka's samples)"
head -15 "$out/threads.txt"
echo "== hottest symbols"
head -25 "$out/symbols.txt" | cut -c1-150
echo "== files in $out"
ls "$out"
