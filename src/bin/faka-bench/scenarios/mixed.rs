//! `mixed`: on a faka of its own with `hold_secs = 1`, half the connections
//! read, a quarter buy (the flow journey), and the rest create orders they
//! never pay and watch them expire, paying every tenth late. At the end
//! every unpaid order must have expired, every late payment ended
//! delivered (an import delivers those that found no stock), no key went
//! twice, and the counts of all three products add up.

use crate::admin::{check_counts, create_product, import_range};
use crate::buyer::{check_delivered, check_unique, create_order, fetch_order, flow_errors, pay};
use crate::buyer::{Buyer, Created, Placed};
use crate::client::{ready, AConn, Conn, Http, Req};
use crate::load::{run_batch, run_tasks};
use crate::measure::{timed_call, Series, Wrong};
use crate::metrics::writer_totals;
use crate::process::Faka;
use crate::report::{rate, Row};
use crate::settings::Settings;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Products of the mixed scenario.
const MIX_READ: &str = "mix-read";
const MIX_FLOW: &str = "mix-flow";
const MIX_HOLD: &str = "mix-hold";

/// One mixed-scenario worker: a reader, a buyer, or a holder who never pays.
enum Mixer {
    Reader { s: Series, wrong: Wrong, n: u64 },
    Buyer(Buyer),
    Holder(Holder),
}

/// Creates orders it never pays, then watches them expire (and pays a few late).
#[derive(Default)]
struct Holder {
    create: Series,
    get: Series,
    pay: Series,
    wrong: Wrong,
    waiting: std::collections::VecDeque<(Instant, Placed)>,
    expired: u64,
    out_of_stock: u64,
    late: Vec<Placed>,
    /// Looks at orders still pending 1.5 s after their hold ran out.
    slow_expiries: u64,
    /// Whether its orders carry an `Idempotency-Key`.
    idempotency_keys: bool,
}

/// How long after its hold an unpaid order may still be pending before the
/// mixed scenario calls it a failure.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

