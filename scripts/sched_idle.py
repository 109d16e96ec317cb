#!/usr/bin/env python3
"""Where a machine's idle CPU time goes, from `perf sched record -a`.

Reads `perf script -F cpu,time,event,trace` output (stdin or a file) and
replays the scheduler's events per CPU: which thread runs (pid 0 = idle),
which threads are woken or preempted but not yet running, and on which
CPU's run queue they wait. Each stretch of a CPU's idle time is put in one
of three kinds:

  - another thread waits in the OTHER CPU's run queue (the idle CPU could
    have run it: a placement or balancing loss);
  - a thread woken onto THIS CPU has not started yet (the wake-up's own
    latency; on a VM, the host resuming a halted vCPU);
  - nothing waits anywhere (truly idle).

It also gives wake-to-run delays and, for the first kind, which threads
waited and what ran on the busy CPU meanwhile. Used by
`SCHED=1 scripts/profile.sh flow`; see docs/BENCHMARKS.md.
"""

import collections
import re
import sys

LINE = re.compile(r"\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)")


def field(trace, name):
    m = re.search(r"(?:^| )" + name + r"=(\S+)", trace)
    return m.group(1) if m else None


def comm(trace, key):
    m = re.search(key + r"=(.*?) " + key.replace("comm", "pid") + "=", trace)
    return m.group(1) if m else "?"


def main(lines):
    running = {}  # cpu -> pid on it (0 = idle)
    queued = {}  # pid -> cpu whose run queue it waits on
    waiting_since = {}  # pid -> (time, woken onto an idle cpu)
    names = {}
    kinds = collections.Counter()
    waiters = collections.Counter()
    busy_with = collections.Counter()
    delays = {True: [], False: []}
    first = last = None
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        cpu, t, event, trace = int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        if first is None:
            first = t
        if last is not None and len(running) >= 2:
            dt = t - last
            waiting = [p for p in queued if p not in running.values()]
            for c, pid in running.items():
                if pid != 0:
                    continue
                here = [p for p in waiting if queued[p] == c]
                there = [p for p in waiting if queued[p] != c]
                # Woken onto an idle CPU (this one or the other) and not
                # started yet: the wake-up's own latency.
                starting = here or [p for p in there if running.get(queued[p], 0) == 0]
                there = [p for p in there if running.get(queued[p], 0) != 0]
                if starting and not there:
                    kinds["a thread woken onto an idle CPU has not started"] += dt
                elif there:
                    kinds["a thread waits on the other CPU's run queue"] += dt
                    for p in there:
                        waiters[names.get(p, p)] += dt / len(there)
                        busy_with[names.get(running.get(queued[p], 0), "?")] += dt / len(there)
                else:
                    kinds["nothing waits"] += dt
        last = t
        if event == "sched:sched_waking":
            pid = int(field(trace, "pid"))
            names[pid] = comm(trace, "comm")
            if pid not in running.values():
                target = int(field(trace, "target_cpu"))
                queued[pid] = target
                waiting_since.setdefault(pid, (t, running.get(target, 0) == 0))
        elif event == "sched:sched_migrate_task":
            pid = int(field(trace, "pid"))
            if pid in queued:
                queued[pid] = int(field(trace, "dest_cpu"))
        elif event == "sched:sched_switch":
            prev, nxt = int(field(trace, "prev_pid")), int(field(trace, "next_pid"))
            names[prev] = comm(trace, "prev_comm")
            names[nxt] = comm(trace, "next_comm")
            if field(trace, "prev_state").startswith("R") and prev != 0:
                queued[prev] = cpu
                waiting_since.setdefault(prev, (t, False))
            queued.pop(nxt, None)
            if nxt in waiting_since:
                since, onto_idle = waiting_since.pop(nxt)
                delays[onto_idle].append(t - since)
            running[cpu] = nxt
    if first is None or last is None or last <= first:
        sys.exit("sched_idle: no scheduler events read")
    span = last - first
    cpus = max(len(running), 1)
    idle = sum(kinds.values())
    print(f"{span:.2f} s on {cpus} CPUs: idle {100 * idle / (cpus * span):.1f} % of the cores")
    for kind, secs in kinds.most_common():
        print(f"  {100 * secs / (cpus * span):5.1f} %  {kind}")
    for onto_idle, label in ((True, "woken onto an idle CPU"), (False, "woken onto a busy CPU, or preempted")):
        d = sorted(delays[onto_idle])
        if d:
            n = len(d)
            print(
                f"wake to run, {label}: {n} times, p50 {d[n // 2] * 1e6:.0f} µs, "
                f"p90 {d[int(n * 0.9)] * 1e6:.0f} µs, p99 {d[int(n * 0.99)] * 1e6:.0f} µs"
            )
    if waiters:
        print("while a CPU idled, these waited on the other one (ms):")
        for name, secs in waiters.most_common(6):
            print(f"  {secs * 1000:7.1f}  {name}")
        print("and this ran on the busy CPU meanwhile (ms):")
        for name, secs in busy_with.most_common(6):
            print(f"  {secs * 1000:7.1f}  {name}")


if __name__ == "__main__":
    main(open(sys.argv[1], errors="replace") if len(sys.argv) > 1 else sys.stdin)
