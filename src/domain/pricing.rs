//! What an order costs: the wholesale tier that applies to its quantity,
//! then a coupon's discount, and why a coupon may be refused. Pure
//! functions over the product's price and tiers and the stored coupon, so
//! order creation (in the writer), the quote (from a read) and the pages
//! all price alike; the claim of a coupon's use is `shop::coupons`'.

use super::model::{Pricing, Tier};
use serde::{Deserialize, Serialize};

/// Most tiers a product may have: enough for any price list, and a bound
/// on what each product read decodes.
pub const MAX_TIERS: usize = 16;

/// A discount code. Stored under its code lower-cased (codes match
/// case-insensitively); `code` keeps the merchant's spelling. `uses` counts
/// the paid orders that carry it and `held` the pending ones: both change
/// only in the writer, in the same command as the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: String,
    pub kind: CouponKind,
    /// Percent 1–100, or minor units off the subtotal.
    pub value: u64,
    /// Empty: every product.
    pub product_ids: Vec<String>,
    /// The subtotal an order must reach (minor units; 0 = any).
    pub min_amount: u64,
    /// Orders that may carry it, pending ones included (`None`: no cap).
    pub max_uses: Option<u64>,
    /// The same per buyer e-mail (matched in any letter case).
    pub max_uses_per_email: Option<u64>,
    pub starts_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub uses: u64,
    pub held: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CouponKind {
    Percent,
    Fixed,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponKind::Percent => "percent",
            CouponKind::Fixed => "fixed",
        }
    }

    pub fn parse(s: &str) -> Option<CouponKind> {
        match s {
            "percent" => Some(CouponKind::Percent),
            "fixed" => Some(CouponKind::Fixed),
            _ => None,
        }
    }
}

/// The key a code is stored and looked up under: codes are ASCII, so
/// lower-casing them is the case-insensitive match.
pub fn coupon_key(code: &str) -> String {
    code.to_ascii_lowercase()
}

