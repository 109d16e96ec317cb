//! `faka import --product ID FILE`: keys from a file, one per line, as one
//! upload (all of them or none, see `ops::upload`), with a progress bar on a
//! terminal (quiet in scripts). If the shop is running it owns the data
//! directory, so the file goes to its admin API in one request; otherwise
//! the store is opened directly.

use crate::config::Config;
use crate::domain::ids::ProductId;
use crate::ops::upload;
use crate::shop::key_parse::{self, Checked, Format};
use crate::startup;
use crate::store::Store;
use anyhow::{bail, Context};
use std::io::{IsTerminal, Read};
use std::path::Path;

/// The file's bytes, checked as an upload is.
fn read_keys(file: &Path) -> anyhow::Result<(Vec<u8>, Checked)> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let checked = key_parse::check(Format::Text, &bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((bytes, checked))
}

fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
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
    let (keys, checked) = read_keys(file)?;
    let total = checked.total();
    let bar = progress(total);
    let (added, duplicates) = match crate::store::recovery::lock_data_dir(&cfg.storage.data_dir) {
        Ok(lock) => {
            drop(lock);
            import_direct(cfg, &pid, keys, checked, &bar)?
        }
        Err(_) => import_via_api(cfg, &pid, keys, token)?,
    };
    bar.finish_and_clear();
    println!("{added} keys added, {duplicates} duplicates skipped (of {total} in the file)");
    Ok(())
}

/// Keys handed to the bar in steps of this many (sealed, not yet stored).
const BAR_STEP: u64 = 1000;

fn import_direct(
    cfg: &Config,
    pid: &ProductId,
    keys: Vec<u8>,
    checked: Checked,
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
    let mut seen = 0u64;
    let total = checked.total();
    let result = upload::import(&store, &crypto, pid.as_str(), total, move |each| {
        checked.for_each_key(&keys, &mut |k| {
            seen += 1;
            if seen.is_multiple_of(BAR_STEP) {
                bar.inc(BAR_STEP);
            }
            each(k)
        })
    });
    store.close();
    let r = result?;
    Ok((r.added, r.duplicates))
}

/// Sends the whole file as one upload: the shop stores all of it or none.
fn import_via_api(
    cfg: &Config,
    pid: &ProductId,
    keys: Vec<u8>,
    token: Option<String>,
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
    let resp = ureq::AgentBuilder::new()
        .build()
        .post(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "text/plain")
        .send_bytes(&keys);
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
    Ok((
        v["added"].as_u64().unwrap_or(0),
        v["duplicates"].as_u64().unwrap_or(0),
    ))
}
