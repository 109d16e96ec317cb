//! The generated admin token's storage: when no token is configured, the
//! first start makes one, shows it once, and keeps only its argon2 hash in
//! the data dir (mode 0600), where the API's admin auth checks against it,
//! backups copy it and the CLI rotates it (`faka admin-token --rotate`).

use std::path::Path;

/// The hash's file in the data dir.
pub const HASH_FILE: &str = "admin_token.argon2";

/// Hashes a token for storage.
pub fn hash_token(token: &str) -> Result<String, String> {
    crate::crypto::slow_hash(token)
}

/// Writes the hash of a new admin token into the data dir (mode 0600).
pub fn store_token_hash(data_dir: &Path, token: &str) -> std::io::Result<()> {
    let hash = hash_token(token).map_err(std::io::Error::other)?;
    let path = data_dir.join(HASH_FILE);
    let tmp = data_dir.join(format!("{HASH_FILE}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    std::io::Write::write_all(&mut f, hash.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    crate::store::journal::sync_dir(data_dir)
}
