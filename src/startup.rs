//! Building the running shop from a [`Config`]: open the store (recovering
//! as needed), check it, start the workers and the HTTP server. Used by
//! `main` and by the tests, so both run exactly the same application.

use crate::config::Config;
use crate::crypto::{Crypto, OrderTokens};
use crate::http::{self, auth, AppState};
use crate::ops::admin_token;
use crate::payments::Gateways;
use crate::store::{Store, StoreOptions};
use crate::workers::{self, Workers};
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Written into the data dir while serving: the URL the shop answers on, so
/// `faka import` finds a running shop even on a port chosen by the OS.
pub const ADDR_FILE: &str = "faka.addr";

fn fail(context: &str) -> impl Fn(String) -> StartError + '_ {
    move |e| StartError(format!("{context}: {e}"))
}

/// The store options a config asks for.
pub fn store_options(cfg: &Config) -> StoreOptions {
    let s = &cfg.storage;
    StoreOptions {
        data_dir: s.data_dir.clone(),
        cache_bytes: s.cache_mb * 1024 * 1024,
        queue_capacity: s.queue_capacity,
        max_batch: s.max_batch,
        snapshot_bytes: s.snapshot_mb * 1024 * 1024,
        webhooks: cfg.webhooks().is_some(),
        min_free_bytes: s.min_free_mb * 1024 * 1024,
        mailing: crate::store::Mailing {
            buyer: cfg.email().is_some(),
            merchant: cfg.email().is_some_and(|e| e.merchant.is_some()),
        },
        writer_nice: cfg.server.writer_nice,
    }
}

