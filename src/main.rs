//! The `faka` command: serve the shop, check its store, and the merchant's
//! maintenance commands.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use faka::config::Config;
use faka::startup;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "faka",
    version,
    about = "An automatic card-key shop (发卡网) in one binary.\n\nImport card keys, sell them through payment gateways, deliver them the moment a signed payment arrives."
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
    /// Check the store's invariants; exits non-zero and lists every violation.
    Check,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let default = cli.config.as_os_str() == "config.toml";
    Ok(Config::load(&cli.config, default, std::env::vars())?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    faka::telemetry::init(&cfg.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg),
        Command::Check => check(cfg),
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = startup::Application::build(cfg).context("starting faka")?;
        if let Some(token) = &app.generated_admin_token {
            // Printed once, on purpose, to the terminal only: it is never logged.
            println!("\n  faka generated an admin token (it is stored only as a hash; keep it now):\n\n    {token}\n");
        }
        if app.created_key_file {
            println!("  faka created a new master key file; back it up apart from the data directory.\n");
        }
        app.run_until_stopped().await.context("serving")?;
        Ok(())
    })
}

fn check(cfg: Config) -> anyhow::Result<()> {
    let store = faka::store::Store::open(&startup::store_options(&cfg))?;
    let report = faka::ops::check::run(&store)?;
    store.close();
    print!("{report}");
    if !report.ok() {
        bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}
