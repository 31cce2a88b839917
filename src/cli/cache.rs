//! `mirror cache …`: inspect and maintain a store, whether or not a server
//! is running on it: a data dir, or a cluster's database and bucket when the
//! config names them (`[index]`, `[storage]`).

use anyhow::Context;
use bytesize::ByteSize;
use clap::Subcommand;

use std::path::PathBuf;

use super::DataDirArgs;
use crate::config::Config;
use crate::prefetch;
use crate::store::SweepOptions;

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
    /// Fetch into the store what a go.sum / go.mod names, or a list of images,
    /// through the mirror's own request path (works beside a running server).
    Prefetch {
        #[command(flatten)]
        location: DataDirArgs,
        /// Module versions from a go.sum (zips for full lines, .mod for /go.mod lines).
        #[arg(long)]
        go_sum: Vec<PathBuf>,
        /// The require directives of a go.mod.
        #[arg(long)]
        go_mod: Vec<PathBuf>,
        /// A file with one image reference per line, as users write them:
        /// `mirror.example.com:5000/org/app:1.2`, `docker.io/library/alpine`,
        /// `alpine:3.20`, `ghcr.io/org/app@sha256:…`.
        #[arg(long)]
        images: Vec<PathBuf>,
        /// Image references given directly.
        image: Vec<String>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
    },
    /// Re-hash every stored blob against its digest. Exits 1 if any is bad.
    Verify {
        #[command(flatten)]
        location: DataDirArgs,
        /// Drop bad and missing blobs from the index (they become misses).
        #[arg(long)]
        repair: bool,
    },
}

/// Runs one command's future on a single-threaded runtime.
fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

