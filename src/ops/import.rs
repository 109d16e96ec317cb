//! `faka import --product ID FILE`: keys from a file, in chunks, with a
//! progress bar on a terminal (quiet in scripts). If the shop is running it
//! owns the data directory, so the keys go through its admin API; otherwise
//! the store is opened directly.

use crate::config::Config;
use crate::domain::ids::ProductId;
use crate::domain::shop;
use crate::http::keys::{parse_upload, seal_keys};
use crate::startup;
use crate::store::Store;
use anyhow::{bail, Context};
use std::io::{IsTerminal, Read};
use std::path::Path;

const CHUNK: usize = crate::http::keys::IMPORT_CHUNK;

fn read_keys(file: &Path) -> anyhow::Result<Vec<String>> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    parse_upload("text/plain", &bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

fn progress(total: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

pub fn run(cfg: &Config, product: &str, file: &Path, token: Option<String>) -> anyhow::Result<()> {
    let pid = ProductId::parse(product).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !cfg.storage.data_dir.exists() {
        bail!(
            "no shop data at {}: start `faka serve` once first",
            cfg.storage.data_dir.display()
        );
    }
    let keys = read_keys(file)?;
    let total = keys.len();
    let bar = progress(total);
    let (added, duplicates) = match crate::store::recovery::lock_data_dir(&cfg.storage.data_dir) {
        Ok(lock) => {
            drop(lock);
            import_direct(cfg, &pid, keys, &bar)?
        }
        Err(_) => import_via_api(cfg, &pid, keys, token, &bar)?,
    };
    bar.finish_and_clear();
    println!("{added} keys added, {duplicates} duplicates skipped (of {total} in the file)");
    Ok(())
}

fn import_direct(
    cfg: &Config,
    pid: &ProductId,
    keys: Vec<String>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let (crypto, _) = startup::load_crypto(cfg)?;
    let store = Store::open(&startup::store_options(cfg))?;
    if let Err(e) = startup::verify_master_key(&store, &crypto, cfg) {
        store.close();
        return Err(e.into());
    }
    if store.product(pid.as_str())?.is_none() {
        store.close();
        bail!("product {pid} does not exist");
    }
    let (mut added, mut duplicates) = (0, 0);
    for chunk in keys.chunks(CHUNK) {
        let sealed = seal_keys(&crypto, pid.as_str(), chunk.to_vec());
        let id = pid.as_str().to_string();
        let r = store.write_blocking(move |tx| shop::import_keys(tx, &id, sealed))?;
        added += r.added;
        duplicates += r.duplicates;
        bar.inc(chunk.len() as u64);
    }
    store.close();
    Ok((added, duplicates))
}

fn import_via_api(
    cfg: &Config,
    pid: &ProductId,
    keys: Vec<String>,
    token: Option<String>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let token = token
        .or_else(|| cfg.admin.token.clone())
        .filter(|t| !t.is_empty())
        .context("the shop is running: pass its admin token with --token (or FAKA_IMPORT_TOKEN)")?;
    let base = std::fs::read_to_string(cfg.storage.data_dir.join(startup::ADDR_FILE))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            format!(
                "http://{}",
                cfg.server.listen.replace("0.0.0.0", "127.0.0.1")
            )
        });
    let url = format!("{base}/api/v1/admin/products/{pid}/keys");
    let agent = ureq::AgentBuilder::new().build();
    let (mut added, mut duplicates) = (0, 0);
    for chunk in keys.chunks(CHUNK) {
        let resp = agent
            .post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "text/plain")
            .send_string(&chunk.join("\n"));
        let v: serde_json::Value = match resp {
            Ok(r) => serde_json::from_str(&r.into_string()?)?,
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "the shop answered {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => bail!("could not reach the shop at {url}: {e}"),
        };
        added += v["added"].as_u64().unwrap_or(0);
        duplicates += v["duplicates"].as_u64().unwrap_or(0);
        bar.inc(chunk.len() as u64);
    }
    Ok((added, duplicates))
}