/// Loads the master key from config, environment or key file.
pub fn load_crypto(cfg: &Config) -> Result<(Crypto, bool), StartError> {
    if let Some(hex) = cfg.storage.master_key.as_deref().filter(|k| !k.is_empty()) {
        return Crypto::from_hex(hex.trim())
            .map(|c| (c, false))
            .map_err(|e| StartError(format!("storage.master_key: {e}")));
    }
    let journal = crate::store::recovery::journal_dir(&cfg.storage.data_dir);
    let has_data = crate::store::journal::segments(&journal)
        .map(|s| {
            s.iter()
                .any(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        })
        .unwrap_or(false);
    if has_data && !cfg.storage.key_file.exists() {
        // A new key would silently make every stored card key unreadable.
        return Err(StartError(format!(
            "the master key file {} is missing but {} holds a shop: restore the key file \
             (or set FAKA_STORAGE_MASTER_KEY); faka will not create a new one over existing data",
            cfg.storage.key_file.display(),
            cfg.storage.data_dir.display()
        )));
    }
    Crypto::load_or_create(&cfg.storage.key_file).map_err(|e| StartError(e.to_string()))
}

/// Binds the master key to the store: a store that has no check value yet
/// (a new shop, or one from before check values) stores this key's; one
/// that has another key's is refused. A wrong but well-formed key file (an
/// operator restoring onto a new server with another shop's file) would
/// otherwise serve: payments answered `delivered` with keys that cannot be
/// opened, and re-imported keys not recognised as duplicates.
pub fn verify_master_key(store: &Store, crypto: &Crypto, cfg: &Config) -> Result<(), StartError> {
    let stored = store
        .key_check()
        .map_err(|e| fail("reading the master key's check value")(e.to_string()))?;
    match stored {
        Some(v) if crypto.matches_check_value(&v) => Ok(()),
        Some(_) => Err(StartError(format!(
            "the master key ({}) is not the key this shop's card keys are sealed with: \
             put back the key file that belongs to {} (from the server it ran on, or where you \
             keep its backup) and start again; nothing was changed",
            key_source(cfg),
            cfg.storage.data_dir.display()
        ))),
        None => {
            let check = crypto.check_value();
            store
                .write_blocking(move |tx| crate::shop::store_key_check(tx, &check))
                .map_err(|e| fail("storing the master key's check value")(e.to_string()))
        }
    }
}

/// The shop's order tokens: from the master key and the salt its store
/// keeps, stored at the shop's first start with this code (see
/// `crypto::OrderTokens`).
pub fn order_tokens(store: &Store, crypto: &Crypto) -> Result<OrderTokens, StartError> {
    let stored = store
        .order_token_salt()
        .map_err(|e| fail("reading the order tokens' salt")(e.to_string()))?;
    let salt = match stored {
        Some(salt) => salt,
        None => {
            let fresh = crate::crypto::new_salt();
            store
                .write_blocking(move |tx| tx.order_token_salt(fresh))
                .map_err(|e| fail("storing the order tokens' salt")(e.to_string()))?
        }
    };
    Ok(OrderTokens::new(crypto, &salt))
}

/// Where the master key came from, for messages (never the key itself).
fn key_source(cfg: &Config) -> String {
    if cfg
        .storage
        .master_key
        .as_deref()
        .is_some_and(|k| !k.is_empty())
    {
        "storage.master_key / FAKA_STORAGE_MASTER_KEY".to_string()
    } else {
        format!("key file {}", cfg.storage.key_file.display())
    }
}

/// Opens the store and runs the start-up recovery that must come before
/// serving. Gives the store, and whether the invariant check is still to
/// run ([`start_check`]): after an unclean stop unless
/// `storage.check_after_crash` is off, or always with
/// `storage.check_on_start`. Without the check, paid-but-undelivered
/// orders are re-driven here. Key uploads a stop cut short are discarded.
pub fn open_store(cfg: &Config) -> Result<(Store, bool), StartError> {
    let store = Store::open(&store_options(cfg)).map_err(|e| StartError(e.to_string()))?;
    crate::ops::upload::discard_unfinished(&store);
    use crate::store::recovery::Recovery;
    // A new shop has nothing to check: its first start is not a crash.
    let clean = matches!(store.recovery(), Recovery::Clean | Recovery::New);
    let check = cfg.storage.check_on_start || (!clean && cfg.storage.check_after_crash);
    if check {
        return Ok((store, true));
    }
    // After a clean stop sled is exactly what the last transactions left,
    // and they keep the invariants; reading every record would cost
    // 6-9 s at 1M keys + 1M orders. `faka check` does it on demand.
    let redriven = crate::ops::recovery::redrive_left_paid(&store)
        .map_err(|e| fail("re-driving paid orders")(e.to_string()))?;
    if store.recovery() == Recovery::New {
        tracing::info!("serving a new, empty shop");
    } else if clean {
        tracing::info!(
            redriven,
            "store opened after a clean stop (invariant check skipped; `faka check` or storage.check_on_start runs it)"
        );
    } else {
        tracing::warn!(
            redriven,
            recovery = ?store.recovery(),
            "store opened after a crash without the invariant check (storage.check_after_crash is off)"
        );
    }
    Ok((store, false))
}

/// Queues the start-up invariant check as a writer command and returns at
/// once. The check needs a store that does not change under it, and the
/// writer is the only one that changes it: while the check runs (~6 s at
/// 1M keys + 1M orders) the shop already serves reads, and writes queue
/// behind it (503 with Retry-After once the queue is full). Call it before
/// anything else can queue a write. A thread of its own then logs the
/// report and re-drives the paid-but-undelivered orders the check found.
/// Violations are logged, and the shop keeps serving.
pub fn start_check(store: &Store) -> Result<(), StartError> {
    let s = store.clone();
    let answer = store
        .submit_blocking(move |_tx| {
            let report = crate::ops::check::run(&s);
            // The check's maps (hundreds of MiB at 1M orders) were freed on
            // this, the writer's, thread: mimalloc keeps such pages for the
            // thread until it purges them.
            // SAFETY: mi_collect takes no pointers; it only frees this
            // thread's unused pages and returns purgeable memory to the OS.
            unsafe { libmimalloc_sys::mi_collect(true) };
            report
        })
        .map_err(|e| fail("queueing the invariant check")(e.to_string()))?;
    tracing::info!(
        recovery = ?store.recovery(),
        "invariant check queued as the writer's first command: reads are served now, writes once it is done"
    );
    let store = store.clone();
    std::thread::Builder::new()
        .name("faka-start-check".into())
        .spawn(move || match answer.recv() {
            Ok(Ok(report)) => {
                if report.ok() {
                    tracing::info!(
                        products = report.products,
                        keys = report.keys,
                        orders = report.orders,
                        recovery = ?store.recovery(),
                        "store opened and checked"
                    );
                } else {
                    tracing::error!(violations = report.violations.len(), report = %report,
                        "store invariants violated; serving anyway, run `faka check` for the report");
                }
                // One pass over the orders serves both the check and the re-drive.
                crate::ops::recovery::redrive_paid(&store, &report.paid_undelivered);
            }
            Ok(Err(e)) => tracing::error!(error = %e,
                "the start-up invariant check could not run; run `faka check`"),
            Err(_) => tracing::error!(
                "the start-up invariant check was aborted; run `faka check`"),
        })
        .map_err(|e| fail("starting the check's thread")(e.to_string()))?;
    Ok(())
}

/// Connections the kernel may hold for the shop before it accepts them (the
/// kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Sets a bound listener's accept queue to `LISTEN_BACKLOG`. A std listener
/// listens with a queue of 128, and actix-web's `backlog` applies only to
/// sockets it binds itself: in a flash sale the 129th buyer connecting at
/// once had their SYN dropped and waited a second or more for the retry.
pub fn set_listen_backlog(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).listen(LISTEN_BACKLOG)
}

