//! Coupon reads: the admin's list and detail, and what the quote checks a
//! coupon against (it holds nothing, so it reads what is committed).

use super::{decode, storage};
use crate::domain::pricing::{coupon_key, Coupon};
use crate::error::Result;
use crate::store::tree::{self, Tree};
use crate::store::tx::coupon_email_key;
use crate::store::Store;

impl Store {
    /// The coupon with `code`, in any letter case.
    pub fn coupon(&self, code: &str) -> Result<Option<Coupon>> {
        self.read(Tree::Coupons, coupon_key(code).as_bytes())
    }

    /// Every coupon, ordered by code (lower-cased).
    pub fn coupons(&self) -> Result<Vec<Coupon>> {
        self.trees()?
            .get(Tree::Coupons)
            .iter()
            .values()
            .map(|v| decode(&v.map_err(storage)?))
            .collect()
    }

    /// Every per-e-mail use count, by its row key (for `faka check`).
    pub fn coupon_email_counts(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        self.trees()?
            .get(Tree::CouponEmails)
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                Ok((k.to_vec(), tree::read_u64(&v).unwrap_or(0)))
            })
            .collect()
    }

    /// How many orders of `email` (pending or paid) carry coupon `code`.
    pub fn coupon_email_uses(&self, code: &str, email: &str) -> Result<u64> {
        Ok(self
            .read_raw(Tree::CouponEmails, &coupon_email_key(code, email))?
            .and_then(|v| tree::read_u64(&v))
            .unwrap_or(0))
    }
}
