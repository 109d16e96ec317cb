//! CPU accounting from /proc, so a figure can be given per request or per
//! order whatever share of the two cores the load generator took: this
//! process's own time (`getrusage`), the time on a CPU (and waiting for
//! one) of chosen threads of a process (`schedstat`, or `stat` ticks where
//! the kernel keeps no schedstat), and the machine's idle share
//! (`/proc/stat`).

use std::time::Duration;

/// User + system CPU time of this process, threads that ended included
/// (the client threads of a scenario end with it).
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage(2) fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Calls `f` with the `stat` line (after the name) and the `schedstat`
/// text (if the kernel keeps it) of each thread of process `pid` (a number,
/// or `self`) whose name `pick` accepts. Nothing where /proc cannot be read.
fn each_thread(pid: &str, pick: impl Fn(&str) -> bool, mut f: impl FnMut(&str, Option<&str>)) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        // Threads can exit between listing and reading: skip those.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !pick(&stat[open + 1..close]) {
            continue;
        }
        let sched = std::fs::read_to_string(task.path().join("schedstat")).ok();
        f(&stat[close + 1..], sched.as_deref());
    }
}

/// A thread's `schedstat`: time on a CPU, time runnable but waiting for a
/// CPU (both in ns), and how many times it was scheduled.
fn schedstat_times(text: &str) -> Option<(Duration, Duration)> {
    let mut f = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    let on_cpu = f.next()??;
    let waiting = f.next()??;
    Some((Duration::from_nanos(on_cpu), Duration::from_nanos(waiting)))
}

/// CPU time of a process's threads whose name `pick` accepts, from
/// `/proc/<pid>/task/*`: each thread's time on the CPU in ns (`schedstat`),
/// or, where the kernel does not keep that, its user + system time in
/// ticks of 10 ms (`stat`), too coarse for a burst of a fifth of a second.
/// Zero where /proc cannot be read.
pub fn threads_cpu_time(pid: &str, pick: impl Fn(&str) -> bool) -> Duration {
    let mut total = Duration::ZERO;
    each_thread(pid, pick, |stat, sched| {
        total += match sched.and_then(schedstat_times) {
            Some((on_cpu, _)) => on_cpu,
            None => stat_ticks(stat),
        };
    });
    total
}

/// Time on a CPU and time waiting for one (runnable, not running) of the
/// threads `pick` accepts; zero without schedstat.
pub fn threads_sched_times(pid: &str, pick: impl Fn(&str) -> bool) -> (Duration, Duration) {
    let (mut on_cpu, mut waiting) = (Duration::ZERO, Duration::ZERO);
    each_thread(pid, pick, |_, sched| {
        if let Some((c, w)) = sched.and_then(schedstat_times) {
            on_cpu += c;
            waiting += w;
        }
    });
    (on_cpu, waiting)
}

/// The machine's CPU time so far, in ticks, from the first line of
/// `/proc/stat`: all of it, and the idle part (idle + iowait).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct MachineCpu {
    total: u64,
    idle: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t))
            .unwrap_or_default()
    }

    /// How much of the machine's cores were idle from `self` to `later`.
    pub fn idle_text(self, later: MachineCpu) -> String {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return "-".into();
        }
        let idle = later.idle.saturating_sub(self.idle);
        format!("{:.0} % of the cores", idle as f64 * 100.0 / total as f64)
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal (guest time is already counted in user).
fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let mut fields = text.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 5 {
        return None;
    }
    Some(MachineCpu {
        total: ticks.iter().sum(),
        idle: ticks[3] + ticks[4],
    })
}

/// Share of a run's wall time a thread spent on a CPU and waiting for one.
pub fn sched_share_text((on_cpu, waiting): (Duration, Duration), elapsed: Duration) -> String {
    let pct = |d: Duration| d.as_secs_f64() * 100.0 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "{:.0} % on a CPU, {:.0} % waiting for one",
        pct(on_cpu),
        pct(waiting)
    )
}

/// User + system time from the part of a `stat` line after the name.
fn stat_ticks(after_name: &str) -> Duration {
    // /proc reports times in USER_HZ, 100 per second on Linux.
    const TICKS_PER_SEC: u64 = 100;
    // After the name: state, ppid, … utime is the 12th field, stime the 13th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((field(11) + field(12)) * 1000 / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::{parse_proc_stat, schedstat_times, threads_cpu_time, MachineCpu};
    use std::time::Duration;

    #[test]
    fn idle_cores_are_read_from_proc_stat_with_iowait_and_without_guest_time() {
        let before = "cpu  100 10 50 800 40 0 0 0 7 0\ncpu0 50 5 25 400 20 0 0 0 0 0\n";
        let after = "cpu  400 10 150 900 60 0 20 10 9 0\ncpu0 1 1 1 1 1 0 0 0 0 0\n";
        let (b, a) = (
            parse_proc_stat(before).unwrap(),
            parse_proc_stat(after).unwrap(),
        );
        assert_eq!(
            b,
            MachineCpu {
                total: 1000,
                idle: 840
            }
        );
        // 300 user + 100 system + 100 idle + 20 iowait + 20 softirq + 10 steal.
        assert_eq!(a.total - b.total, 550);
        assert_eq!(b.idle_text(a), "22 % of the cores");
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(b.idle_text(b), "-");
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_and_time_waiting_for_one() {
        assert_eq!(
            schedstat_times("37000000 12500000 42\n"),
            Some((Duration::from_millis(37), Duration::from_micros(12_500)))
        );
        assert_eq!(schedstat_times("37000000\n"), None);
        assert_eq!(schedstat_times("x y z"), None);
    }

    /// This thread's CPU time, from the kernel's own clock for it.
    fn thread_cpu() -> Duration {
        // SAFETY: clock_gettime fills the zeroed timespec we own.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn a_threads_cpu_time_is_counted_to_well_under_a_tick() {
        let probe = std::thread::Builder::new()
            .name("faka-cpu-probe".into())
            .spawn(|| {
                let seen = || threads_cpu_time("self", |name| name == "faka-cpu-probe");
                let (before, t0) = (seen(), thread_cpu());
                // 3 ms of CPU: a tick of /proc's `stat` is 10 ms.
                while thread_cpu() - t0 < Duration::from_millis(3) {
                    std::hint::black_box(0u64);
                }
                let spun = thread_cpu() - t0;
                (seen() - before, spun)
            })
            .unwrap();
        let (counted, spun) = probe.join().unwrap();
        if std::path::Path::new("/proc/thread-self/schedstat").exists() {
            assert!(
                counted >= spun.mul_f64(0.9) && counted <= spun + Duration::from_millis(2),
                "counted {counted:?} for {spun:?} spent"
            );
        } else {
            // A kernel without schedstat: ticks, off by at most one each side.
            assert!(
                counted <= spun + Duration::from_millis(20),
                "counted {counted:?} for {spun:?} spent"
            );
        }
    }
}