/// Lowers the calling thread's priority to `nice` (on Linux a thread has
/// its own nice value; raising it needs no privilege). 0 leaves it alone.
pub fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscall on the calling thread (who = 0); no memory shared.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if rc != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(),
                "could not lower the HTTP worker's priority");
        }
    }
}

/// If no admin token is configured and none was generated before, makes one,
/// stores its argon2 hash and returns it (to be shown once).
pub fn ensure_admin_token(cfg: &Config) -> Result<Option<String>, StartError> {
    if cfg.admin.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return Ok(None);
    }
    let dir = &cfg.storage.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| fail("creating data dir")(e.to_string()))?;
    if dir.join(admin_token::HASH_FILE).exists() {
        return Ok(None);
    }
    let token = crate::crypto::new_token();
    admin_token::store_token_hash(dir, &token)
        .map_err(|e| fail("storing admin token hash")(e.to_string()))?;
    Ok(Some(token))
}

/// Starts the background threads over the store: the expiry sweeper, the
/// retention pruner and, when configured, the webhook senders.
fn start_workers(
    cfg: &Config,
    store: &Store,
    crypto: &Arc<Crypto>,
    tokens: &OrderTokens,
    metrics: &crate::ops::metrics::Metrics,
) -> Workers {
    let mut workers = Workers::new();
    let (s, stop) = (store.clone(), workers.stop_signal());
    let interval = Duration::from_millis(cfg.orders.sweep_interval_ms.max(10));
    workers.spawn("faka-expiry", move || {
        workers::expiry::run(s, interval, stop)
    });
    let (s, stop) = (store.clone(), workers.stop_signal());
    let ages = workers::retention::Ages::of(&cfg.retention);
    let interval = Duration::from_secs(cfg.retention.sweep_interval_secs.max(1));
    workers.spawn("faka-retention", move || {
        workers::retention::run(s, ages, interval, stop)
    });

    if let Some(hooks) = cfg.webhooks() {
        let ctx = workers::webhooks::Context {
            store: store.clone(),
            crypto: crypto.clone(),
            cfg: hooks.clone(),
            currency: cfg.shop.currency.clone(),
        };
        workers::webhooks::start(ctx, &mut workers);
    }
    if let Some(email) = cfg.email() {
        let ctx = workers::emails::Context {
            store: store.clone(),
            crypto: crypto.clone(),
            tokens: tokens.clone(),
            cfg: email.clone(),
            shop: cfg.shop.clone(),
            public_url: cfg.server.public_url.clone(),
            metrics: metrics.emails.clone(),
        };
        if let Err(e) = workers::emails::start(ctx, &mut workers) {
            tracing::error!(error = %e, "e-mail is configured but cannot be sent; e-mails wait in the outbox");
        }
    }
    workers
}

/// A running shop.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    /// Logs "faka is serving" with the start's summary.
    announce: Box<dyn FnOnce() + Send>,
    store: Store,
    workers: Workers,
    /// A freshly generated admin token, to be printed once.
    pub generated_admin_token: Option<String>,
    /// Whether the master key file was created by this start.
    pub created_key_file: bool,
}

impl Application {
    /// Builds and starts serving; must run inside an actix system.
    pub fn build(cfg: Config) -> Result<Application, StartError> {
        let listener = TcpListener::bind(&cfg.server.listen)
            .map_err(|e| fail("binding server.listen")(e.to_string()))?;
        Self::build_with_listener(cfg, listener)
    }