impl Holder {
    async fn step(&mut self, conn: &mut AConn, hold: Duration) -> bool {
        if let Some((at, _)) = self.waiting.front() {
            if at.elapsed() > hold + Duration::from_millis(1500) {
                let (at, o) = self.waiting.pop_front().expect("front exists");
                let final_look = at.elapsed() > hold + EXPIRY_GRACE;
                if let Some(o) = self.observe(conn, o, final_look).await {
                    // Not expired yet on a starved machine: look again later.
                    self.waiting.push_back((at, o));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return true;
            }
        }
        let keyed = self.idempotency_keys;
        match create_order(
            conn,
            &mut self.create,
            &mut self.wrong,
            MIX_HOLD,
            1,
            (keyed, false),
        )
        .await
        {
            Created::Ok(o) => self.waiting.push_back((Instant::now(), o)),
            Created::OutOfStock => {
                self.out_of_stock += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Created::Failed => {}
        }
        true
    }

    /// GETs an order past its hold: it must be expired; the 1st, 11th, … are
    /// paid late. Gives the order back when it is still pending and `final_look`
    /// is false (the sweeper may lag on a machine starved of CPU: expiry is a
    /// correctness check here, its latency is not).
    async fn observe<H: Http>(
        &mut self,
        conn: &mut H,
        o: Placed,
        final_look: bool,
    ) -> Option<Placed> {
        let (status, _) = fetch_order(conn, &mut self.get, &mut self.wrong, &o).await?;
        if status == "pending" && !final_look {
            self.slow_expiries += 1;
            return Some(o);
        }
        if status != "expired" {
            self.wrong.add(format!(
                "order {} is {status} {} s after its hold ran out",
                o.order_no,
                EXPIRY_GRACE.as_secs()
            ));
            return None;
        }
        self.expired += 1;
        if self.expired % 10 == 1 {
            match pay(conn, &mut self.pay, &mut self.wrong, &o)
                .await
                .as_deref()
            {
                Some("delivered" | "awaiting_stock") => self.late.push(o),
                Some(other) => self
                    .wrong
                    .add(format!("late payment of {} left it {other}", o.order_no)),
                None => {}
            }
        }
        None
    }
}

/// The workers' records merged by kind.
struct MixTotals {
    read: Series,
    reads_wrong: Wrong,
    buyer: Buyer,
    holder: Holder,
}

impl MixTotals {
    fn of(states: Vec<Mixer>) -> MixTotals {
        let mut t = MixTotals {
            read: Series::default(),
            reads_wrong: Wrong::default(),
            buyer: Buyer::default(),
            holder: Holder::default(),
        };
        for m in states {
            match m {
                Mixer::Reader { s, wrong, .. } => {
                    t.read.merge(s);
                    t.reads_wrong.merge(wrong);
                }
                Mixer::Buyer(b) => t.buyer.merge(b),
                Mixer::Holder(h) => merge_holder(&mut t.holder, h),
            }
        }
        t
    }
}

pub fn run(cfg: &Settings) -> Result<Vec<Row>> {
    let hold = Duration::from_secs(1);
    let faka = Faka::start(cfg, "mixed", hold.as_secs())?;
    let mut admin = Conn::new(faka.addr, Duration::from_secs(300));
    // Buyers are a quarter of the connections; holders get little stock, so
    // it runs out and comes back as their orders expire.
    let flow_keys = (cfg.flow_keys / 2).max(1000);
    let hold_keys = (cfg.concurrency * 4).max(50);
    for (id, prefix, n) in [
        (MIX_READ, "MREAD", 100),
        (MIX_FLOW, "MFLOW", flow_keys),
        (MIX_HOLD, "MHOLD", hold_keys),
    ] {
        create_product(&mut admin, id, 10)?;
        import_range(&mut admin, id, prefix, (0, n), cfg.setup_chunk)?;
    }
    let (readers, buyers) = (cfg.concurrency / 2, cfg.concurrency / 4);
    let writer_before = writer_totals(&mut admin)?;
    let (states, elapsed) = run_tasks(
        faka.addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |i| {
            if i < readers {
                Mixer::Reader {
                    s: Series::default(),
                    wrong: Wrong::default(),
                    n: 0,
                }
            } else if i < readers + buyers {
                Mixer::Buyer(Buyer::new(cfg))
            } else {
                Mixer::Holder(Holder {
                    idempotency_keys: cfg.idempotency_keys,
                    ..Holder::default()
                })
            }
        },
        async |m: &mut Mixer, conn: &mut AConn| match m {
            Mixer::Reader { s, wrong, n } => {
                *n += 1;
                mixed_read(conn, s, wrong, n.is_multiple_of(50)).await;
                true
            }
            Mixer::Buyer(b) => b.journey(conn, MIX_FLOW, "MFLOW-").await,
            Mixer::Holder(h) => h.step(conn, hold).await,
        },
    );
    let mut t = MixTotals::of(states);
    // Taken before the checks, whose own writes (late payments) come after.
    let writer = writer_totals(&mut admin)?.since(writer_before);
    let mut failures = mixed_verify(cfg, &faka, &mut admin, &mut t, hold, flow_keys, hold_keys)?;
    failures.extend(faka.stop_and_check()?);
    let h = &mut t.holder;
    let hold_row = format!(
        "{} (expired {}, late-paid {}, {}×409)",
        rate(h.create.lat_us.len() as f64, elapsed, "orders"),
        h.expired,
        h.late.len(),
        h.out_of_stock
    );
    Ok(vec![
        Row::new(
            "mixed (flow)",
            rate(t.buyer.delivered.len() as f64, elapsed, "orders"),
            &mut t.buyer.journey,
        )
        .verdict(failures),
        Row::new(
            "  mixed read",
            rate(t.read.lat_us.len() as f64, elapsed, "req"),
            &mut t.read,
        ),
        Row::new("  mixed hold", hold_row, &mut t.holder.create),
        Row::info("  journal fdatasyncs", writer.syncs_text()),
    ])
}

/// GETs the read product (or, with `list`, the list) and checks what it says.
async fn mixed_read<H: Http>(conn: &mut H, s: &mut Series, wrong: &mut Wrong, list: bool) {
    let path = if list {
        "/api/v1/products".to_string()
    } else {
        format!("/api/v1/products/{MIX_READ}")
    };
    let Some(r) = timed_call(s, conn, &Req::get(path.clone())).await else {
        return;
    };
    if !s.check(&r, 200) {
        return;
    }
    let ok = match r.json() {
        Ok(v) if list => v["products"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["id"] == MIX_READ)),
        Ok(v) => v["id"] == MIX_READ && v["stock"] == 100,
        Err(_) => false,
    };
    if !ok {
        wrong.add(format!("GET {path}: {}", String::from_utf8_lossy(&r.body)));
    }
}

fn merge_holder(into: &mut Holder, h: Holder) {
    into.create.merge(h.create);
    into.get.merge(h.get);
    into.pay.merge(h.pay);
    into.wrong.merge(h.wrong);
    into.waiting.extend(h.waiting);
    into.expired += h.expired;
    into.out_of_stock += h.out_of_stock;
    into.late.extend(h.late);
}

/// After the load: every unpaid order expires, late payments end delivered
/// (importing keys for any that wait for stock), and all counts add up.
fn mixed_verify(
    cfg: &Settings,
    faka: &Faka,
    admin: &mut Conn,
    t: &mut MixTotals,
    hold: Duration,
    flow_keys: usize,
    hold_keys: usize,
) -> Result<Vec<String>> {
    let mut failures = std::mem::take(&mut t.buyer.wrong).into_failures("mixed flow");
    failures.extend(std::mem::take(&mut t.reads_wrong).into_failures("mixed read"));
    if t.read.error_count() > 0 {
        failures.push(format!("read errors: {}", t.read.errors_text()));
    }
    flow_errors(
        &[&t.buyer.create, &t.buyer.pay, &t.buyer.get],
        &mut failures,
    );
    // Let the last holds run out, then look at every order still unchecked.
    std::thread::sleep(hold + Duration::from_millis(1600));
    let rest: Vec<Placed> = t.holder.waiting.drain(..).map(|(_, o)| o).collect();
    let (states, _) = run_batch(
        faka.addr,
        cfg.concurrency,
        rest.len(),
        |_| Holder::default(),
        |h, conn, i| {
            // Poll each until it is expired or the grace period is over.
            let deadline = Instant::now() + EXPIRY_GRACE;
            let mut o = rest[i].clone();
            while let Some(back) = ready(h.observe(conn, o, Instant::now() > deadline)) {
                o = back;
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    );
    states
        .into_iter()
        .for_each(|h| merge_holder(&mut t.holder, h));
    let h = &mut t.holder;
    failures.extend(std::mem::take(&mut h.wrong).into_failures("mixed hold"));
    let hold_errors: u64 = [&h.create, &h.get, &h.pay]
        .iter()
        .map(|s| s.error_count())
        .sum();
    if hold_errors > 0 {
        failures.push(format!(
            "holder errors: create {} / get {} / pay {}",
            h.create.errors_text(),
            h.get.errors_text(),
            h.pay.errors_text()
        ));
    }
    if h.expired == 0 {
        failures.push("no unpaid order was seen to expire".into());
    }
    let (late_keys, topped_up) = late_deliveries(admin, &h.late, &mut failures)?;
    let all_keys = t
        .buyer
        .delivered
        .iter()
        .flat_map(|(_, k)| k)
        .chain(late_keys.iter());
    check_unique(all_keys, &mut failures);
    let flow_sold: u64 = t
        .buyer
        .delivered
        .iter()
        .map(|(o, _)| o.quantity as u64)
        .sum();
    check_counts(admin, MIX_READ, 100, 0, &mut failures)?;
    check_counts(admin, MIX_FLOW, flow_keys as u64, flow_sold, &mut failures)?;
    check_counts(
        admin,
        MIX_HOLD,
        (hold_keys + topped_up) as u64,
        h.late.len() as u64,
        &mut failures,
    )?;
    Ok(failures)
}

/// Every late-paid order must end delivered; those awaiting stock are
/// delivered by an import of as many keys. Gives their keys and the import size.
fn late_deliveries(
    admin: &mut Conn,
    late: &[Placed],
    failures: &mut Vec<String>,
) -> Result<(Vec<String>, usize)> {
    let mut scratch = (Series::default(), Wrong::default());
    let mut statuses = Vec::new();
    for o in late {
        statuses.push(ready(fetch_order(admin, &mut scratch.0, &mut scratch.1, o)).map(|(s, _)| s));
    }
    let awaiting = statuses
        .iter()
        .filter(|s| s.as_deref() == Some("awaiting_stock"))
        .count();
    if awaiting > 0 {
        println!("note: mixed: {awaiting} late payment(s) found no stock (awaiting_stock); importing as many keys must deliver them");
        import_range(admin, MIX_HOLD, "MHOLD-LATE", (0, awaiting), awaiting)?;
    }
    let mut keys = Vec::new();
    for o in late {
        match ready(fetch_order(admin, &mut scratch.0, &mut scratch.1, o)) {
            Some((s, k))
                if s == "delivered" && check_delivered(o, &k, "MHOLD-", &mut scratch.1) =>
            {
                keys.extend(k)
            }
            other => failures.push(format!(
                "late-paid order {} ended {:?}",
                o.order_no,
                other.map(|(s, _)| s)
            )),
        }
    }
    failures.extend(scratch.1.into_failures("late payment"));
    if scratch.0.error_count() > 0 {
        failures.push(format!("late payment lookups: {}", scratch.0.errors_text()));
    }
    Ok((keys, awaiting))
}
