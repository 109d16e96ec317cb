//! Secrets at rest and in flight: sealing card keys, keyed hashes for
//! de-duplication, buyer tokens, constant-time comparison.
//!
//! Card-key text is sealed with XChaCha20-Poly1305 under the shop's master
//! key, which lives outside the data directory (`[storage] key_file`), so a
//! copied or leaked data directory or backup reveals no key text. Import
//! de-duplication uses an HMAC of the key text under a key derived from the
//! master key, never the plaintext.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The shop's master key and the keys derived from it.
pub struct Crypto {
    aead: XChaCha20Poly1305,
    dedupe_key: [u8; 32],
    check_value: [u8; 32],
    /// What buyers' order tokens are derived from, with the shop's salt
    /// ([`OrderTokens`]).
    token_base: [u8; 32],
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(<secret>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("sealed value does not open with this master key (wrong key file, or damaged data)")]
    Open,
}

impl Crypto {
    pub fn from_master(master: &[u8; 32]) -> Self {
        Crypto {
            aead: XChaCha20Poly1305::new(master.into()),
            dedupe_key: derive(master, b"faka/dedupe/v1"),
            check_value: derive(master, b"faka/key-check/v1"),
            token_base: derive(master, b"faka/order-token/v1"),
        }
    }

    /// A value that identifies the master key without revealing it: the
    /// shop stores it when it is created and refuses another key at start
    /// (a wrong key would seal new keys unreadably beside the old ones and
    /// miss every duplicate on import).
    pub fn check_value(&self) -> [u8; 32] {
        self.check_value
    }

    /// Whether `stored` is this key's [`Crypto::check_value`] (constant time).
    pub fn matches_check_value(&self, stored: &[u8]) -> bool {
        bool::from(self.check_value.ct_eq(stored))
    }

    /// Loads the master key (64 hex characters) from `path`, creating it with
    /// mode 0600 on first start.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        if path.exists() {
            let text = fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            return Ok((Self::from_hex(text.trim()).map_err(err)?, false));
        }
        let mut master = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut master);
        let dir = key_dir(path);
        fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
        f.write_all(format!("{}\n", hex::encode(master)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        // The file's name too: a power cut must not keep the shop's first
        // keys sealed under a key file that is gone.
        crate::store::journal::sync_dir(dir).map_err(|e| err(e.to_string()))?;
        Ok((Self::from_master(&master), true))
    }

    /// Parses a master key given as 64 hex characters (file or environment).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|_| "must be 64 hex characters".to_string())?;
        let master: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be 64 hex characters".to_string())?;
        Ok(Self::from_master(&master))
    }

    /// Seals `plain`, binding it to `context` (e.g. the product id).
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 24 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed.split_at(24);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| CryptoError::Open)
    }

    /// A keyed, non-reversible fingerprint of a card key within a product.
    pub fn key_fingerprint(&self, product_id: &str, key_text: &str) -> [u8; 16] {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.dedupe_key).expect("any key length");
        mac.update(product_id.as_bytes());
        mac.update(&[0]);
        mac.update(key_text.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// The directory that holds the key file: its parent, or the working
/// directory for a bare name like the default `faka.key` (whose parent is
/// the empty path, which cannot be opened to sync).
fn key_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A fresh buyer token: 192 random bits, URL-safe.
pub fn new_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What an order's token was sealed for by shops before [`OrderTokens`]:
/// the link in its e-mails, kept in the `order_links` tree (still read for
/// orders made then; nothing writes it any more).
pub const ORDER_LINK_CONTEXT: &[u8] = b"faka/order-link/v1";

/// Buyers' order tokens: HMAC-SHA256 of the order number under a key
/// derived from the master key and the shop's own random salt (kept in its
/// store), cut to 192 bits, URL-safe. The store keeps only each token's
/// hash, as before; the e-mail senders make the token again for the
/// order's link, so no order needs a row to remember it. Neither the
/// master key alone nor a copy of the data directory alone gives a token:
/// it takes both, the same as opening a sealed card key.
#[derive(Clone)]
pub struct OrderTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for OrderTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderTokens(<secret>)")
    }
}

impl OrderTokens {
    /// The tokens of the shop whose salt is `salt`.
    pub fn new(crypto: &Crypto, salt: &[u8]) -> Self {
        OrderTokens {
            key: derive(&crypto.token_base, salt),
        }
    }

    /// Order `order_no`'s token.
    pub fn token(&self, order_no: &str) -> String {
        use base64::Engine;
        let mac = derive(&self.key, order_no.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..24])
    }
}

