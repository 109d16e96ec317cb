#!/usr/bin/env bash
# Profiles faka while faka-bench drives one scenario: CPU per thread and the
# hottest symbols, from `perf record` on the faka process (installed here
# when missing). With FLAMEGRAPH=1 it also draws a flame graph with inferno
# (installed with `cargo install inferno` when missing). With SCHED=1 it
# then records the scheduler on every CPU for a second (`perf sched
# record -a`) and tells where the machine's idle time goes
# (scripts/sched_idle.py; python3 is installed when missing).
#
#   scripts/profile.sh [scenario] [seconds]     # default: flow 5
#   FLAMEGRAPH=1 scripts/profile.sh import 10
#   SCHED=1 scripts/profile.sh flow 5
#
# Output goes to target/profile/<scenario>/ (perf.data, threads.txt,
# symbols.txt, bench.txt, flame.svg, sched-idle.txt). See docs/BENCHMARKS.md, "Where the
# time goes", for how the numbers there were taken.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:-flow}
secs=${2:-5}
# Each timed part runs for `run` seconds. Set-up before it: flow and mixed
# first import their keys; read and flow first measure the trivial ceiling
# for a whole run (faka is idle meanwhile), so recording starts after it.
run=$((secs + 9))
extra=()
case "$scenario" in
flow)
    run=$((secs + 6))
    # Two ceilings (in this process and outside it) run first.
    default_warmup=$((2 * run + 6))
    # Enough keys for the whole run at up to 15,000 keys/s.
    extra=(--flow-keys $(((run + 2) * 15000)))
    ;;
mixed) default_warmup=12 ;;
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
if [ "${SCHED:-0}" = 1 ] && ! command -v python3 >/dev/null 2>&1; then
    echo "profile: installing python3" >&2
    need_root apt-get update -qq
    need_root apt-get install -y -qq python3 >/dev/null
fi
if [ "${FLAMEGRAPH:-0}" = 1 ] && ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "profile: installing inferno (flame graphs)" >&2
    cargo install inferno --locked >/dev/null
fi

cargo build --release --bins
# The bench runs longer than the recording, so faka is busy the whole time.
case "$scenario" in read | flow) ;; *) run=$((secs + warmup + 5)) ;; esac
if [ "${SCHED:-0}" = 1 ]; then run=$((run + 3)); fi
target/release/faka-bench --scenario "$scenario" --duration "$run" "${extra[@]}" \
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
if [ "${SCHED:-0}" = 1 ]; then
    perf sched record -a -o "$out/sched.data" -- sleep 1 2>>"$out/perf-record.txt"
    perf script -i "$out/sched.data" -F cpu,time,event,trace 2>/dev/null |
        python3 scripts/sched_idle.py >"$out/sched-idle.txt" || true
fi

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
if [ -s "$out/sched-idle.txt" ]; then
    echo "== where the idle CPU time goes (1 s, every CPU)"
    cat "$out/sched-idle.txt"
fi
echo "== files in $out"
ls "$out"
