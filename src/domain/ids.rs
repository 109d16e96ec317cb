//! Newtypes that carry the shop's input rules. Requests are parsed into these
//! once, at the HTTP edge ("parse, don't validate"); inside, they are trusted.

/// Why a value from outside is none of these types. The domain names the
/// field and the reason; the edges map it to the contract's error
/// (`From<ParseError> for crate::error::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Invalid {
        field: &'static str,
        message: String,
    },
    NotFound(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Invalid { field, message } => write!(f, "{field}: {message}"),
            ParseError::NotFound(what) => f.write_str(what),
        }
    }
}

type Result<T> = std::result::Result<T, ParseError>;

/// The parse errors' constructors, named as the contract's codes.
struct Error;

impl Error {
    fn invalid(field: &'static str, message: impl Into<String>) -> ParseError {
        ParseError::Invalid {
            field,
            message: message.into(),
        }
    }

    fn not_found(what: impl Into<String>) -> ParseError {
        ParseError::NotFound(what.into())
    }
}
use std::fmt;

/// A product id: `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if ok {
            Ok(ProductId(s.to_string()))
        } else {
            Err(Error::invalid("id", "must match [a-z0-9][a-z0-9_-]{0,63}"))
        }
    }

    /// A product id that is already known to be valid (read from the store).
    pub fn from_trusted(s: String) -> Self {
        ProductId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A buyer's e-mail address: a pragmatic check (one `@`, a dotted domain, no
/// spaces or control characters, at most 254 bytes), lower-cased domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid("email", "must be an e-mail address like buyer@example.com");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        // A second `@` lands in the domain and fails its characters.
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(bad());
        }
        // One allocation: the local part as given, the domain lower-cased.
        let mut e = String::with_capacity(s.len());
        e.push_str(s);
        e[local.len() + 1..].make_ascii_lowercase();
        Ok(Email(e))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A public order number: `F` followed by 16 Crockford base32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderNo(String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl OrderNo {
    /// Parses an order number from a path or a callback. Anything that cannot
    /// be one of ours is rejected here, so lookups never see odd bytes.
    pub fn parse(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() == 17 && b[0] == b'F' && b[1..].iter().all(|c| CROCKFORD.contains(c)) {
            Ok(OrderNo(s.to_string()))
        } else {
            Err(Error::not_found(format!(
                "order {} not found",
                printable(s, 40)
            )))
        }
    }

    /// A new order number from the creation time (ms) and 40 random bits:
    /// sortable by time, unguessable enough to not enumerate, never secret.
    pub fn generate(now_ms: i64) -> Self {
        let rnd: u64 = rand::random::<u64>() & ((1 << 40) - 1);
        let ms = (now_ms.max(0) as u64) & ((1 << 40) - 1);
        let v: u128 = ((ms as u128) << 40) | rnd as u128;
        let mut s = String::with_capacity(17);
        s.push('F');
        for i in (0..16).rev() {
            s.push(CROCKFORD[((v >> (i * 5)) & 31) as usize] as char);
        }
        OrderNo(s)
    }

    pub fn from_trusted(s: String) -> Self {
        OrderNo(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short, printable rendering of untrusted input for error messages.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Gateways a buyer can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Gateway {
    Manual,
    Hmac,
    Epay,
    Alipay,
    Wechat,
    Stripe,
}

impl Gateway {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "manual" => Ok(Gateway::Manual),
            "hmac" => Ok(Gateway::Hmac),
            "epay" => Ok(Gateway::Epay),
            "alipay" => Ok(Gateway::Alipay),
            "wechat" => Ok(Gateway::Wechat),
            "stripe" => Ok(Gateway::Stripe),
            _ => Err(Error::invalid(
                "gateway",
                format!("unknown gateway {:?}", printable(s, 32)),
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Gateway::Manual => "manual",
            Gateway::Hmac => "hmac",
            Gateway::Epay => "epay",
            Gateway::Alipay => "alipay",
            Gateway::Wechat => "wechat",
            Gateway::Stripe => "stripe",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_follow_the_pattern() {
        for ok in ["a", "steam-10", "0_x", &"a".repeat(64)] {
            assert!(ProductId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "ä", &"a".repeat(65), "a/b"] {
            assert!(ProductId::parse(bad).is_err(), "{bad}");
        }
    }

    /// Ids and numbers read back, and print, exactly as they were given.
    #[test]
    fn ids_render_as_given() {
        let id = ProductId::parse("steam-10").unwrap();
        assert_eq!(
            (id.as_str(), id.to_string().as_str()),
            ("steam-10", "steam-10")
        );
        assert_eq!(ProductId::from_trusted("x_1".into()).as_str(), "x_1");
        let no = OrderNo::parse("F0123456789ABCDEF").unwrap();
        assert_eq!(no.to_string(), "F0123456789ABCDEF");
        assert_eq!(
            OrderNo::from_trusted("legacy-7".into()).as_str(),
            "legacy-7"
        );
    }

    #[test]
    fn emails_are_checked_and_domain_lowercased() {
        assert_eq!(
            Email::parse("Buyer@Example.COM").unwrap().as_str(),
            "Buyer@example.com"
        );
        for ok in ["a@b-c.d", "a@xn--80a.cn", "a@例子.cn", "a.b+c@d.e"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.c",
            "a@b",
            "a b@c.d",
            "a@b..c",
            "a@@b.c",
            "a@.b.c",
            "a@b.c.",
            "a@b_c.d",
            "a@b@c.d",
            "a\u{1}b@c.d",
            "a@b.c\n",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    /// The local part is kept byte for byte (mailboxes may be case
    /// sensitive); only the domain is lower-cased.
    #[test]
    fn the_local_part_is_kept_exactly() {
        for (given, kept) in [
            ("ABC@Example.COM", "ABC@example.com"),
            ("Zoë@Example.com", "Zoë@example.com"),
            ("Ä@B.CN", "Ä@b.cn"),
        ] {
            assert_eq!(Email::parse(given).unwrap().as_str(), kept);
        }
    }

    /// 254 bytes in all and 64 in the local part are allowed, one more not.
    #[test]
    fn email_length_limits_hold_at_their_boundaries() {
        let address = |local: usize, domain: usize| {
            format!("{}@{}.cn", "a".repeat(local), "b".repeat(domain - 3))
        };
        assert_eq!(address(64, 189).len(), 254);
        assert!(Email::parse(&address(64, 189)).is_ok());
        assert!(Email::parse(&address(64, 190)).is_err());
        assert!(Email::parse(&address(1, 252)).is_ok());
        assert!(Email::parse(&address(1, 253)).is_err());
        assert!(Email::parse(&address(65, 10)).is_err());
    }

    /// The first 8 characters after `F` are the creation time (40 bits of
    /// ms, most significant first), so numbers sort by time; the other 8 are
    /// 40 random bits, so numbers made in the same millisecond differ.
    #[test]
    fn order_numbers_are_time_then_random_bits() {
        let decode = |s: &str| {
            s.bytes().fold(0u64, |v, c| {
                v << 5 | CROCKFORD.iter().position(|&d| d == c).unwrap() as u64
            })
        };
        for ms in [0, 1, 1_099_511_627_775, 1_700_000_000_000] {
            let no = OrderNo::generate(ms);
            assert_eq!(decode(&no.as_str()[1..9]), ms as u64 & ((1 << 40) - 1));
        }
        let earlier = OrderNo::generate(1_000_000);
        assert!(earlier.as_str() < OrderNo::generate(1_000_001).as_str());
        // 1000 numbers in one millisecond: no two alike (a collision among
        // 40 random bits is a one in two million event), and every random
        // character takes many values.
        let tails: Vec<u64> = (0..1000)
            .map(|_| decode(&OrderNo::generate(5).as_str()[9..]))
            .collect();
        let distinct: std::collections::HashSet<&u64> = tails.iter().collect();
        assert_eq!(distinct.len(), tails.len());
        for shift in (0..40).step_by(5) {
            let values: std::collections::HashSet<u64> =
                tails.iter().map(|t| t >> shift & 31).collect();
            assert!(values.len() > 20, "bits {shift}.. took {values:?}");
        }
    }

    #[test]
    fn printable_drops_control_characters_and_marks_a_cut() {
        assert_eq!(printable("abc", 3), "abc");
        assert_eq!(printable("abcd", 3), "abc…");
        assert_eq!(printable("a\u{0}b\nc", 40), "abc");
    }

    #[test]
    fn gateways_round_trip_their_names() {
        for g in [
            Gateway::Manual,
            Gateway::Hmac,
            Gateway::Epay,
            Gateway::Alipay,
            Gateway::Wechat,
            Gateway::Stripe,
        ] {
            assert_eq!(Gateway::parse(g.as_str()).unwrap(), g);
        }
        assert!(Gateway::parse("paypal").is_err());
    }

    #[test]
    fn generated_order_numbers_parse_and_differ() {
        let a = OrderNo::generate(1_700_000_000_000);
        let b = OrderNo::generate(1_700_000_000_000);
        assert!(OrderNo::parse(a.as_str()).is_ok());
        assert_ne!(a, b);
        assert!(OrderNo::parse("F123").is_err());
        assert!(OrderNo::parse("FIIIIIIIIIIIIIIII").is_err());
    }
}