    pub fn build_with_listener(
        cfg: Config,
        listener: TcpListener,
    ) -> Result<Application, StartError> {
        let port = listener
            .local_addr()
            .map_err(|e| StartError(e.to_string()))?
            .port();
        set_listen_backlog(&listener).map_err(|e| fail("listening")(e.to_string()))?;
        // Gateway key files are read before anything is created or opened:
        // a bad one stops the start here, naming it.
        let gateways = Gateways::from_config(&cfg).map_err(StartError)?;
        let (crypto, created_key_file) = load_crypto(&cfg)?;
        let (store, check) = open_store(&cfg)?;
        let tokens = match verify_master_key(&store, &crypto, &cfg)
            .and_then(|()| order_tokens(&store, &crypto))
        {
            Ok(tokens) => tokens,
            Err(e) => {
                store.close();
                return Err(e);
            }
        };
        // The hold caps' counts are counted from the pending orders once
        // per start: do it now, before serving, not inside the first
        // buyer's order (it reads every pending order). The command writes
        // nothing, so it costs no fsync.
        if cfg.limits.max_pending_per_ip > 0 || cfg.limits.max_pending_per_email > 0 {
            store
                .write_blocking(crate::shop::count_pending_holds)
                .map_err(|e| StartError(format!("counting unpaid orders: {e}")))?;
        }
        // Before the sweeper, the webhooks or a buyer can queue a write.
        if check {
            start_check(&store)?;
        }
        // Only once the shop is sure to start, so a generated token is never
        // stored without being shown.
        let generated_admin_token = ensure_admin_token(&cfg)?;
        let cfg = Arc::new(cfg);
        let crypto = Arc::new(crypto);
        let metrics = Arc::new(crate::ops::metrics::Metrics::new(&store));
        let mut workers = start_workers(&cfg, &store, &crypto, &tokens, &metrics);
        let limits = Arc::new(http::limits::Limits::new(&cfg.limits));
        let (l, stop) = (limits.clone(), workers.stop_signal());
        workers.spawn("faka-limits", move || {
            while workers::pause(&stop, Duration::from_secs(60)) {
                l.shrink();
            }
        });
        let state = web::Data::new(AppState {
            limits,
            metrics: metrics.clone(),
            store: store.clone(),
            admin: auth::AdminAuth::new(cfg.admin.token.as_deref(), &cfg.storage.data_dir),
            gateways,
            crypto,
            tokens,
            config: cfg.clone(),
            views: Default::default(),
        });
        let pages = web::Data::new(crate::web::WebState::new(&cfg));
        let timeout = Duration::from_secs(cfg.server.request_timeout_secs.max(1));
        let nice = cfg.server.worker_nice.clamp(0, 19);
        let mut server = HttpServer::new(move || {
            // Runs once on each worker thread as it starts.
            lower_thread_priority(nice);
            crate::store::courier::start();
            let m = metrics.clone();
            App::new()
                .app_data(state.clone())
                .app_data(pages.clone())
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    http::middleware::observe(m.clone(), req, next)
                }))
                .configure(http::routes)
                .configure(crate::web::routes)
        })
        .client_request_timeout(timeout)
        .client_disconnect_timeout(Duration::from_secs(2))
        .shutdown_timeout(10);
        if cfg.server.workers > 0 {
            server = server.workers(cfg.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|e| fail("listening")(e.to_string()))?
            .run();
        let addr_file = cfg.storage.data_dir.join(ADDR_FILE);
        let host = cfg
            .server
            .listen
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h);
        let host = if host == "0.0.0.0" || host == "[::]" {
            "127.0.0.1"
        } else {
            host
        };
        if let Err(e) = std::fs::write(&addr_file, format!("http://{host}:{port}\n")) {
            tracing::warn!(error = %e, "could not write {ADDR_FILE}");
        }
        let (data_dir, hmac, epay, webhooks) = (
            cfg.storage.data_dir.display().to_string(),
            cfg.hmac_secret().is_some(),
            cfg.epay().is_some(),
            cfg.webhooks().is_some(),
        );
        let alipay = cfg.alipay().is_some();
        let announce = Box::new(move || {
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                port,
                data_dir,
                hmac,
                epay,
                alipay,
                webhooks,
                "faka is serving"
            );
        });
        Ok(Application {
            server,
            port,
            announce,
            store,
            workers,
            generated_admin_token,
            created_key_file,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or the handle stops it), then drains:
    /// in-flight requests finish, the writer commits what is queued, sled is
    /// flushed and the clean-shutdown marker written.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        // The server starts, and takes over SIGTERM and SIGINT, when it is
        // first polled: only then is the shop said to be serving, so a
        // SIGTERM sent on that line drains instead of killing the process.
        let first = futures_util::future::poll_immediate(&mut self.server).await;
        (self.announce)();
        let result = match first {
            Some(r) => r,
            None => (&mut self.server).await,
        };
        tracing::info!("server stopped; draining writes");
        self.workers.stop();
        let _ = std::fs::remove_file(self.store.data_dir().join(ADDR_FILE));
        self.store.close();
        tracing::info!("store closed cleanly");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// Buyers who connect all at once wait in the accept queue instead of
    /// having their SYNs dropped: more connections than a std listener's
    /// queue of 128 all connect while nothing accepts them.
    #[test]
    fn a_burst_of_connections_waits_in_the_accept_queue() {
        // The kernel caps every queue at net.core.somaxconn (4096 on
        // current kernels, 128 on old ones).
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let n = 400.min(cap);
        if n <= 129 {
            eprintln!("net.core.somaxconn is {cap}: this machine cannot queue more than 128");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_listen_backlog(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Vec<TcpStream> = (0..n)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connection {i} of {n} was not queued: {e}"))
            })
            .collect();
        assert_eq!(conns.len(), n);
    }
}
