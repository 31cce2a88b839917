//! The command line. Thin: parses arguments, calls the library, prints results;
//! anyhow lives here and at startup only. Every config it loads is checked as a
//! start would check it (`instance::check_settings`). The subcommands:
//! - `serve`;
//! - `pki init | issue-server | issue-client | list | revoke | inspect`;
//! - `audit`;
//! - `cache stats | gc | prefetch | verify`;
//! - `storage migrate` (a single node into a cluster's database and bucket);
//! - `forward` (the client-side relay for go, `crate::forward`).

mod audit;
mod cache;
mod forward;
mod migrate_progress;
mod pki;
mod storage;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::instance::{Mirror, StartOptions, check_settings};

#[derive(Parser)]
#[command(
    name = "mirror",
    version,
    about = "A mutually authenticated caching mirror for Go modules and container images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (config: --config, else /etc/mirror/mirror.toml if it exists,
    /// else defaults with a PKI in ./mirror-data).
    Serve(ServeArgs),
    /// Create the CA and issue, list, revoke and inspect certificates.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Who read or wrote what: query the audit trail (newest first).
    Audit(audit::AuditArgs),
    /// Inspect and maintain the store: stats, gc, prefetch, verify.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Move the store: `migrate` copies this node into a cluster's database and bucket.
    Storage {
        #[command(subcommand)]
        command: storage::StorageCommand,
    },
    /// Relay plain HTTP on loopback to the mirror with a certs.d client certificate (for go).
    Forward(forward::ForwardArgs),
}

/// Where a command finds the data dir: `--config` (its `data_dir`), or
/// `--data-dir`, which wins as it does for `serve`.
#[derive(clap::Args)]
pub(crate) struct DataDirArgs {
    /// TOML config file [default: /etc/mirror/mirror.toml if it exists].
    #[arg(long, short, env = "MIRROR_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    /// The config (named, the system's, or the defaults), with `--data-dir` applied.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let (mut config, _) = load_config(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// The store a command works on: the config's `[index]` and `[storage]` (a
/// cluster's database and bucket), else the data dir's own, which must exist.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<crate::store::Store> {
    let storage = config
        .storage
        .storage(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let index = config.index.choice();
    let opened = crate::store::Store::open_existing_with(&config.data_dir, &storage, &index).await;
    if config.index.is_shared() {
        // The URL may hold a password: named by its key only.
        opened.context("opening the shared index (index.url)")
    } else {
        Ok(opened?)
    }
}

/// The config a service reads when no `--config` is given, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/mirror/mirror.toml";

/// Replaces `SYSTEM_CONFIG`, so tests need not touch /etc; not for operators.
const SYSTEM_CONFIG_ENV: &str = "MIRROR_SYSTEM_CONFIG";

/// `--config`, else the system config if that file exists, else the defaults;
/// with the path that was read.
fn load_config(explicit: Option<&Path>) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => {
            let system = std::env::var_os(SYSTEM_CONFIG_ENV)
                .map_or_else(|| PathBuf::from(SYSTEM_CONFIG), PathBuf::from);
            system.is_file().then_some(system)
        }
    };
    match path {
        Some(path) => {
            let config = Config::load(&path)?;
            // The file's name first, as for the checks `Config` makes itself.
            check_settings(&config).with_context(|| path.display().to_string())?;
            Ok((config, Some(path)))
        }
        None => Ok((Config::default(), None)),
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file [default: /etc/mirror/mirror.toml if it exists].
    #[arg(long, short, env = "MIRROR_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Pki { command } => pki::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Cache { command } => cache::run(command),
        Command::Forward(args) => forward::run(args),
        Command::Storage { command } => storage::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, source) = load_config(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    init_logging(&config)?;
    match &source {
        Some(path) => tracing::info!(config = %path.display(), "configuration read"),
        None => tracing::info!(
            "no --config and no {SYSTEM_CONFIG}: built-in defaults (README, Configuration)"
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mirror")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = termination()?;
        let mirror = Mirror::start(
            config,
            None,
            StartOptions {
                sighup: true,
                shared: false,
            },
        )
        .await?;
        if let Some(message) = &mirror.first_run_message {
            eprintln!("{message}\n");
        }
        eprintln!("mirror listening on https://{}", mirror.addr());
        mirror.serve_until(stop).await;
        Ok(())
    })
}

/// SIGINT or SIGTERM, listened for from the moment this is called (before the
/// port opens), so a signal that arrives at once is never missed.
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(value).context("RUST_LOG")?,
        _ => EnvFilter::try_new(&config.log.level).context("log.level")?,
    };
    // Colour only for a person watching a terminal; a file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}
