//! Assembles a running mirror from a config: the protocols' own checks of their
//! settings first, then TLS files (or a generated PKI), the store,
//! authentication, the protocols, and the listener. Tests start one
//! on a pre-bound `127.0.0.1:0` listener; `mirror serve` starts one on `listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{App, Policies};
use crate::metrics::Metrics;
use crate::server::reload::{ReloadError, Reloader};
use crate::server::{Server, bootstrap};
use crate::store::Store;
use crate::{goproxy, oci};

#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// Reload on SIGHUP. Only the real binary wants this: a test process runs
    /// many servers and must not have them all react to one signal.
    pub sighup: bool,
    /// Share the data dir with a server that owns it (`mirror cache prefetch`
    /// beside a running server): no lock, no repair of what might be that
    /// server's work in progress, no eviction or sweeps (the owner runs them).
    pub shared: bool,
}

/// Where content comes from, said once at startup: a first run that mirrors
/// nothing, or the wrong thing, should be plain from the log.
fn log_upstreams(config: &Config) {
    use crate::upstream::redact;
    for upstream in &config.registry.upstream {
        tracing::info!(
            name = %upstream.name,
            url = %redact(&upstream.url),
            default = upstream.default,
            library_prefix = upstream.adds_library(),
            "registry upstream"
        );
    }
    if config.registry.upstream.is_empty() {
        tracing::info!("no registry upstream (registry.upstream = []): every repository is hosted");
    }
    // Checked already by `check_settings`.
    if let Ok(chain) = config.go.upstream.parse::<goproxy::chain::Chain>() {
        tracing::info!(%chain, "go module upstream");
    }
    for sumdb in &config.go.sumdb {
        tracing::info!(name = %sumdb.name, url = %redact(&sumdb.url), "go checksum database");
    }
}

/// The store, with the data-dir lock unless `shared`; an owner first repairs
/// what a crash left behind.
async fn open_store(
    config: &Config,
    options: StartOptions,
) -> anyhow::Result<(Store, Option<std::fs::File>)> {
    let storage = config
        .storage
        .storage(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let store = Store::open_with(&config.data_dir, &storage, &config.index.choice())
        .await
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    store.set_fill_limits(config.cache.fill_limits());
    if let Some(cluster) = &config.cluster {
        store.set_replica(&cluster.replica);
    }
    store.set_verify_on_read(config.cache.verify_on_read);
    if options.shared {
        return Ok((store, None));
    }
    let lock = store.lock_exclusive()?;
    if config.index.is_shared() {
        // The index (and a bucket) belong to every replica, not to this data
        // dir: a row without a local file or an object without a row yet may
        // be another replica's write in progress, so no repair at start.
        return Ok((store, Some(lock)));
    }
    // This process owns the data dir now: whatever a crash left behind
    // (temp files, renamed files without rows, rows without files) goes.
    let repaired = store.sweep(crate::store::SweepOptions::owner()).await?;
    if repaired != crate::store::SweepReport::default() {
        tracing::info!(?repaired, "repaired the store after an unclean stop");
    }
    Ok((store, Some(lock)))
}

/// The OCI registry and the Go module mirror.
fn protocols(
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(oci::Registry, goproxy::GoProxy)> {
    let registry = oci::Registry::new(
        &config.registry,
        config.limits.body_timeout,
        store.clone(),
        metrics.clone(),
    )?;
    let go = goproxy::GoProxy::new(&config.go, store.clone(), metrics.clone())
        .context("setting up the Go module mirror")?;
    Ok((registry, go))
}

/// The listener handed in (tests), else `listen` bound.
async fn bind(
    config: &Config,
    listener: Option<std::net::TcpListener>,
) -> anyhow::Result<tokio::net::TcpListener> {
    Ok(match listener {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)?
        }
        None => tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?,
    })
}

fn policies(config: &Config) -> Policies {
    Policies {
        go_read: config.go_read(),
        registry_read: config.registry_read(),
        registry_write: config.registry_write(),
        metrics: config.auth.metrics,
    }
}

/// How often a replica tries for upkeep leadership, and the leader checks
/// that its session still holds it: how long upkeep may pause when a leader dies.
const LEADERSHIP_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Reloads, store upkeep and, for the data dir's owner only, audit
/// retention, sweeps and eviction (each pass by the upkeep leader only, on
/// an index several processes share); all stop with `stop`.
fn spawn_background(
    config: &Config,
    store: &Store,
    reloader: &Arc<Reloader>,
    options: StartOptions,
    stop: &CancellationToken,
) {
    reloader
        .clone()
        .watch(config.limits.reload_poll, options.sighup, stop.clone());
    store.spawn_upkeep(stop.clone());
    if options.shared {
        return;
    }
    store.spawn_leadership(LEADERSHIP_EVERY, stop.clone());
    store
        .audit()
        .spawn_retention(config.audit.retention, stop.clone());
    store.spawn_sweeps(config.cache.sweep_interval, stop.clone());
    if let Some(max) = config.cache.max_size {
        store.spawn_eviction(max.as_u64(), config.cache.low_water, stop.clone());
    }
}