/// Whether `code` is a well-formed coupon code: `[A-Za-z0-9_-]{3,32}`.
pub fn valid_code(code: &str) -> bool {
    (3..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a product's tiers and returns them sorted by `min_quantity`
/// (the merchant may list them in any order): each `min_quantity` at
/// least 2 and unique, each price at most `max_price`.
pub fn parse_tiers(mut tiers: Vec<Tier>, max_price: u64) -> Result<Vec<Tier>, String> {
    if tiers.len() > MAX_TIERS {
        return Err(format!("at most {MAX_TIERS} tiers"));
    }
    tiers.sort_by_key(|t| t.min_quantity);
    for (i, t) in tiers.iter().enumerate() {
        if t.min_quantity < 2 {
            return Err("each min_quantity must be at least 2".into());
        }
        if t.price > max_price {
            return Err(format!("each price must be at most {max_price}"));
        }
        if i > 0 && tiers[i - 1].min_quantity == t.min_quantity {
            return Err(format!("min_quantity {} appears twice", t.min_quantity));
        }
    }
    Ok(tiers)
}

/// The unit price for `quantity`: the price of the highest tier whose
/// `min_quantity` ≤ quantity, else the product's `price`. `tiers` sorted.
pub fn unit_price(price: u64, tiers: &[Tier], quantity: u32) -> u64 {
    tiers
        .iter()
        .rev()
        .find(|t| t.min_quantity <= quantity)
        .map_or(price, |t| t.price)
}

/// A coupon's discount on `subtotal`: a percent one rounds down (the
/// buyer never gets a fraction of a fen more than promised), a fixed one
/// is at most the subtotal.
pub fn discount(kind: CouponKind, value: u64, subtotal: u64) -> u64 {
    match kind {
        // u128: subtotal × 100 cannot overflow.
        CouponKind::Percent => (subtotal as u128 * value.min(100) as u128 / 100) as u64,
        CouponKind::Fixed => value.min(subtotal),
    }
}

/// The price of `quantity` at `price` with `tiers`, before any coupon;
/// `None` if the subtotal does not fit in a u64.
pub fn price_before_coupon(price: u64, tiers: &[Tier], quantity: u32) -> Option<Pricing> {
    let unit_price = unit_price(price, tiers, quantity);
    Some(Pricing {
        unit_price,
        subtotal: unit_price.checked_mul(quantity as u64)?,
        discount: 0,
        coupon: None,
    })
}

impl Pricing {
    /// What the buyer pays: the subtotal less the discount, never below 0.
    pub fn amount(&self) -> u64 {
        self.subtotal.saturating_sub(self.discount)
    }

    /// The same price with `coupon`'s discount taken off.
    pub fn with_coupon(mut self, coupon: &Coupon) -> Pricing {
        self.discount = discount(coupon.kind, coupon.value, self.subtotal);
        self.coupon = Some(coupon.code.clone());
        self
    }
}

/// What a buyer's e-mail has already used of a coupon, and what the order
/// would be without it: what a coupon is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CouponUse<'a> {
    pub product_id: &'a str,
    pub subtotal: u64,
    pub now_ms: i64,
    /// Orders of this buyer that carry the coupon (pending or paid).
    pub email_uses: u64,
}

/// Why a coupon does not apply to an order, in the words of the 422
/// `invalid_coupon` message; `None` when it applies.
pub fn refusal(c: &Coupon, u: CouponUse<'_>) -> Option<String> {
    let code = &c.code;
    if !c.active {
        return Some(format!("coupon {code} is inactive"));
    }
    if c.starts_at_ms.is_some_and(|s| u.now_ms < s) {
        return Some(format!("coupon {code} has not started yet"));
    }
    if c.expires_at_ms.is_some_and(|e| u.now_ms >= e) {
        return Some(format!("coupon {code} has expired"));
    }
    if !c.product_ids.is_empty() && !c.product_ids.iter().any(|p| p == u.product_id) {
        return Some(format!("coupon {code} is not for this product"));
    }
    if u.subtotal < c.min_amount {
        return Some(format!(
            "coupon {code} needs an order of at least {} (this one is {})",
            c.min_amount, u.subtotal
        ));
    }
    if c.max_uses.is_some_and(|m| c.uses + c.held >= m) {
        return Some(format!("coupon {code} is used up"));
    }
    if c.max_uses_per_email.is_some_and(|m| u.email_uses >= m) {
        return Some(format!("coupon {code} is used up for this e-mail"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                min_quantity: 10,
                price: 650,
            },
            Tier {
                min_quantity: 50,
                price: 600,
            },
        ]
    }

    fn coupon() -> Coupon {
        Coupon {
            code: "Spring-10".into(),
            kind: CouponKind::Percent,
            value: 10,
            product_ids: Vec::new(),
            min_amount: 0,
            max_uses: None,
            max_uses_per_email: None,
            starts_at_ms: None,
            expires_at_ms: None,
            active: true,
            created_at_ms: 0,
            updated_at_ms: 0,
            uses: 0,
            held: 0,
        }
    }

    fn use_at(subtotal: u64, now_ms: i64, email_uses: u64) -> CouponUse<'static> {
        CouponUse {
            product_id: "steam-10",
            subtotal,
            now_ms,
            email_uses,
        }
    }

    #[test]
    fn the_highest_tier_reached_prices_each_key() {
        let t = tiers();
        for (q, want) in [
            (1, 690),
            (9, 690),
            (10, 650),
            (11, 650),
            (49, 650),
            (50, 600),
            (51, 600),
            (u32::MAX, 600),
        ] {
            assert_eq!(unit_price(690, &t, q), want, "quantity {q}");
        }
        assert_eq!(unit_price(690, &[], 100), 690, "no tiers: the price");
    }

    #[test]
    fn percent_discounts_round_down_and_fixed_ones_stop_at_the_subtotal() {
        assert_eq!(discount(CouponKind::Percent, 10, 999), 99);
        assert_eq!(discount(CouponKind::Percent, 33, 100), 33);
        assert_eq!(discount(CouponKind::Percent, 33, 1), 0);
        assert_eq!(discount(CouponKind::Percent, 100, 12345), 12345);
        assert_eq!(discount(CouponKind::Percent, 50, u64::MAX), u64::MAX / 2);
        assert_eq!(discount(CouponKind::Fixed, 500, 1380), 500);
        assert_eq!(discount(CouponKind::Fixed, 5000, 1380), 1380);
        let p = price_before_coupon(690, &tiers(), 2).unwrap();
        let c = Coupon {
            kind: CouponKind::Fixed,
            value: 10_000,
            ..coupon()
        };
        let p = p.with_coupon(&c);
        assert_eq!((p.subtotal, p.discount, p.amount()), (1380, 1380, 0));
        assert_eq!(p.coupon.as_deref(), Some("Spring-10"));
    }

    #[test]
    fn a_subtotal_past_u64_is_refused_not_wrapped() {
        assert!(price_before_coupon(u64::MAX, &[], 2).is_none());
        assert!(price_before_coupon(u64::MAX / 2, &[], 2).is_some());
        let t = [Tier {
            min_quantity: 2,
            price: 1,
        }];
        let p = price_before_coupon(u64::MAX, &t, 2).unwrap();
        assert_eq!((p.unit_price, p.subtotal), (1, 2), "the tier decides");
    }

    #[test]
    fn tiers_are_sorted_and_checked() {
        let mut t = tiers();
        t.reverse();
        assert_eq!(parse_tiers(t, 1000).unwrap(), tiers());
        let one = vec![Tier {
            min_quantity: 1,
            price: 5,
        }];
        assert!(parse_tiers(one, 1000).unwrap_err().contains("at least 2"));
        let mut dup = tiers();
        dup[1].min_quantity = 10;
        assert!(parse_tiers(dup, 1000).unwrap_err().contains("twice"));
        assert!(parse_tiers(tiers(), 600).is_err(), "a price past the max");
        let many = (2..2 + MAX_TIERS as u32 + 1)
            .map(|q| Tier {
                min_quantity: q,
                price: 1,
            })
            .collect();
        assert!(parse_tiers(many, 1000).is_err());
        assert_eq!(parse_tiers(Vec::new(), 1000).unwrap(), Vec::new());
    }

    #[test]
    fn codes_are_checked_and_matched_in_any_case() {
        for ok in ["abc", "SPRING-10", "a_b-c", &"x".repeat(32)] {
            assert!(valid_code(ok), "{ok}");
        }
        for bad in ["ab", "", "has space", "ünï", "a.b", &"x".repeat(33)] {
            assert!(!valid_code(bad), "{bad}");
        }
        assert_eq!(coupon_key("Spring-10"), coupon_key("SPRING-10"));
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let c = coupon();
        assert_eq!(refusal(&c, use_at(100, 0, 0)), None);
        let cases: Vec<(Coupon, CouponUse, &str)> = vec![
            (
                Coupon {
                    active: false,
                    ..coupon()
                },
                use_at(100, 0, 0),
                "inactive",
            ),
            (
                Coupon {
                    starts_at_ms: Some(10),
                    ..coupon()
                },
                use_at(100, 9, 0),
                "not started",
            ),
            (
                Coupon {
                    expires_at_ms: Some(10),
                    ..coupon()
                },
                use_at(100, 10, 0),
                "expired",
            ),
            (
                Coupon {
                    product_ids: vec!["other".into()],
                    ..coupon()
                },
                use_at(100, 0, 0),
                "not for this product",
            ),
            (
                Coupon {
                    min_amount: 101,
                    ..coupon()
                },
                use_at(100, 0, 0),
                "at least 101",
            ),
            (
                Coupon {
                    max_uses: Some(3),
                    uses: 1,
                    held: 2,
                    ..coupon()
                },
                use_at(100, 0, 0),
                "used up",
            ),
            (
                Coupon {
                    max_uses_per_email: Some(1),
                    ..coupon()
                },
                use_at(100, 0, 1),
                "for this e-mail",
            ),
        ];
        for (c, u, why) in cases {
            let got = refusal(&c, u).unwrap_or_default();
            assert!(got.contains(why), "{got:?} should say {why:?}");
        }
        // At the edges: started at its start, valid just before its end,
        // at exactly its minimum, one use left.
        let edge = Coupon {
            starts_at_ms: Some(10),
            expires_at_ms: Some(20),
            min_amount: 100,
            max_uses: Some(3),
            uses: 1,
            held: 1,
            max_uses_per_email: Some(2),
            product_ids: vec!["steam-10".into()],
            ..coupon()
        };
        assert_eq!(refusal(&edge, use_at(100, 10, 1)), None);
        assert_eq!(refusal(&edge, use_at(100, 19, 1)), None);
    }

    #[test]
    fn coupon_kinds_read_back_what_they_write_and_nothing_else() {
        for k in [CouponKind::Percent, CouponKind::Fixed] {
            assert_eq!(CouponKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(CouponKind::Percent.as_str(), "percent");
        assert_eq!(CouponKind::Fixed.as_str(), "fixed");
        for bad in ["", "Percent", "half", "fixed "] {
            assert_eq!(CouponKind::parse(bad), None, "{bad:?}");
        }
    }

    /// Each bound of a tier list, at and one past it.
    #[test]
    fn tiers_are_refused_exactly_past_their_bounds() {
        let t = |min_quantity, price| Tier {
            min_quantity,
            price,
        };
        let many = |n: u32| (0..n).map(|i| t(2 + i, 1)).collect::<Vec<_>>();
        assert_eq!(
            parse_tiers(many(MAX_TIERS as u32), 5).unwrap().len(),
            MAX_TIERS
        );
        assert!(parse_tiers(many(MAX_TIERS as u32 + 1), 5).is_err());
        assert!(
            parse_tiers(vec![t(2, 5)], 5).is_ok(),
            "min 2 and price at the max"
        );
        assert!(parse_tiers(vec![t(1, 5)], 5).is_err());
        assert!(parse_tiers(vec![t(2, 6)], 5).is_err());
        assert!(parse_tiers(vec![t(3, 4), t(3, 5)], 5).is_err());
        assert_eq!(
            parse_tiers(vec![t(9, 1), t(3, 2)], 5).unwrap(),
            vec![t(3, 2), t(9, 1)]
        );
    }

    #[test]
    fn the_amount_is_the_subtotal_less_the_discount_never_below_zero() {
        let p = Pricing {
            unit_price: 500,
            subtotal: 1500,
            discount: 200,
            coupon: None,
        };
        assert_eq!(p.amount(), 1300);
        let all = Pricing {
            discount: 2000,
            ..p.clone()
        };
        assert_eq!(all.amount(), 0);
    }
}
