//! Hot reload of the files a running server trusts: server certificate and key,
//! client CA, CRL, htpasswd. Triggered by SIGHUP or by a change of the files.
//! A reload is all-or-nothing: if anything fails to load, the old configuration
//! stays in force and the reason is logged. New connections get the new
//! configuration. Open ones keep their TLS session, but each successful reload
//! bumps a generation number, and a connection with a client certificate has
//! it verified again by the new verifier before its next request
//! (`check_client`): a certificate the reload revoked or no longer chains to
//! the client CA is refused there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use super::tls::{self, ClientCert, TlsFiles, Trust, Untrusted};
use crate::auth::{Authenticator, Htpasswd};
use crate::sync::Unpoisoned;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Htpasswd(#[from] crate::auth::HtpasswdError),
}

type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

pub struct Reloader {
    files: TlsFiles,
    htpasswd: Option<PathBuf>,
    trust: RwLock<Trust>,
    /// Bumped, under `trust`'s write lock, by every successful reload.
    generation: AtomicU64,
    auth: Arc<Authenticator>,
    /// What the watched files looked like at the last reload, to notice changes.
    stamp: Mutex<Stamp>,
}

impl Reloader {
    /// Loads everything once; an error here is a startup error.
    pub fn new(
        files: TlsFiles,
        htpasswd: Option<PathBuf>,
        ttl: Duration,
    ) -> Result<Reloader, ReloadError> {
        let trust = tls::load(&files)?;
        let users = match &htpasswd {
            Some(path) => Htpasswd::load(path)?,
            None => Htpasswd::default(),
        };
        let reloader = Reloader {
            stamp: Mutex::new(Vec::new()),
            files,
            htpasswd,
            trust: RwLock::new(trust),
            generation: AtomicU64::new(0),
            auth: Arc::new(Authenticator::new(users, ttl)),
        };
        *reloader.stamp.lock().unpoisoned() = reloader.current_stamp();
        Ok(reloader)
    }

    /// The configuration a new connection is accepted with, and its generation
    /// (read together, so a reload in between cannot be missed).
    pub fn tls(&self) -> (u64, Arc<ServerConfig>) {
        let trust = self.trust.read().unpoisoned();
        (
            self.generation.load(Ordering::Acquire),
            trust.config.clone(),
        )
    }

    /// Whether an open connection's client certificate still holds. Cheap unless
    /// a reload happened since it was last verified.
    pub fn check_client(&self, cert: &ClientCert) -> Result<(), Untrusted> {
        cert.check(self.generation.load(Ordering::Acquire), || {
            let trust = self.trust.read().unpoisoned();
            (
                self.generation.load(Ordering::Acquire),
                trust.clients.clone(),
            )
        })
    }

    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.clone()
    }

    /// Re-reads every file. On error nothing changes.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let stamp = self.current_stamp();
        let trust = tls::load(&self.files)?;
        let users = match &self.htpasswd {
            Some(path) => Some(Htpasswd::load(path)?),
            None => None,
        };
        {
            let mut current = self.trust.write().unpoisoned();
            *current = trust;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(users) = users {
            self.auth.replace(users);
        }
        *self.stamp.lock().unpoisoned() = stamp;
        Ok(())
    }

    fn watched(&self) -> Vec<PathBuf> {
        let mut paths = self.files.paths();
        paths.extend(self.htpasswd.clone());
        paths
    }

    fn current_stamp(&self) -> Stamp {
        self.watched()
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                (path, meta)
            })
            .collect()
    }

    fn changed(&self) -> bool {
        *self.stamp.lock().unpoisoned() != self.current_stamp()
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(trigger = why, "reloaded TLS files and htpasswd"),
            Err(error) => {
                tracing::error!(trigger = why, %error, "reload failed; keeping the previous configuration");
                // Do not retry the same broken files every poll.
                *self.stamp.lock().unpoisoned() = self.current_stamp();
            }
        }
    }

    /// Reloads when the files change (polled) and, if `on_sighup`, on SIGHUP.
    pub fn watch(self: Arc<Self>, poll: Duration, on_sighup: bool, stop: CancellationToken) {
        let this = self.clone();
        let poll_stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = poll_stop.cancelled() => return,
                    _ = ticker.tick() => {
                        if this.changed() {
                            this.reload_and_log("file change");
                        }
                    }
                }
            }
        });
        if !on_sighup {
            return;
        }
        tokio::spawn(async move {
            let mut hangups = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGHUP; reload on file change only");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hangups.recv() => match got {
                        Some(()) => self.reload_and_log("SIGHUP"),
                        None => return,
                    },
                }
            }
        });
    }
}
