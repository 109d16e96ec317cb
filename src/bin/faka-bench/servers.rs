//! The servers the bench runs besides faka. The trivial server is the
//! ceiling: an actix-web `GET /ping` answering `{"ok":true}`, in this
//! process, with faka's worker count and its workers' nice value, so that
//! `read`, `flow` and `flash` can be given as ratios to what this machine
//! and client allow any server at the moment. The hanging receiver is
//! `--hanging-webhooks`' webhook target: it accepts and never answers.

use crate::burst_trace;
use crate::cpu::threads_cpu_time;
use crate::process::Faka;
use crate::settings::Settings;
use anyhow::{anyhow, Context, Result};
use serde_json::json;
use std::net::SocketAddr;
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

/// Whose CPU time a measured server is charged: the trivial server or a faka.
pub enum ServerThreads<'a> {
    /// The trivial server's threads in this process.
    Trivial,
    /// Every thread of this faka.
    Faka(&'a Faka),
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
        }
    }
}
