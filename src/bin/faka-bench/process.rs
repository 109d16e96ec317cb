//! A faka process the bench runs: `Faka` starts the real binary on a fresh
//! temp dir and a config written for the run (`listen = 127.0.0.1:0`, the
//! per-address limits off, the `--cache-mb`, `--worker-nice`, `--workers`
//! and `--retention-hours` knobs, the webhook receiver's URL), learns its port from its JSON log, and stops,
//! kills, restarts and checks it. A thread per process drains the log,
//! keeping warnings and start-up lines for the report. The temp dir is
//! removed on drop unless `FAKA_BENCH_KEEP_DATA` is set.

use crate::client::Conn;
use crate::cpu::threads_cpu_time;
use crate::proxy::Proxy;
use crate::settings::Settings;
use crate::{ADMIN, SECRET};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running faka in its own temp dir; killed and removed on drop.
pub struct Faka {
    child: Child,
    dir: PathBuf,
    pub config: PathBuf,
    bin: PathBuf,
    pub addr: SocketAddr,
    warnings: Arc<Mutex<Vec<String>>>,
    /// Info log lines of the current process, with their arrival time
    /// since its spawn.
    events: Events,
    /// The TLS proxy in front of it (`--proxy`), set by `run_main`.
    pub proxy: Option<Proxy>,
}

type Events = Arc<Mutex<Vec<(Duration, String)>>>;

