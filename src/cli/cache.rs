//! `mirror cache …`: inspect and maintain a data dir, whether or not a server
//! is running on it.

use anyhow::Context;
use bytesize::ByteSize;
use clap::Subcommand;

use super::DataDirArgs;
use crate::config::Config;
use crate::store::{Store, SweepOptions};

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Size and counts, per protocol, and the hit ratio from the audit trail.
    Stats {
        #[command(flatten)]
        location: DataDirArgs,
        #[arg(long)]
        json: bool,
    },
    /// Repair (orphan files, rows without files, abandoned temp files) and evict
    /// least-recently-used content down to the configured size.
    Gc {
        #[command(flatten)]
        location: DataDirArgs,
        /// Evict down to this size instead of `cache.max_size` × `cache.low_water`.
        #[arg(long)]
        target: Option<ByteSize>,
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(command: CacheCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        CacheCommand::Stats { location, json } => runtime.block_on(stats(location, json)),
        CacheCommand::Gc {
            location,
            target,
            dry_run,
        } => runtime.block_on(gc(location, target, dry_run)),
    }
}

/// The config if one was named (for cache limits), else defaults.
fn config_of(location: &DataDirArgs) -> anyhow::Result<Config> {
    Ok(match &location.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

async fn gc(location: DataDirArgs, target: Option<ByteSize>, dry_run: bool) -> anyhow::Result<()> {
    let data_dir = location.resolve()?;
    let config = config_of(&location)?;
    let store = Store::open_existing(&data_dir).await?;
    // With the lock, no server is running: temp files are abandoned for sure.
    let lock = store.lock_exclusive().ok();
    let options = SweepOptions {
        dry_run,
        ..if lock.is_some() {
            SweepOptions::owner()
        } else {
            SweepOptions::shared()
        }
    };
    if lock.is_none() {
        println!(
            "a server is running on {}: sweeping files older than an hour only",
            data_dir.display()
        );
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let swept = store.sweep(options).await.context("sweeping the store")?;
    println!(
        "sweep: {verb} {} orphan files ({}), {} rows without files, {} temp files",
        swept.orphan_files,
        ByteSize::b(swept.orphan_bytes),
        swept.missing_files,
        swept.temp_files
    );
    let target = target.map(|t| t.as_u64()).or_else(|| {
        config
            .cache
            .max_size
            .map(|max| (max.as_u64() as f64 * config.cache.low_water) as u64)
    });
    match target {
        Some(target) => {
            let report = store.evict_to(target, dry_run).await.context("evicting")?;
            println!(
                "evict: {verb} {} blobs ({}); {} → {} (target {}){}",
                report.evicted,
                ByteSize::b(report.freed),
                ByteSize::b(report.size_before),
                ByteSize::b(report.size_after),
                ByteSize::b(target),
                if report.skipped_in_use > 0 {
                    format!(", {} in use skipped", report.skipped_in_use)
                } else {
                    String::new()
                }
            );
        }
        None => {
            println!("evict: no cache.max_size configured and no --target given; nothing evicted")
        }
    }
    store.close().await;
    Ok(())
}

async fn stats(location: DataDirArgs, json: bool) -> anyhow::Result<()> {
    let data_dir = location.resolve()?;
    let store = Store::open_existing(&data_dir).await?;
    let stats = store.stats().await.context("reading the index")?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!(
        "store: {} in {} blobs ({} hosted)",
        ByteSize::b(stats.totals.bytes),
        stats.totals.blobs,
        ByteSize::b(stats.totals.hosted_bytes)
    );
    for group in &stats.groups {
        println!(
            "  {:<6} {:<28} {:>8} items {:>12}",
            group.protocol,
            group.upstream,
            group.items,
            ByteSize::b(group.bytes)
        );
    }
    let served = stats.hits + stats.misses + stats.stale;
    if served > 0 {
        println!(
            "hit ratio: {:.1}% ({} hits, {} misses, {} stale) over {} audited reads",
            stats.hits as f64 * 100.0 / served as f64,
            stats.hits,
            stats.misses,
            stats.stale,
            served
        );
    } else {
        println!("hit ratio: no audited reads yet");
    }
    Ok(())
}