/// Makes the store a replica: fills take cluster-wide leases, and the peer
/// endpoint serves this replica's fills in progress to the others.
async fn join_cluster(
    cluster: &crate::config::ClusterConfig,
    tls_files: &crate::server::tls::TlsFiles,
    store: &Store,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use crate::server::peer::{PeerServer, peer_client};
    let peers = peer_client(tls_files)?;
    let server = PeerServer::bind(cluster.peer_listen, tls_files, store.clone()).await?;
    store.join_cluster(crate::store::Cluster {
        replica: cluster.replica.clone(),
        peer_url: cluster.peer_url.clone(),
        peers,
    });
    tracing::info!(replica = %cluster.replica, peer_listen = %cluster.peer_listen, peer_url = %cluster.peer_url, "replica of a cluster");
    tokio::spawn(server.run(stop.clone()));
    Ok(())
}

/// Checks what the protocols parse from the config themselves (`go.upstream`,
/// `go.private`, `registry.hosted`), each error naming its key: run wherever a
/// config is loaded, and before a start touches the data dir.
pub fn check_settings(config: &Config) -> anyhow::Result<()> {
    goproxy::check(&config.go)?;
    oci::check(&config.registry)?;
    Ok(())
}

/// A running server.
pub struct Mirror {
    addr: SocketAddr,
    reloader: Arc<Reloader>,
    store: Store,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Printed by `mirror serve` when it created a PKI.
    pub first_run_message: Option<String>,
    _lock: Option<std::fs::File>,
}

impl Mirror {
    pub async fn start(
        config: Config,
        listener: Option<std::net::TcpListener>,
        options: StartOptions,
    ) -> anyhow::Result<Mirror> {
        check_settings(&config)?;
        let (tls_files, first_run_message) = bootstrap::tls_files(&config)?;
        let reloader = Arc::new(
            Reloader::new(
                tls_files.clone(),
                config.auth.htpasswd.clone(),
                config.auth.credential_cache_ttl,
            )
            .context("loading TLS and auth files")?,
        );
        let (store, lock) = open_store(&config, options).await?;

        // Built before the port opens: the upstream clients load the system's
        // root certificates, the slow part of starting, and nothing slow should
        // come between the port accepting and `start` returning (when the
        // caller installs its signal handlers).
        let replica = config.cluster.as_ref().map(|c| c.replica.as_str());
        let metrics = Arc::new(Metrics::new().for_replica(replica));
        let (registry, go) = protocols(&config, &store, &metrics)?;

        let stop = CancellationToken::new();
        // Before the main port opens: a replica that answers clients can
        // also serve its fills to the others. A guest beside the replica
        // (`mirror cache prefetch`) is not one: the replica holds the peer
        // endpoint, and the guest's few fills need no lease.
        if let Some(cluster) = config.cluster.as_ref().filter(|_| !options.shared) {
            join_cluster(cluster, &tls_files, &store, &stop).await?;
        }
        let listener = bind(&config, listener).await?;
        let addr = listener.local_addr()?;
        let (audit, audit_writer) = store.start_audit();
        let app = Arc::new(App::new(
            reloader.authenticator(),
            store.clone(),
            audit,
            policies(&config),
            metrics,
            go,
            registry,
        ));
        spawn_background(&config, &store, &reloader, options, &stop);
        let server = Server::new(listener, reloader.clone(), app, config.limits.clone());
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            server.run(shutdown.cancelled_owned()).await;
            // The server (and with it every audit sender) is gone: let the writer drain.
            let _ = audit_writer.await;
        });
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "mirror is serving");
        log_upstreams(&config);
        Ok(Mirror {
            addr,
            reloader,
            store,
            stop,
            task,
            first_run_message,
            _lock: lock,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-reads certificates, CA, CRL and htpasswd now (what SIGHUP does).
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload()
    }

    /// Stops accepting, lets open requests finish (within the grace period).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.store.close().await;
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/mirror"), "mirror.toml").unwrap()
    }

    #[test]
    fn protocol_settings_are_checked_and_name_the_key() {
        for (text, says) in [
            (
                "[go]\nupstream = \"https://proxy.example,direct\"\n",
                "go.upstream",
            ),
            (
                "[go]\nupstream = \"https://proxy.example,direct\"\n",
                "direct",
            ),
            ("[go]\nupstream = \" , \"\n", "go.upstream"),
            ("[go]\nprivate = [\"corp.example.com/[\"]\n", "go.private"),
            ("[registry]\nhosted = [\"Bad/\"]\n", "registry.hosted[0]"),
        ] {
            let err = format!("{:#}", check_settings(&parse(text)).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
        let good = parse(
            "[go]\nupstream = \"https://a.example|https://b.example,off\"\n\
             private = [\"*.corp.example.com\"]\n\
             [registry]\nhosted = [\"internal\", \"team/apps\"]\n",
        );
        check_settings(&good).unwrap();
        check_settings(&parse("[go]\nupstream = \"off\"\n")).unwrap();
    }
}
