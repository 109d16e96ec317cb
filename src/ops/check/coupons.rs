//! The coupons' use counts against the orders that carry them: a coupon's
//! `held` is its pending orders, its `uses` its paid ones (awaiting stock,
//! delivered, refunded), and each buyer's count (kept only for coupons with
//! a per-e-mail cap) the two together. The
//! caps are only as exact as these counts, which the writer keeps in the
//! order's own command.

use crate::domain::model::Order;
use crate::domain::order::OrderStatus;
use crate::domain::pricing::coupon_key;
use crate::error::Result;
use crate::store::{coupon_email_key, Store};
use std::collections::{HashMap, HashSet};

/// The counts the orders say the coupons must have.
#[derive(Default)]
pub(super) struct CouponTally {
    /// Coupon key → (held, uses).
    coupons: HashMap<String, (u64, u64)>,
    /// Per-e-mail row key → orders.
    emails: HashMap<Vec<u8>, u64>,
}

impl CouponTally {
    pub(super) fn count(&mut self, o: &Order) {
        let Some(code) = &o.pricing.coupon else {
            return;
        };
        let c = self.coupons.entry(coupon_key(code)).or_default();
        match o.status {
            OrderStatus::Expired => return,
            OrderStatus::Pending => c.0 += 1,
            _ => c.1 += 1,
        }
        *self
            .emails
            .entry(coupon_email_key(code, &o.email))
            .or_default() += 1;
    }

    pub(super) fn check(mut self, store: &Store, bad: &mut Vec<String>) -> Result<()> {
        let coupons = store.coupons()?;
        // Buyers' counts are kept only for coupons with a per-e-mail cap.
        let capped: HashSet<String> = coupons
            .iter()
            .filter(|c| c.max_uses_per_email.is_some())
            .map(|c| coupon_key(&c.code))
            .collect();
        let of_capped = |key: &[u8]| {
            let code = key.split(|&b| b == 0).next().unwrap_or(&[]);
            capped.contains(String::from_utf8_lossy(code).as_ref())
        };
        self.emails.retain(|key, _| of_capped(key));
        for c in coupons {
            let counted = self
                .coupons
                .remove(&coupon_key(&c.code))
                .unwrap_or_default();
            if (c.held, c.uses) != counted {
                bad.push(format!(
                    "coupon {} counts held/uses {}/{} but its orders are {}/{}",
                    c.code, c.held, c.uses, counted.0, counted.1
                ));
            }
        }
        for (code, _) in self.coupons {
            bad.push(format!("orders carry coupon {code}, which does not exist"));
        }
        for (key, n) in store.coupon_email_counts()? {
            if !of_capped(&key) {
                continue;
            }
            let counted = self.emails.remove(&key).unwrap_or(0);
            if n != counted {
                bad.push(format!(
                    "a buyer's count of coupon {} is {n} but their orders are {counted}",
                    String::from_utf8_lossy(key.split(|&b| b == 0).next().unwrap_or(&[]))
                ));
            }
        }
        if !self.emails.is_empty() {
            bad.push(format!(
                "{} buyers' coupon counts are missing",
                self.emails.len()
            ));
        }
        Ok(())
    }
}
