//! Gathering audit records on the request path, cheaply. A request folds its
//! entry into an in-memory table: requests identical in all but the
//! millisecond within one second (a build hammering one file over one
//! connection) become one row with a count, and only a new row allocates. One
//! task swaps the table out now and then and writes it in one transaction, so
//! the request path never waits on SQLite and the writer never walks thousands
//! of records. The table is bounded: past `CAP` rows a request waits for the
//! writer (the audit slows a flood down rather than losing records).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::Store;
use super::audit::AuditRecord;
use crate::sync::Unpoisoned;

/// Under load the writer commits at most once per interval, so thousands of
/// requests share a transaction; after a quiet spell a record goes at once.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Rows held in memory at most before requests wait for the writer.
const CAP: usize = 20_000;

/// One request's audit entry, borrowed from the request: nothing is copied
/// unless it starts a new row.
#[derive(Clone, Copy, Debug)]
pub struct AuditEntry<'a> {
    pub at_ms: i64,
    pub identity: &'static str,
    pub subject: &'a str,
    pub serial: Option<&'a str>,
    pub peer: &'a str,
    pub protocol: &'static str,
    pub action: &'static str,
    pub artifact: &'a str,
    pub digest: Option<&'a str>,
    pub outcome: &'static str,
    pub status: u16,
}

impl AuditEntry<'_> {
    fn fold_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            self.at_ms.div_euclid(1000),
            self.artifact,
            self.peer,
            self.subject,
            self.outcome,
            self.status,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    fn matches(&self, row: &AuditRecord) -> bool {
        row.at_ms.div_euclid(1000) == self.at_ms.div_euclid(1000)
            && row.status == self.status
            && row.artifact == self.artifact
            && row.peer == self.peer
            && row.subject == self.subject
            && row.serial.as_deref() == self.serial
            && row.identity == self.identity
            && row.outcome == self.outcome
            && row.action == self.action
            && row.protocol == self.protocol
            && row.digest.as_deref() == self.digest
    }

    fn to_record(self) -> AuditRecord {
        AuditRecord {
            at_ms: self.at_ms,
            identity: self.identity.to_owned(),
            subject: self.subject.to_owned(),
            serial: self.serial.map(str::to_owned),
            peer: self.peer.to_owned(),
            protocol: self.protocol.to_owned(),
            action: self.action.to_owned(),
            artifact: self.artifact.to_owned(),
            digest: self.digest.map(str::to_owned),
            outcome: self.outcome.to_owned(),
            status: self.status,
            count: 1,
            replica: None,
        }
    }
}

#[derive(Default)]
struct Pending {
    rows: Vec<AuditRecord>,
    /// Rows by the hash of their folding key.
    by_hash: HashMap<u64, Vec<usize>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Tells the writer there is something to write.
    wake: Notify,
    /// Tells waiting requests the table was emptied.
    drained: Notify,
}

/// The request path's handle. The writer stops, after writing what is left,
/// when every clone is dropped.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    _alive: mpsc::Sender<()>,
}

impl AuditLog {
    pub async fn record(&self, entry: AuditEntry<'_>) {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            {
                let mut pending = self.shared.pending.lock().unpoisoned();
                let Pending { rows, by_hash } = &mut *pending;
                let candidates = by_hash.entry(entry.fold_hash()).or_default();
                if let Some(&i) = candidates.iter().find(|&&i| entry.matches(&rows[i])) {
                    rows[i].count += 1;
                    return;
                }
                if rows.len() < CAP {
                    candidates.push(rows.len());
                    rows.push(entry.to_record());
                    if rows.len() == 1 {
                        self.shared.wake.notify_one();
                    }
                    return;
                }
                // Registered before the lock goes, so the writer's signal cannot be missed.
                drained.as_mut().enable();
            }
            self.shared.wake.notify_one();
            drained.await;
        }
    }
}

impl Store {
    /// Starts the writer; it ends, after writing what is left, when every
    /// `AuditLog` clone is dropped.
    pub fn start_audit(&self) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            drained: Notify::new(),
        });
        let (alive, mut closed) = mpsc::channel::<()>(1);
        let store = self.clone();
        let writer_shared = shared.clone();
        let writer = tokio::spawn(async move {
            let shared = writer_shared;
            let mut last_commit: Option<tokio::time::Instant> = None;
            let mut open = true;
            while open {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = closed.recv() => open = false,
                }
                if open
                    && let Some(next) = last_commit.map(|at| at + MIN_INTERVAL)
                    && next > tokio::time::Instant::now()
                {
                    tokio::time::sleep_until(next).await;
                }
                let mut rows = {
                    let mut pending = shared.pending.lock().unpoisoned();
                    std::mem::take(&mut *pending).rows
                };
                shared.drained.notify_waiters();
                if rows.is_empty() {
                    continue;
                }
                let count = rows.len();
                if let Err(error) = store.write_audit(&mut rows).await {
                    tracing::error!(%error, lost = count, "could not write audit records");
                }
                last_commit = Some(tokio::time::Instant::now());
            }
        });
        (
            AuditLog {
                shared,
                _alive: alive,
            },
            writer,
        )
    }
}