pub fn run(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Stats { location, json } => block_on(stats(location, json))?,
        CacheCommand::Gc {
            location,
            target,
            dry_run,
        } => block_on(gc(location, target, dry_run))?,
        CacheCommand::Verify { location, repair } => block_on(verify(location, repair))?,
        CacheCommand::Prefetch {
            location,
            go_sum,
            go_mod,
            images,
            image,
            jobs,
        } => {
            let mut modules = Vec::new();
            for path in &go_sum {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                modules.extend(
                    prefetch::go::from_go_sum(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                );
            }
            for path in &go_mod {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                modules.extend(
                    prefetch::go::from_go_mod(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                );
            }
            let mut refs = Vec::new();
            for path in &images {
                refs.extend(prefetch::read_image_list(path)?);
            }
            for text in &image {
                refs.push(text.parse::<prefetch::oci::ImageRef>()?);
            }
            if modules.is_empty() && refs.is_empty() {
                anyhow::bail!(
                    "nothing to prefetch: give --go-sum, --go-mod, --images or image references"
                );
            }
            let config = location.load()?;
            let registries = prefetch::registries(&config);
            let refs = refs
                .into_iter()
                .map(|image| Ok(registries.localize(image)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // The multi-threaded runtime: the private server and the client run side by side.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_prefetch(config, modules, refs, jobs))
        }
    }
}

async fn gc(location: DataDirArgs, target: Option<ByteSize>, dry_run: bool) -> anyhow::Result<()> {
    let config = location.load()?;
    let data_dir = &config.data_dir;
    let store = super::open_store(&config).await?;
    let shared_index = config.index.is_shared();
    // With the lock, no server is running here: temp files are abandoned for
    // sure. On a shared index other replicas may be writing whatever this
    // data dir's lock says, so the sweep is the leader's, never an owner's.
    let lock = if shared_index {
        None
    } else {
        store.lock_exclusive().ok()
    };
    let options = SweepOptions {
        dry_run,
        ..if lock.is_some() {
            SweepOptions::owner()
        } else {
            SweepOptions::shared()
        }
    };
    if shared_index {
        println!(
            "a shared index (index.url): sweeping as the upkeep leader does, files older than an hour only"
        );
    } else if lock.is_none() {
        println!(
            "a server is running on {}: sweeping files older than an hour only",
            data_dir.display()
        );
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let swept = store.sweep(options).await.context("sweeping the store")?;
    println!(
        "sweep: {verb} {} orphan files ({}), {} rows without files, {} temp files, {} abandoned uploads",
        swept.orphan_files,
        ByteSize::b(swept.orphan_bytes),
        swept.missing_files,
        swept.temp_files,
        swept.abandoned_uploads
    );
    if store.shares_bytes() {
        println!(
            "sweep: {verb} {} abandoned multipart uploads to the bucket",
            swept.abandoned_multipart_uploads
        );
    }
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

async fn run_prefetch(
    config: Config,
    modules: Vec<prefetch::go::ModuleVersion>,
    images: Vec<prefetch::oci::ImageRef>,
    jobs: usize,
) -> anyhow::Result<()> {
    let prefetcher = prefetch::Prefetcher::start(config, jobs).await?;
    let style = indicatif::ProgressStyle::with_template("{prefix:>6} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut failures = Vec::new();
    for (prefix, is_go) in [("go", true), ("images", false)] {
        if (is_go && modules.is_empty()) || (!is_go && images.is_empty()) {
            continue;
        }
        let bar = indicatif::ProgressBar::new(0)
            .with_style(style.clone())
            .with_prefix(prefix);
        let report = if is_go {
            prefetcher.go(&modules, &bar).await
        } else {
            prefetcher.images(&images, &bar).await
        };
        bar.finish_and_clear();
        println!(
            "{prefix}: {} files ({}) in the store, {} failed",
            report.files,
            ByteSize::b(report.bytes),
            report.failures.len()
        );
        failures.extend(report.failures);
    }
    prefetcher.stop().await;
    for failure in &failures {
        eprintln!("failed: {failure}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} items could not be prefetched", failures.len())
    }
}

async fn verify(location: DataDirArgs, repair: bool) -> anyhow::Result<()> {
    let store = super::open_store(&location.load()?).await?;
    let report = store.verify(repair).await.context("verifying the store")?;
    store.close().await;
    println!(
        "verified {} blobs ({})",
        report.checked,
        ByteSize::b(report.bytes)
    );
    for digest in &report.corrupt {
        println!(
            "corrupt: {digest}{}",
            if repair { " (removed)" } else { "" }
        );
    }
    for digest in &report.missing {
        println!(
            "missing: {digest}{}",
            if repair {
                " (removed from the index)"
            } else {
                ""
            }
        );
    }
    if report.is_clean() || repair {
        Ok(())
    } else {
        anyhow::bail!(
            "{} corrupt and {} missing blobs; run with --repair",
            report.corrupt.len(),
            report.missing.len()
        )
    }
}

async fn stats(location: DataDirArgs, json: bool) -> anyhow::Result<()> {
    let store = super::open_store(&location.load()?).await?;
    let stats = store.stats().await.context("reading the index")?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    print!("{}", stats_table(&stats));
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

/// The header and one row per group, each blob counted once, so the rows add
/// up to the header; columns as wide as their widest entry.
fn stats_table(stats: &crate::store::StoreStats) -> String {
    use std::fmt::Write;
    let totals = &stats.totals;
    let mut out = format!(
        "store: {} in {} blobs (hosted: {} blobs, {})\n",
        ByteSize::b(totals.bytes),
        totals.blobs,
        totals.hosted_blobs,
        ByteSize::b(totals.hosted_bytes)
    );
    let width = |f: &dyn Fn(&crate::store::GroupStats) -> usize| {
        stats.groups.iter().map(f).max().unwrap_or(0)
    };
    let protocol = width(&|g| g.protocol.len());
    let upstream = width(&|g| g.upstream.len());
    let blobs = width(&|g| g.blobs.to_string().len());
    let sizes: Vec<String> = stats
        .groups
        .iter()
        .map(|g| ByteSize::b(g.bytes).to_string())
        .collect();
    let size = sizes.iter().map(String::len).max().unwrap_or(0);
    for (group, bytes) in stats.groups.iter().zip(&sizes) {
        let _ = writeln!(
            out,
            "  {:<protocol$}  {:<upstream$}  {:>blobs$} blobs  {bytes:>size$}",
            group.protocol, group.upstream, group.blobs
        );
    }
    let labels = [
        (
            crate::store::SHARED,
            "blobs that more than one of the groups above refers to",
        ),
        (
            crate::store::UNREFERENCED,
            "blobs nothing refers to any more; the next sweep removes them",
        ),
    ];
    for (label, meaning) in labels {
        if stats.groups.iter().any(|g| g.upstream == label) {
            let _ = writeln!(out, "{label}: {meaning}");
        }
    }
    out
}
