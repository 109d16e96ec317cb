//! The `faka` command: serve the shop, check and back up its store, and the
//! merchant's maintenance commands.

use anyhow::{bail, Context};

/// sled allocates and frees a node copy on most writes; glibc malloc spends a
/// large share of the commit thread's time on that (perf: `_int_malloc`,
/// `malloc_consolidate`), mimalloc much less (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use faka::config::Config;
use faka::startup;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "faka",
    version,
    about = "An automatic card-key shop (发卡网) in one binary.",
    long_about = "An automatic card-key shop (发卡网) in one binary.\n\n\
        Import card keys, sell them through payment gateways, and deliver them the moment a \
        signed payment arrives. Everything is kept in the data directory named in the config \
        file; the master key that encrypts card keys is kept beside the config (faka.key).\n\n\
        Start with `faka serve` (the default), then follow README.md."
)]
struct Cli {
    /// Config file (TOML). FAKA_<SECTION>_<KEY> environment variables override it.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the shop (the default when no command is given).
    Serve,
    /// Check the store: the journal end to end, the invariants (every key in
    /// one state with one owner, counts that add up) and the master key.
    /// Exits non-zero with a report of every problem. Changes nothing: it
    /// checks a copy made in the scratch directory. Run it while the shop is
    /// stopped (it needs the data directory to itself).
    Check {
        /// Where to copy the store while checking it (needs room for it).
        #[arg(long, env = "TMPDIR", default_value = "/tmp")]
        scratch: PathBuf,
    },
    /// Set aside a damaged part of the store that `faka serve` refuses, and
    /// serve what comes before it. Renames (never deletes) every file it sets
    /// aside and reports every batch and order it drops. Restoring the newest
    /// backup loses less: repair only when there is none.
    Repair,
    /// Write a consistent, checksummed copy of the store to OUT. Works while
    /// the shop is running. faka.key is not included: back it up separately.
    Backup {
        /// Directory to create (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a backup and restore it into a new data directory.
    Restore {
        /// The backup directory (made by `faka backup` or the backup API).
        backup: PathBuf,
        /// The data directory to create (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Import card keys for a product from a text file, one key per line.
    /// Talks to the running shop if there is one, else writes the store directly.
    Import {
        /// The product's id.
        #[arg(long)]
        product: String,
        /// The key file ("-" for standard input).
        file: PathBuf,
        /// Admin token, when the shop runs with a generated one.
        #[arg(long, env = "FAKA_IMPORT_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Manage the admin token.
    AdminToken {
        /// Replace the admin token with a new one, printed once; only its hash is kept.
        #[arg(long)]
        rotate: bool,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let default = cli.config.as_os_str() == "config.toml";
    // `std::env::vars` panics on any variable that is not UTF-8, ours or
    // not: only faka's own must be text.
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k == "FAKA_IMPORT_TOKEN" {
            continue;
        }
        match v.into_string() {
            Ok(v) => env.push((k.to_string(), v)),
            Err(_) if k.starts_with("FAKA_") => {
                anyhow::bail!("environment variable {k} is not valid UTF-8")
            }
            Err(_) => {}
        }
    }
    Ok(Config::load(&cli.config, default, env)?)
}

/// Turns transparent huge pages off for this process unless the config
/// keeps them (`storage.huge_pages`). mimalloc asks for them by default, and
/// where the kernel grants them (`madvise` or `always` in
/// /sys/kernel/mm/transparent_hugepage/enabled) a 2 MiB page stays resident
/// while any of its 4 KiB is in use, so after a scan such as the start-up
/// check much of faka's RSS was such pages, half empty (docs/BENCHMARKS.md
/// has the figures). Called before the shop or the store allocates
/// anything large.
fn huge_pages(keep: bool) {
    #[cfg(not(target_os = "linux"))]
    let _ = keep;
    #[cfg(target_os = "linux")]
    if !keep {
        // SAFETY: PR_SET_THP_DISABLE takes no pointers; it sets a flag of
        // this process. An error (an old kernel) leaves huge pages as they were.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, never a stack trace: an operator
            // with RUST_BACKTRACE=1 set reads what went wrong, not where.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    huge_pages(cfg.storage.huge_pages);
    let serving = matches!(cli.command, None | Some(Command::Serve));
    let _log = faka::telemetry::init(&cfg.log, serving);
    match cli.command {
        None | Some(Command::Serve) => serve(cfg),
        Some(Command::Check { scratch }) => check(cfg, &scratch),
        Some(Command::Repair) => repair(cfg),
        Some(Command::Backup { out }) => backup(cfg, &out),
        Some(Command::Restore { backup, data_dir }) => restore(cfg, &backup, &data_dir),
        Some(Command::Import {
            product,
            file,
            token,
        }) => faka::ops::import::run(&cfg, &product, &file, token),
        Some(Command::AdminToken { rotate }) => admin_token(cfg, rotate),
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = startup::Application::build(cfg).context("starting faka")?;
        // Opening sled and checking the store allocate and free a lot on this
        // thread, which then only waits on the server: mimalloc would keep
        // those pages (it purges on a thread's later allocations).
        // SAFETY: mi_collect takes no pointers; it only frees this thread's
        // unused pages and returns purgeable memory to the OS.
        unsafe { libmimalloc_sys::mi_collect(true) };
        if let Some(token) = &app.generated_admin_token {
            // Printed once, on purpose, to stderr (never through the logger);
            // under systemd prefer `faka admin-token --rotate` before the first start.
            eprintln!("\n  faka generated an admin token (it is stored only as a hash; keep it now):\n\n    {token}\n");
        }
        if app.created_key_file {
            eprintln!("  faka created a new master key file; back it up apart from the data directory.\n");
        }
        app.run_until_stopped().await.context("serving")?;
        Ok(())
    })
}

fn check(cfg: Config, scratch: &Path) -> anyhow::Result<()> {
    require_a_shop(&cfg)?;
    let checked = faka::ops::offline::check(&cfg, scratch)?;
    print!("{}", checked.text);
    if !checked.ok {
        bail!("the store is not sound (see above)");
    }
    Ok(())
}

fn repair(cfg: Config) -> anyhow::Result<()> {
    require_a_shop(&cfg)?;
    print!("{}", faka::ops::offline::repair(&cfg)?);
    Ok(())
}

/// Refuses a directory that holds no shop (a wrong `--config` or
/// `data_dir`) rather than report on an empty store.
fn require_a_shop(cfg: &Config) -> anyhow::Result<()> {
    if !faka::store::recovery::holds_a_shop(&cfg.storage.data_dir) {
        bail!(
            "{} holds no shop (no journal segment): check --config and [storage] data_dir",
            cfg.storage.data_dir.display()
        );
    }
    Ok(())
}

fn backup(cfg: Config, out: &Path) -> anyhow::Result<()> {
    let r = faka::ops::backup::backup(&cfg.storage.data_dir, out)?;
    println!(
        "backup written to {} ({} bytes, up to batch {}); keep faka.key safe separately",
        r.path.display(),
        r.bytes,
        r.last_batch
    );
    Ok(())
}

fn restore(cfg: Config, backup: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let m = faka::ops::backup::restore(backup, data_dir)?;
    let mut opts = startup::store_options(&cfg);
    opts.data_dir = data_dir.to_path_buf();
    let store = faka::store::Store::open(&opts).context("opening the restored store")?;
    let mut restored = cfg.clone();
    restored.storage.data_dir = data_dir.to_path_buf();
    let key = startup::load_crypto(&restored)
        .and_then(|(crypto, _)| startup::verify_master_key(&store, &crypto, &restored));
    if let Err(e) = key {
        store.close();
        bail!(
            "{e}\nthe backup was restored into {}, but it will not serve with this key",
            data_dir.display()
        );
    }
    let report = faka::ops::check::run(&store)?;
    store.close();
    print!("{report}");
    if !report.ok() {
        bail!("the restored store has invariant violations");
    }
    println!(
        "restored {} files (up to batch {}) into {}; point [storage] data_dir at it to serve",
        m.files.len(),
        m.last_batch,
        data_dir.display()
    );
    Ok(())
}

fn admin_token(cfg: Config, rotate: bool) -> anyhow::Result<()> {
    if !rotate {
        bail!("nothing to do: use `faka admin-token --rotate`");
    }
    if cfg.admin.token.as_deref().is_some_and(|t| !t.is_empty()) {
        bail!("the admin token is set in the config ([admin] token or FAKA_ADMIN_TOKEN): change it there");
    }
    std::fs::create_dir_all(&cfg.storage.data_dir)?;
    let token = faka::crypto::new_token();
    faka::ops::admin_token::store_token_hash(&cfg.storage.data_dir, &token)?;
    if std::io::stdout().is_terminal() {
        println!("new admin token (shown once; the old one stops working now):\n\n    {token}\n");
    } else {
        println!("{token}");
    }
    Ok(())
}