/// A new shop's salt for [`OrderTokens`].
pub fn new_salt() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// An argon2id PHC string of `secret`: slow and salted, for what a buyer
/// or the merchant types (the admin token, an order's query password). Call
/// it off the async workers.
pub fn slow_hash(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `secret` is the one `phc` ([`slow_hash`]) was made from; a PHC
/// string that does not parse matches nothing. Slow: off the async workers.
pub fn slow_verify(secret: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings (length may leak, content not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Lowercase hex HMAC-SHA256 of `parts` joined without separators.
pub fn hmac_sha256_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Masks a card key for listings: first and last four characters of keys
/// longer than twelve characters, fewer for short keys, never the whole key.
pub fn mask_key(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let show = match chars.len() {
        0..=4 => 0,
        5..=8 => 1,
        9..=12 => 2,
        _ => 4,
    };
    let head: String = chars[..show].iter().collect();
    let tail: String = chars[chars.len() - show..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An order's token is the same every time it is made (the e-mail's
    /// link is the one the buyer got), and another order, another shop's
    /// salt or another master key gives another token; 192 bits, URL-safe.
    #[test]
    fn order_tokens_are_stable_and_need_both_the_key_and_the_salt() {
        let (a, b) = (Crypto::from_master(&[1; 32]), Crypto::from_master(&[2; 32]));
        let shop = OrderTokens::new(&a, &[7; 32]);
        let t = shop.token("FK20261207000001");
        assert_eq!(t, OrderTokens::new(&a, &[7; 32]).token("FK20261207000001"));
        assert_eq!(t.len(), 32);
        assert!(t
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let others = [
            shop.token("FK20261207000002"),
            OrderTokens::new(&a, &[8; 32]).token("FK20261207000001"),
            OrderTokens::new(&b, &[7; 32]).token("FK20261207000001"),
        ];
        for o in others {
            assert_ne!(o, t);
        }
        assert_eq!(format!("{shop:?}"), "OrderTokens(<secret>)");
    }

    /// Each shop draws its own salt: two are never the same, and over a
    /// hundred every byte position takes many values.
    #[test]
    fn every_shop_draws_its_own_salt() {
        let salts: Vec<[u8; 32]> = (0..100).map(|_| new_salt()).collect();
        let distinct: std::collections::HashSet<&[u8; 32]> = salts.iter().collect();
        assert_eq!(distinct.len(), salts.len());
        for i in 0..32 {
            let values: std::collections::HashSet<u8> = salts.iter().map(|s| s[i]).collect();
            assert!(values.len() > 30, "byte {i} took {} values", values.len());
        }
    }

    /// The check value binds a store to its key: each key matches its own
    /// value only, and the value is not the key.
    #[test]
    fn a_key_matches_its_own_check_value_only() {
        let (a, b) = (Crypto::from_master(&[1; 32]), Crypto::from_master(&[2; 32]));
        assert!(a.matches_check_value(&a.check_value()));
        assert!(!a.matches_check_value(&b.check_value()));
        assert!(!b.matches_check_value(&a.check_value()));
        assert!(!a.matches_check_value(&a.check_value()[..31]));
        assert!(!a.matches_check_value(&[]));
        assert_ne!(a.check_value(), [1; 32]);
        assert_ne!(a.check_value(), [0; 32]);
        assert_eq!(a.check_value(), Crypto::from_master(&[1; 32]).check_value());
    }

    #[test]
    fn sealed_keys_open_only_with_their_context_and_key() {
        let c = Crypto::from_master(&[7; 32]);
        let s = c.seal(b"KEY-123", b"steam");
        assert_eq!(c.open(&s, b"steam").unwrap(), b"KEY-123");
        assert!(c.open(&s, b"other").is_err());
        assert!(Crypto::from_master(&[8; 32]).open(&s, b"steam").is_err());
        assert!(!s.windows(7).any(|w| w == b"KEY-123"));
    }

    #[test]
    fn fingerprints_depend_on_product_and_master_key() {
        let c = Crypto::from_master(&[1; 32]);
        assert_eq!(c.key_fingerprint("p", "k"), c.key_fingerprint("p", "k"));
        assert_ne!(c.key_fingerprint("p", "k"), c.key_fingerprint("q", "k"));
        assert_ne!(
            c.key_fingerprint("p", "k"),
            Crypto::from_master(&[2; 32]).key_fingerprint("p", "k")
        );
    }

    #[test]
    fn masks_never_show_the_whole_key() {
        assert_eq!(mask_key("ABCD-EFGH-IJKL-WXYZ"), "ABCD****WXYZ");
        assert_eq!(mask_key("abc"), "****");
        assert_eq!(mask_key("abcdef"), "a****f");
        assert_eq!(
            mask_key("卡密卡密卡密卡密卡密卡密卡密"),
            "卡密卡密****卡密卡密"
        );
    }

    /// Each length band shows exactly its number of characters at each end:
    /// a 9-character key shows two and two, never eight of its nine.
    #[test]
    fn masks_show_fewer_characters_of_shorter_keys() {
        for (key, masked) in [
            ("", "****"),
            ("ABCD", "****"),
            ("ABCDE", "A****E"),
            ("ABCDEFGH", "A****H"),
            ("ABCDEFGHI", "AB****HI"),
            ("ABCDEFGHIJKL", "AB****KL"),
            ("ABCDEFGHIJKLM", "ABCD****JKLM"),
            ("卡密卡密卡", "卡****卡"),
        ] {
            assert_eq!(mask_key(key), masked, "{key}");
        }
    }

    /// Buyer tokens and the admin token are stored as SHA-256: the standard
    /// digest, so a stored hash matches the token a client presents.
    #[test]
    fn sha256_is_the_standard_digest() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Logging the shop's state never prints the master key.
    #[test]
    fn debug_output_hides_the_master_key() {
        let c = Crypto::from_master(&[0xab; 32]);
        assert_eq!(format!("{c:?}"), "Crypto(<secret>)");
    }

    /// A damaged sealed value of any short length is an error, not a panic.
    #[test]
    fn short_sealed_values_do_not_open() {
        let c = Crypto::from_master(&[7; 32]);
        let sealed = c.seal(b"KEY-123", b"steam");
        for n in 0..sealed.len() {
            assert!(
                matches!(c.open(&sealed[..n], b"steam"), Err(CryptoError::Open)),
                "{n} bytes"
            );
        }
    }

    /// The default `key_file = "faka.key"` is a bare name: its directory is
    /// the working directory, which is where it is created and synced.
    #[test]
    fn a_bare_key_file_lives_in_the_working_directory() {
        assert_eq!(key_dir(Path::new("faka.key")), Path::new("."));
        assert_eq!(key_dir(Path::new("keys/faka.key")), Path::new("keys"));
        assert_eq!(
            key_dir(Path::new("/etc/faka/faka.key")),
            Path::new("/etc/faka")
        );
    }

    /// A key file in a directory that does not exist yet gets the directory.
    #[test]
    fn the_key_files_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/faka/faka.key");
        let (a, created) = Crypto::load_or_create(&path).unwrap();
        assert!(created);
        let (b, _) = Crypto::load_or_create(&path).unwrap();
        assert_eq!(b.open(&a.seal(b"x", b""), b"").unwrap(), b"x");
    }

    #[test]
    fn master_key_file_is_created_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faka.key");
        let (a, created) = Crypto::load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = Crypto::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(b.open(&a.seal(b"x", b""), b"").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A query password's hash is argon2id, salted (two hashes of one
    /// password differ), and verifies that password only; a PHC string
    /// that does not parse matches nothing.
    #[test]
    fn slow_hashes_are_salted_argon2id_and_verify_only_their_secret() {
        let a = slow_hash("pass-word").unwrap();
        let b = slow_hash("pass-word").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b);
        assert!(slow_verify("pass-word", &a) && slow_verify("pass-word", &b));
        assert!(!slow_verify("pass-wore", &a));
        assert!(!slow_verify("", &a));
        assert!(!slow_verify("pass-word", "not a phc string"));
        assert!(!slow_verify("pass-word", ""));
    }

    #[test]
    fn tokens_carry_at_least_128_bits() {
        use base64::Engine;
        let decode = |t: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .unwrap()
        };
        // 24 bytes each (192 bits), URL-safe; over a thousand tokens every
        // byte position takes many values (a counter or a constant would
        // not), and no two tokens are equal: random ones, and order tokens
        // of consecutive order numbers.
        let shop = OrderTokens::new(&Crypto::from_master(&[5; 32]), &new_salt());
        let kinds: [Vec<Vec<u8>>; 2] = [
            (0..1000).map(|_| decode(&new_token())).collect(),
            (0..1000)
                .map(|i| decode(&shop.token(&format!("FK20261207{i:06}"))))
                .collect(),
        ];
        for tokens in kinds {
            assert!(tokens.iter().all(|t| t.len() == 24));
            for i in 0..24 {
                let values: std::collections::HashSet<u8> = tokens.iter().map(|t| t[i]).collect();
                assert!(values.len() > 200, "byte {i} took {} values", values.len());
            }
            let distinct: std::collections::HashSet<&Vec<u8>> = tokens.iter().collect();
            assert_eq!(distinct.len(), tokens.len());
        }
    }
}
