//! The runners that drive many connections at once. `run_timed` and
//! `run_batch` give each worker a thread and a blocking `Conn`; `run_tasks`
//! and `run_batch_tasks` share the workers out as tasks over a few client
//! threads on non-blocking `AConn`s. Timed runs stop at a duration (or
//! when every worker says stop), batches when items `0..n` are done; all
//! open their connections before the clock starts and release the workers
//! at once.

use crate::client::{AConn, Conn};
use futures_util::future::join_all;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Runs `conns` workers for `duration` (or until every worker's step says
/// stop); each has its own connection, opened before the clock starts.
pub fn run_timed<S: Send>(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    init: impl Fn(usize) -> S + Sync,
    step: impl Fn(&mut S, &mut Conn) -> bool + Sync,
) -> (Vec<S>, Duration) {
    let stop = AtomicBool::new(false);
    let alive = AtomicUsize::new(conns);
    let barrier = Barrier::new(conns + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let (init, step, stop, alive, barrier) = (&init, &step, &stop, &alive, &barrier);
                spawn_worker(s, move || {
                    let mut state = init(i);
                    let mut conn = Conn::new(addr, Duration::from_secs(30));
                    let _ = conn.connect();
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) && step(&mut state, &mut conn) {}
                    alive.fetch_sub(1, Ordering::Relaxed);
                    state
                })
            })
            .collect();
        let start = run_clock(&barrier, &alive, &stop, duration);
        let states = handles.into_iter().map(join_worker).collect();
        (states, start.elapsed())
    })
}

/// The clock of a timed run: releases the workers waiting on `barrier`,
/// lets them run for `duration` or until none is left alive, then tells
/// them to stop. Gives the start.
fn run_clock(
    barrier: &Barrier,
    alive: &AtomicUsize,
    stop: &AtomicBool,
    duration: Duration,
) -> Instant {
    barrier.wait();
    let start = Instant::now();
    while start.elapsed() < duration && alive.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    start
}

/// `run_timed` on non-blocking connections: the `conns` workers are tasks
/// shared out over `threads` client threads, each a single-threaded tokio
/// runtime. A thread per connection costs the load generator a sleep and
/// a wake-up per request on the same two cores faka runs on.
pub fn run_tasks<S: Send>(
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    duration: Duration,
    init: impl Fn(usize) -> S + Sync,
    step: impl AsyncFn(&mut S, &mut AConn) -> bool + Sync,
) -> (Vec<S>, Duration) {
    let stop = AtomicBool::new(false);
    let alive = AtomicUsize::new(conns);
    let threads = threads.clamp(1, conns.max(1));
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (init, step, stop, alive, barrier) = (&init, &step, &stop, &alive, &barrier);
                spawn_worker(sc, move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("building a tokio runtime for a client thread");
                    // All of this thread's connections are futures of one task:
                    // tokio's per-task I/O budget would make a future that
                    // finds the budget spent go to the back of the queue
                    // without progress, and in a burst the connections
                    // already served were served again first, each
                    // connection's first request waiting several times as
                    // long as later ones (docs/BENCHMARKS.md has the
                    // figures). Unconstrained, they take turns.
                    rt.block_on(tokio::task::unconstrained(async {
                        let mut workers: Vec<(S, AConn)> = (t..conns)
                            .step_by(threads)
                            .map(|i| (init(i), AConn::new(addr, Duration::from_secs(30))))
                            .collect();
                        join_all(workers.iter_mut().map(|(_, c)| async {
                            let _ = c.connect().await;
                        }))
                        .await;
                        // Nothing else runs on this thread's runtime yet.
                        barrier.wait();
                        join_all(workers.iter_mut().map(|(state, c)| async {
                            while !stop.load(Ordering::Relaxed) && step(state, c).await {}
                            alive.fetch_sub(1, Ordering::Relaxed);
                        }))
                        .await;
                        workers
                            .into_iter()
                            .map(|(state, _)| state)
                            .collect::<Vec<S>>()
                    }))
                })
            })
            .collect();
        let start = run_clock(&barrier, &alive, &stop, duration);
        let states = handles.into_iter().flat_map(join_worker).collect();
        (states, start.elapsed())
    })
}

/// Runs items `0..n` on `conns` workers, all released at once.
pub fn run_batch<S: Send>(
    addr: SocketAddr,
    conns: usize,
    n: usize,
    init: impl Fn(usize) -> S + Sync,
    step: impl Fn(&mut S, &mut Conn, usize) + Sync,
) -> (Vec<S>, Duration) {
    let next = AtomicUsize::new(0);
    let conns = conns.min(n).max(1);
    let (states, elapsed) = run_timed(
        addr,
        conns,
        Duration::from_secs(86_400),
        init,
        |st, conn| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i < n {
                step(st, conn, i);
            }
            i + 1 < n
        },
    );
    (states, elapsed)
}

/// `run_batch` on `run_tasks`' non-blocking connections.
pub fn run_batch_tasks<S: Send>(
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    n: usize,
    init: impl Fn(usize) -> S + Sync,
    step: impl AsyncFn(&mut S, &mut AConn, usize) + Sync,
) -> (Vec<S>, Duration) {
    let next = AtomicUsize::new(0);
    let conns = conns.min(n).max(1);
    run_tasks(
        addr,
        conns,
        threads,
        Duration::from_secs(86_400),
        init,
        async |st, conn| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i < n {
                step(st, conn, i).await;
            }
            i + 1 < n
        },
    )
}

fn spawn_worker<'s, T: Send + 's>(
    s: &'s std::thread::Scope<'s, '_>,
    f: impl FnOnce() -> T + Send + 's,
) -> std::thread::ScopedJoinHandle<'s, T> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn_scoped(s, f)
        .expect("spawning a client thread (raise the thread limit or lower --concurrency)")
}

fn join_worker<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}
