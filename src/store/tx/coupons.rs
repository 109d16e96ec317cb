//! The coupon operations of a `Tx`: coupons with their use counts, and the
//! per-e-mail counts beside them. Read through the overlay like everything
//! else, so the commands of one batch see each other's claims.

use super::Tx;
use crate::domain::pricing::{coupon_key, Coupon};
use crate::error::Result;
use crate::store::tree::{self, Tree};

impl Tx<'_> {
    /// The coupon with `code`, in any letter case.
    pub fn coupon(&self, code: &str) -> Result<Option<Coupon>> {
        self.get(Tree::Coupons, coupon_key(code).as_bytes())
    }

    pub fn put_coupon(&mut self, c: &Coupon) {
        self.put(Tree::Coupons, coupon_key(&c.code).into_bytes(), c);
    }

    /// How many orders of `email` (pending or paid) carry coupon `code`.
    pub fn coupon_email_uses(&self, code: &str, email: &str) -> Result<u64> {
        Ok(self
            .get_raw(Tree::CouponEmails, &coupon_email_key(code, email))?
            .and_then(|v| tree::read_u64(&v))
            .unwrap_or(0))
    }

    /// Sets that count; a count of 0 removes the row.
    pub fn put_coupon_email_uses(&mut self, code: &str, email: &str, n: u64) {
        let key = coupon_email_key(code, email);
        if n == 0 {
            self.del_raw(Tree::CouponEmails, key);
        } else {
            self.put_raw(Tree::CouponEmails, key, tree::u64_key(n).to_vec());
        }
    }
}

/// `code, 0, email`, both lower-cased: a buyer is one buyer in any case.
pub(crate) fn coupon_email_key(code: &str, email: &str) -> Vec<u8> {
    tree::scoped(&coupon_key(code), email.to_lowercase().as_bytes())
}
