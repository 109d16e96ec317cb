//! Abuse limits per client IP, in memory (they reset on restart, which is
//! fine for throttling): order creation rate, order lookups (so 128-bit
//! tokens cannot be guessed at speed anyway), lookups by e-mail and query
//! password per IP and per e-mail (each costs an argon2, and a password
//! must not be guessed at speed), resends per order, and failed admin
//! logins. The
//! caps on unpaid orders per IP and per e-mail live in the writer instead,
//! because they must hold exactly under concurrency (see
//! `shop::create_order`). Exceeding a limit is 429 `rate_limited`
//! with `Retry-After`.

use crate::config::LimitsConfig;
use crate::error::Error;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed admin logins per client in its current minute, and when clients
/// past their minute were last swept out.
struct Failures {
    by_client: HashMap<String, (Instant, u32)>,
    swept: Instant,
}

pub struct Limits {
    orders: Option<DefaultKeyedRateLimiter<String>>,
    lookups: Option<DefaultKeyedRateLimiter<String>>,
    password_lookups: Option<DefaultKeyedRateLimiter<String>>,
    email_lookups: Option<DefaultKeyedRateLimiter<String>>,
    resends: DefaultKeyedRateLimiter<String>,
    admin_failures: Mutex<Failures>,
    admin_max: u32,
}

const WINDOW: Duration = Duration::from_secs(60);

fn per_minute(n: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

/// What a limit is for, for its message.
#[derive(Clone, Copy)]
pub enum Limit {
    Orders,
    Lookups,
    AdminFailures,
    /// Lookups by e-mail and query password, per client IP.
    PasswordLookups,
    /// Lookups by e-mail and query password, per e-mail.
    EmailLookups,
    /// Delivery e-mails sent again, per order.
    Resends,
}

/// Delivery e-mails one order may have sent again per hour (the contract's).
const RESENDS_PER_HOUR: u32 = 3;

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Limits {
            orders: per_minute(cfg.orders_per_minute),
            lookups: per_minute(cfg.lookups_per_minute),
            password_lookups: per_minute(cfg.password_lookups_per_minute),
            email_lookups: NonZeroU32::new(cfg.lookups_per_email_per_hour)
                .map(|n| RateLimiter::keyed(Quota::per_hour(n))),
            resends: RateLimiter::keyed(Quota::per_hour(
                NonZeroU32::new(RESENDS_PER_HOUR).unwrap_or(NonZeroU32::MIN),
            )),
            admin_failures: Mutex::new(Failures {
                by_client: HashMap::new(),
                swept: Instant::now(),
            }),
            admin_max: cfg.admin_failures_per_minute,
        }
    }

    fn limiter(&self, which: Limit) -> Option<&DefaultKeyedRateLimiter<String>> {
        match which {
            Limit::Orders => self.orders.as_ref(),
            Limit::Lookups => self.lookups.as_ref(),
            Limit::AdminFailures => None,
            Limit::PasswordLookups => self.password_lookups.as_ref(),
            Limit::EmailLookups => self.email_lookups.as_ref(),
            Limit::Resends => Some(&self.resends),
        }
    }

    /// Takes one unit of `which` for `client`, or says how long to wait.
    pub fn take(&self, which: Limit, client: &str) -> Result<(), Error> {
        let Some(l) = self.limiter(which) else {
            return Ok(());
        };
        l.check_key(&client.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            limited(which, wait)
        })
    }

    /// 429 while `client` has too many failed admin logins this minute.
    pub fn admin_blocked(&self, client: &str) -> Result<(), Error> {
        if self.admin_max == 0 {
            return Ok(());
        }
        let failures = self
            .admin_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match failures.by_client.get(client) {
            Some((start, n)) if *n >= self.admin_max && start.elapsed() < WINDOW => {
                Err(limited(Limit::AdminFailures, WINDOW - start.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed admin login from `client`.
    pub fn admin_failed(&self, client: &str) {
        let mut failures = self
            .admin_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Failures { by_client, swept } = &mut *failures;
        // Many addresses failing at once (IPv6 makes that cheap): sweep at
        // most once a second, not on every failure while the map is big.
        if by_client.len() > 10_000 && swept.elapsed() >= Duration::from_secs(1) {
            by_client.retain(|_, (start, _)| start.elapsed() < WINDOW);
            *swept = Instant::now();
        }
        let e = by_client
            .entry(client.to_string())
            .or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }

    /// Forgets idle clients now and then, so memory stays bounded.
    pub fn shrink(&self) {
        let limiters = [
            &self.orders,
            &self.lookups,
            &self.password_lookups,
            &self.email_lookups,
        ];
        for l in limiters.into_iter().flatten().chain([&self.resends]) {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn limited(which: Limit, wait: Duration) -> Error {
    let what = match which {
        Limit::Orders => "too many orders from this address",
        Limit::Lookups => "too many order lookups from this address",
        Limit::AdminFailures => "too many failed admin logins from this address",
        Limit::PasswordLookups => "too many order lookups by e-mail from this address",
        Limit::EmailLookups => "too many order lookups for this e-mail",
        Limit::Resends => "this order's e-mail was sent again too often",
    };
    Error::RateLimited {
        message: format!("{what}; retry in {} s", wait.as_secs().max(1)),
        retry_after: wait.max(Duration::from_secs(1)),
    }
}
