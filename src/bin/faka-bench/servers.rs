//! The servers the bench runs besides faka. The trivial server is the
//! ceiling: an actix-web `GET /ping` answering `{"ok":true}`, so that
//! `read`, `flow` and `flash` can be given as ratios to what this machine
//! and client allow any server at the moment. It runs twice. In this
//! process, with faka's worker count and its workers' nice value, it shares
//! faka's handicap: a penalty on faka's workers cancels out of the ratio.
//! The outside one is this binary again (`--serve-trivial`), a process of
//! its own at the nice value the bench was started with, sharing nothing
//! with faka; ratios to it show what a client outside sees. The two
//! webhook receivers are faka's webhook target: `--hanging-webhooks`' one
//! accepts and never answers, `--accepting-webhooks`' one answers 200 to
//! every event, so that events end delivered.

use crate::burst_trace;
use crate::cpu::threads_cpu_time;
use crate::process::Faka;
use crate::settings::Settings;
use anyhow::{anyhow, Context, Result};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The trivial server's one answer.
pub const PING_BODY: &[u8] = br#"{"ok":true}"#;

async fn ping(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if burst_trace::on() {
        burst_trace::handled(req.query_string());
    }
    actix_web::HttpResponse::Ok().json(json!({"ok": true}))
}

/// The trivial server, started on first use and shared by `read` and `flash`.
pub fn trivial(cfg: &Settings) -> Result<SocketAddr> {
    static ADDR: Mutex<Option<SocketAddr>> = Mutex::new(None);
    let mut addr = ADDR
        .lock()
        .map_err(|_| anyhow!("the trivial server's lock is poisoned"))?;
    if let Some(a) = *addr {
        return Ok(a);
    }
    let a = start_trivial(cfg.workers, cfg.worker_nice)?;
    *addr = Some(a);
    Ok(a)
}

/// The ceiling: a trivial actix-web JSON endpoint on its own thread, with
/// actix's default worker count (as faka's `workers = 0`) or `workers`,
/// its workers at faka's nice value (`worker_nice` or faka's default).
fn start_trivial(workers: Option<usize>, worker_nice: Option<i32>) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the trivial server")?;
    let addr = listener.local_addr()?;
    faka::startup::set_listen_backlog(&listener)?;
    let server = std::thread::Builder::new().name("trivial-actix".into());
    server.spawn(move || {
        let sys = actix_web::rt::System::new();
        let run = sys.block_on(async move {
            let mut s = actix_web::HttpServer::new(move || {
                match_faka_worker_priority(worker_nice);
                actix_web::App::new().route("/ping", actix_web::web::get().to(ping))
            })
            .disable_signals();
            if let Some(n) = workers {
                s = s.workers(n);
            }
            let s = s.listen(listener)?.run();
            s.await
        });
        if let Err(e) = run {
            eprintln!("faka-bench: the trivial server failed: {e}");
        }
    })?;
    Ok(addr)
}

/// The outside trivial server as the bench sees it.
#[derive(Clone, Copy)]
pub struct Outside {
    pub addr: SocketAddr,
    pub pid: u32,
    /// Its nice value, as it reported it.
    pub nice: i32,
}

/// The outside trivial server, started on first use and shared by `read`,
/// `flow` and `flash`. Its stdin is a pipe kept open here until this
/// process exits: when it closes, the server exits too.
pub fn outside(cfg: &Settings) -> Result<Outside> {
    static RUNNING: Mutex<Option<(Outside, Child)>> = Mutex::new(None);
    let mut running = RUNNING
        .lock()
        .map_err(|_| anyhow!("the outside server's lock is poisoned"))?;
    if let Some((o, _)) = &*running {
        return Ok(*o);
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--serve-trivial");
    if let Some(n) = cfg.workers {
        cmd.arg("--workers").arg(n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the outside trivial server")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let mut fields = line.split_whitespace().map(|f| f.parse::<i32>().ok());
    let (Some(Some(port)), Some(Some(nice))) = (fields.next(), fields.next()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(anyhow!(
            "the outside trivial server did not say its port: {line:?}"
        ));
    };
    let o = Outside {
        addr: SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?)),
        pid: child.id(),
        nice,
    };
    *running = Some((o, child));
    Ok(o)
}

/// `--serve-trivial`: the outside server's side. Binds a loopback port,
/// prints "PORT NICE", and serves `GET /ping` (actix's worker count, or
/// `workers`; its workers left at this process's nice value) until stdin
/// closes.
pub fn serve_outside(workers: Option<usize>) -> Result<()> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the outside server")?;
    let port = listener.local_addr()?.port();
    faka::startup::set_listen_backlog(&listener)?;
    // SAFETY: getpriority(2) on this process; -1 is also a valid nice value,
    // and an error (which cannot happen for our own pid) would read as it.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{port} {nice}")?;
    stdout.flush()?;
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    actix_web::rt::System::new().block_on(async move {
        let mut s = actix_web::HttpServer::new(|| {
            actix_web::App::new().route("/ping", actix_web::web::get().to(ping))
        })
        .disable_signals();
        if let Some(n) = workers {
            s = s.workers(n.max(1));
        }
        s.listen(listener)?.run().await
    })?;
    Ok(())
}

/// Gives the calling thread (a trivial-server worker) the same nice value
/// as faka's HTTP workers, with faka's own function and default.
fn match_faka_worker_priority(worker_nice: Option<i32>) {
    let nice = worker_nice.unwrap_or_else(|| faka::config::ServerConfig::default().worker_nice);
    faka::startup::lower_thread_priority(nice);
}

/// Starts a receiver that accepts every connection and never answers.
pub fn start_hanging_receiver() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(url)
}

/// Starts a receiver that answers every request with an empty 200,
/// keeping the connection open; gives its URL.
pub fn start_accepting_receiver() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_ok(stream));
        }
    });
    Ok(url)
}

/// Reads requests (headers and a `Content-Length` body) off `stream` and
/// answers each 200, until the client closes it.
fn answer_ok(stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let (mut reader, mut out) = (BufReader::new(read_half), stream);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err()
            || out
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
        {
            return;
        }
    }
}

/// Whose CPU time a measured server is charged: the trivial server or a faka.
pub enum ServerThreads<'a> {
    /// The trivial server's threads in this process.
    Trivial,
    /// Every thread of this faka.
    Faka(&'a Faka),
    /// Every thread of the outside trivial server (its pid).
    Outside(u32),
}

impl ServerThreads<'_> {
    pub fn cpu_time(&self) -> Duration {
        match self {
            ServerThreads::Trivial => threads_cpu_time("self", |name| {
                name.starts_with("actix-rt|system")
                    || name.starts_with("actix-server")
                    || name == "trivial-actix"
            }),
            ServerThreads::Faka(faka) => faka.cpu_time(),
            ServerThreads::Outside(pid) => threads_cpu_time(&pid.to_string(), |_| true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::start_accepting_receiver;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn the_accepting_receiver_answers_each_request_once_on_one_connection() {
        let url = start_accepting_receiver().unwrap();
        let addr = url
            .strip_prefix("http://")
            .and_then(|u| u.strip_suffix("/hook"))
            .unwrap();
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Bodies with a blank line in them: one not read as a body would
        // be taken for another request and answered twice.
        for body in ["{\"a\":1}\r\n\r\n", "x\r\n\r\ny"] {
            let head = format!(
                "POST /hook HTTP/1.1\r\nHost: faka\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(format!("{head}{body}").as_bytes()).unwrap();
        }
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answers = String::new();
        conn.read_to_string(&mut answers).unwrap();
        assert_eq!(
            answers,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".repeat(2)
        );
    }
}
