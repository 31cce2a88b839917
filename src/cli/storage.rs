//! `mirror storage migrate --to CLUSTER.toml`: a single node's store copied
//! into a cluster's database and bucket (`Store::migrate_to`), with the
//! refusals that keep it safe: never onto itself, never from a data dir a
//! server is running on. Prints the comparison; exits non-zero unless every
//! blob and row made it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytesize::ByteSize;
use clap::Subcommand;

use super::migrate_progress::Progress;
use super::{DataDirArgs, load_config};
use crate::config::{Config, StorageBackend};
use crate::store::{MigrateOptions, MigrateReport, Store};

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Copy this node's index and blobs (SQLite and files) into the store a cluster
    /// config names ([index] url, [storage]): verified, resumable. Stop the node first.
    Migrate {
        /// The source: this node's config (its data_dir).
        #[command(flatten)]
        location: DataDirArgs,
        /// The target: a config with [index] url and [storage], as the replicas will use.
        #[arg(long, value_name = "CONFIG")]
        to: PathBuf,
        /// List what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stop after copying this many blobs (a migration in slices; run again to go on).
        #[arg(long, value_name = "BLOBS")]
        limit: Option<u64>,
    },
}

pub fn run(command: StorageCommand) -> anyhow::Result<()> {
    match command {
        StorageCommand::Migrate {
            location,
            to,
            dry_run,
            limit,
        } => {
            let source = location.load()?;
            let (target, _) = load_config(Some(&to))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let options = MigrateOptions {
                dry_run,
                blob_limit: limit,
            };
            runtime.block_on(migrate(&source, &target, &to, options))
        }
    }
}

/// The directory as the file system names it, so two spellings compare equal.
fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_owned())
}

/// Refuses a source that is no single node, and a target that shares the
/// source's index or blobs (copying a store onto itself).
fn check_pair(source: &Config, target: &Config, to: &Path) -> anyhow::Result<()> {
    if source.index.is_shared() {
        anyhow::bail!(
            "the source config has [index] url: it is a cluster already; \
             migrate copies a single node (SQLite and files in its data_dir)"
        );
    }
    let same_dir = canonical(&source.data_dir) == canonical(&target.data_dir);
    if same_dir && !target.index.is_shared() {
        anyhow::bail!(
            "{} keeps its index in the source's data_dir {}: the target is the source",
            to.display(),
            source.data_dir.display()
        );
    }
    if same_dir && target.storage.backend == StorageBackend::Fs {
        anyhow::bail!(
            "{} keeps its blobs in the source's data_dir {}: the target is the source",
            to.display(),
            source.data_dir.display()
        );
    }
    Ok(())
}

async fn migrate(
    source: &Config,
    target: &Config,
    to: &Path,
    options: MigrateOptions,
) -> anyhow::Result<()> {
    check_pair(source, target, to)?;
    let from = Store::open_existing(&source.data_dir).await?;
    // Held to the end: no server starts on the source while it is copied.
    let _lock = match from.lock_exclusive() {
        Ok(lock) => Some(lock),
        // A dry run writes nothing; a live node only makes its list approximate.
        Err(_) if options.dry_run => None,
        Err(_) => anyhow::bail!(
            "{} is in use by a running mirror: stop `mirror serve` on it first \
             (its writes after the copy would be lost)",
            source.data_dir.display()
        ),
    };
    let storage = target
        .storage
        .storage(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let into = Store::open_with(&target.data_dir, &storage, &target.index.choice())
        .await
        .with_context(|| format!("opening the target store of {}", to.display()))?;
    let progress = Progress::new(options.dry_run);
    let report = from.migrate_to(&into, options, &progress).await;
    progress.finish();
    into.close().await;
    from.close().await;
    let report = report.context("migrating")?;
    print_report(&report, options);
    outcome(&report, options)
}

fn print_report(report: &MigrateReport, options: MigrateOptions) {
    println!(
        "blobs: {} in the source ({}): {} copied ({}), {} already in the target{}{}{}",
        report.blobs,
        ByteSize::b(report.bytes),
        report.copied,
        ByteSize::b(report.copied_bytes),
        report.present,
        if options.dry_run {
            format!(", {} would be copied", report.would_copy)
        } else {
            String::new()
        },
        count_of(", {} corrupt", report.corrupt.len()),
        count_of(", {} missing", report.missing.len()),
    );
    for digest in &report.corrupt {
        println!("corrupt in the source, not copied: {digest}");
    }
    for digest in &report.missing {
        println!("indexed but its file is gone, not copied: {digest}");
    }
    if report.stopped {
        println!(
            "stopped after {} blobs (--limit): no rows copied yet; run again to go on",
            report.copied
        );
        return;
    }
    println!(
        "{:<20} {:>10} {:>10} {:>10}",
        "rows", "source", "target", "left"
    );
    for table in &report.tables {
        let verdict = match (options.dry_run, table.verified()) {
            (true, _) => "",
            (false, true) => "ok",
            (false, false) => "MISSING",
        };
        println!(
            "{:<20} {:>10} {:>10} {:>10} {verdict}",
            table.table, table.source, table.target, table.skipped
        );
    }
    for table in report.tables.iter().filter(|table| !table.verified()) {
        println!(
            "{}: {} rows not in the target, {} held otherwise there (an audit id another row took?): {}",
            table.table,
            table.lacking,
            table.differing,
            table.named.join(", ")
        );
    }
    println!(
        "upload sessions in progress: {} (not migrated: their bytes stay in this data_dir; \
         clients restart those pushes on the cluster)",
        report.uploads_left
    );
}

fn count_of(template: &str, n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        template.replace("{}", &n.to_string())
    }
}

fn outcome(report: &MigrateReport, options: MigrateOptions) -> anyhow::Result<()> {
    let bad = report.corrupt.len() + report.missing.len();
    if options.dry_run {
        println!("dry run: nothing written");
        if bad > 0 {
            anyhow::bail!("{bad} source blobs cannot be migrated");
        }
        return Ok(());
    }
    if report.stopped {
        anyhow::bail!("incomplete: stopped at --limit");
    }
    if report.is_complete() {
        println!("verified: the target holds every blob and row of the source");
        return Ok(());
    }
    if bad > 0 {
        anyhow::bail!(
            "{bad} source blobs (and the rows naming them) were not migrated; \
             everything else is verified in the target"
        );
    }
    anyhow::bail!("the target lacks rows the source has (see above); run again")
}