/// The `faka` command on a config, without this shell's `FAKA_*`
/// variables (they would override the config the tool wrote).
fn faka_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FAKA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Spawns `faka serve` with its log on a pipe; gives the child and the
/// reader of its log (see [`read_log`]).
fn spawn_serve(
    bin: &Path,
    config: &Path,
    warnings: &Arc<Mutex<Vec<String>>>,
    events: &Events,
) -> Result<(Child, LogReader)> {
    let t0 = Instant::now();
    let mut child = faka_command(bin, config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let log = read_log(stdout, warnings.clone(), events.clone(), t0);
    Ok((child, log))
}

impl Faka {
    /// Starts `cfg.faka` with orders held for `hold_secs`; `label` names
    /// its temp dir.
    pub fn start(cfg: &Settings, label: &str, hold_secs: u64) -> Result<Faka> {
        let bin = cfg.faka.as_path();
        let dir = std::env::temp_dir().join(format!(
            "faka-bench-{}-{label}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(cfg, &dir, hold_secs))?;
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let events = Events::default();
        let (mut child, log) = spawn_serve(bin, &config, &warnings, &events)?;
        let port = wait_serving(&mut child, &log);
        let mut faka = Faka {
            child,
            dir,
            config,
            bin: bin.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            warnings,
            events,
            proxy: None,
        };
        faka.addr
            .set_port(port.with_context(|| format!("faka ({label}) did not start"))?);
        Ok(faka)
    }

    /// Its store's directory (`storage.data_dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) of all its threads so far.
    pub fn cpu_time(&self) -> Duration {
        threads_cpu_time(&self.pid().to_string(), |_| true)
    }

    /// SIGTERM and wait up to `limit` (then SIGKILL): failures and how
    /// long the stop took.
    pub fn stop(&mut self, limit: Duration) -> Result<(Vec<String>, Duration)> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        let mut failures = Vec::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    failures.push(format!("faka exited with {status} after SIGTERM"));
                }
                break;
            }
            if t0.elapsed() > limit {
                failures.push(format!(
                    "faka did not stop within {} s of SIGTERM; killed",
                    limit.as_secs()
                ));
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((failures, t0.elapsed()))
    }

    /// SIGKILL (`kill -9`) and reap.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill().context("kill -9 faka")?;
        self.child.wait().context("reaping faka")?;
        Ok(())
    }

    /// `faka check` on the (stopped) store: its failures and its report.
    pub fn check(&self) -> Result<(Vec<String>, String)> {
        let out = faka_command(&self.bin, &self.config)
            .arg("check")
            .output()
            .context("running faka check")?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let failures = if out.status.success() {
            Vec::new()
        } else {
            vec![format!("faka check: {report}")]
        };
        Ok((failures, report))
    }

    /// SIGTERM, wait, then `faka check` on its store: the check's failures.
    pub fn stop_and_check(mut self) -> Result<Vec<String>> {
        let (mut failures, _) = self.stop(Duration::from_secs(30))?;
        failures.extend(self.check()?.0);
        Ok(failures)
    }

    /// Starts faka again (the previous process must have exited) on the same
    /// data dir and config, pinned to the port it had, and times the
    /// start-up: from the spawn until `GET /healthz` answers 200.
    pub fn restart(&mut self, limit: Duration) -> Result<Duration> {
        let text = std::fs::read_to_string(&self.config)?;
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.addr),
        );
        std::fs::write(&self.config, pinned)?;
        self.events = Events::default();
        let t0 = Instant::now();
        let (child, log) = spawn_serve(&self.bin, &self.config, &self.warnings, &self.events)?;
        self.child = child;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "faka exited with {status} while starting; its log:\n{}",
                    log.early_text()
                );
            }
            if t0.elapsed() > limit {
                bail!(
                    "GET /healthz did not answer 200 within {} s",
                    limit.as_secs()
                );
            }
            // The port is bound before the store opens, so a connection may
            // wait in the backlog: it is answered the moment faka serves.
            let mut conn = Conn::new(self.addr, Duration::from_secs(1));
            match conn.get("/healthz") {
                Ok(r) if r.status == 200 => return Ok(t0.elapsed()),
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// A start that checks the store does it as the writer's first command
    /// while it already serves: waits (polling, up to `limit` from now) for
    /// the check's report in the log. Returns at once after a start without
    /// the check.
    pub fn wait_for_check(&self, limit: Duration) -> Result<()> {
        let logged = |msgs: &[&str]| {
            let (events, warnings) = (self.events(), self.warnings());
            let mut lines = events.iter().map(|(_, l)| l).chain(warnings.iter());
            lines.any(|l| msgs.iter().any(|m| l.contains(m)))
        };
        if !logged(&["invariant check queued"]) {
            return Ok(());
        }
        let deadline = Instant::now() + limit;
        // Its report: a clean store, violations, or a check that could not run.
        while !logged(&[
            "store opened and checked",
            "store invariants violated",
            "start-up invariant check",
        ]) {
            if Instant::now() > deadline {
                bail!(
                    "the start-up check did not report within {} s",
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The info log lines of the current process so far, with their times.
    pub fn events(&self) -> Vec<(Duration, String)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// VmRSS and VmHWM of the current process.
    pub fn memory(&self) -> Result<Mem> {
        Mem::of(self.pid())
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Drop for Faka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("FAKA_BENCH_KEEP_DATA").is_some() {
            eprintln!(
                "faka-bench: kept {} (FAKA_BENCH_KEEP_DATA)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, in bytes.
#[derive(Clone, Copy)]
pub struct Mem {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the peak resident size of the process so far.
    hwm: u64,
}

impl Mem {
    pub fn of(pid: u32) -> Result<Mem> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow!("no {name} in {path}"))?;
            let kb: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("bad {line:?} in {path}"))?;
            Ok(kb * 1024)
        };
        Ok(Mem {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} (peak {})", mib(self.rss), mib(self.hwm))
    }
}

fn config_text(cfg: &Settings, dir: &Path, hold_secs: u64) -> String {
    let cache = cfg
        .cache_mb
        .map(|mb| format!("cache_mb = {mb}\n"))
        .unwrap_or_default();
    let nice = cfg
        .worker_nice
        .map(|n| format!("worker_nice = {n}\n"))
        .unwrap_or_default();
    let workers = cfg
        .workers
        .map(|n| format!("workers = {n}\n"))
        .unwrap_or_default();
    let writer_nice = cfg
        .writer_nice
        .map(|n| format!("writer_nice = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
{nice}{writer_nice}{workers}[storage]
data_dir = "{data}"
key_file = "{key}"
{cache}[admin]
token = "{ADMIN}"
[payments.hmac]
secret = "{SECRET}"
[orders]
hold_secs = {hold_secs}
sweep_interval_ms = {sweep}
# Every buyer is 127.0.0.1 here: the per-address abuse limits are off.
[limits]
orders_per_minute = 0
max_pending_per_ip = 0
max_pending_per_email = 0
lookups_per_minute = 0
[log]
format = "json"
level = "warn,faka=info"
"#,
        data = dir.join("data").display(),
        key = dir.join("faka.key").display(),
        sweep = if hold_secs <= 5 { 100 } else { 500 },
    );
    let text = match cfg.retention_hours {
        Some(h) => format!(
            "{text}[retention]\nidempotency_hours = {h}\ndelivered_events_hours = {h}\nsweep_interval_secs = 5\n"
        ),
        None => text,
    };
    let text = match &cfg.webhook_url {
        Some(url) => format!(
            "{text}[webhooks]\nurl = \"{url}\"\nsecret = \"bench-hook\"\nworkers = 4\ntimeout_secs = 30\n"
        ),
        None => text,
    };
    match &cfg.smtp_url {
        Some(url) => format!(
            "{text}[email]\nsmtp_url = \"{url}\"\nfrom = \"bench@example.com\"\nmerchant = \"owner@example.com\"\ntimeout_secs = 30\n"
        ),
        None => text,
    }
}

/// The thread draining one faka process's log: the ports of its
/// "faka is serving" lines, and its first lines for error reports.
struct LogReader {
    ports: std::sync::mpsc::Receiver<u64>,
    early: Arc<Mutex<Vec<String>>>,
}

impl LogReader {
    fn early_text(&self) -> String {
        self.early.lock().map(|e| e.join("\n")).unwrap_or_default()
    }
}

/// Reads faka's JSON log on a thread until it ends: keeps warnings and
/// errors, info lines with their arrival time since `t0`, and sends the port
/// of the "faka is serving" line.
fn read_log(
    stdout: std::process::ChildStdout,
    warnings: Arc<Mutex<Vec<String>>>,
    events: Events,
    t0: Instant,
) -> LogReader {
    let (tx, rx) = std::sync::mpsc::channel();
    let early = Arc::new(Mutex::new(Vec::new()));
    let early2 = early.clone();
    std::thread::spawn(move || {
        // After the first 1,000 lines (start-up, set-up: what is kept of
        // info lines), only warnings, errors and the serving line are
        // parsed: a loaded faka logs a line per payment, and this thread
        // shares the cores with it.
        let mut seen = 0usize;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen += 1;
            let wanted = seen <= 1000
                || line.contains("faka is serving")
                || line.contains("\"WARN\"")
                || line.contains("\"ERROR\"");
            if !wanted {
                continue;
            }
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let field = |k: &str| {
                v.get(k)
                    .or_else(|| v.get("fields").and_then(|f| f.get(k)))
                    .cloned()
            };
            let message = field("message")
                .and_then(|m| m.as_str().map(str::to_string))
                .unwrap_or_default();
            if message == "faka is serving" {
                let _ = tx.send(field("port").and_then(|p| p.as_u64()).unwrap_or(0));
            }
            let level = v["level"].as_str().unwrap_or("");
            if level == "WARN" || level == "ERROR" {
                if let Ok(mut w) = warnings.lock() {
                    if w.len() < 1000 {
                        w.push(line.clone());
                    }
                }
            }
            if level == "INFO" {
                if let Ok(mut e) = events.lock() {
                    if e.len() < 1000 {
                        e.push((t0.elapsed(), line.clone()));
                    }
                }
            }
            if let Ok(mut e) = early2.lock() {
                if e.len() < 50 {
                    e.push(line);
                }
            }
        }
    });
    LogReader { ports: rx, early }
}

/// Waits for the "faka is serving" line and returns its port.
fn wait_serving(child: &mut Child, log: &LogReader) -> Result<u16> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        match log.ports.recv_timeout(Duration::from_millis(100)) {
            Ok(port) if (1..=65535).contains(&port) => return Ok(port as u16),
            Ok(_) => bail!("the serving line has no port"),
            Err(_) => {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "faka exited with {status} before serving; its log:\n{}",
                        log.early_text()
                    );
                }
            }
        }
    }
    bail!("no \"faka is serving\" line within 120 s")
}

#[cfg(test)]
mod tests {
    use super::config_text;
    use crate::settings::{Args, Settings};
    use clap::Parser;

    /// The config the bench writes, as faka itself loads it.
    fn faka_config(flags: &[&str], webhook_url: Option<String>) -> faka::config::Config {
        let exe = std::env::current_exe().unwrap();
        let mut argv = vec!["faka-bench", "--faka", exe.to_str().unwrap()];
        argv.extend(flags);
        let cfg = Settings::from_args(&Args::try_parse_from(argv).unwrap(), webhook_url).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config_text(&cfg, dir.path(), 900)).unwrap();
        faka::config::Config::load(&path, false, std::iter::empty()).unwrap()
    }

    #[test]
    fn retention_hours_and_the_webhook_url_reach_fakas_config() {
        let url = "http://127.0.0.1:9/hook".to_string();
        let c = faka_config(&["--retention-hours", "0"], Some(url.clone()));
        let r = &c.retention;
        let hours = (r.idempotency_hours, r.delivered_events_hours);
        assert_eq!((hours, r.sweep_interval_secs), ((0, 0), 5));
        assert_eq!(c.webhooks().map(|w| w.url.clone()), Some(url));
        // Without the flags: faka's own retention, no webhooks.
        let c = faka_config(&[], None);
        let default = faka::config::RetentionConfig::default();
        assert_eq!(c.retention.idempotency_hours, default.idempotency_hours);
        assert_eq!(c.retention.sweep_interval_secs, default.sweep_interval_secs);
        assert!(c.webhooks().is_none());
    }
}
