//! The audit trail: every content request, so an operator can answer "who
//! pulled this digest?". Requests hand records to a channel; one task writes
//! them in batches (a busy server writes a few transactions a second, not one
//! per request), folding requests identical in all but the millisecond within
//! one second into one row with a count. The channel is bounded and senders wait when it is
//! full: under overload the audit slows requests down rather than losing records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::mpsc;

use super::{Store, StoreError};

/// Rows per INSERT statement (12 parameters each, far below SQLite's limit).
const BATCH: usize = 500;
/// The row counts an INSERT is prepared for: a batch is cut into these so
/// every statement comes from the cache instead of being parsed (a parse costs
/// about as much per row as the insert itself).
const STATEMENT_ROWS: [usize; 4] = [BATCH, 50, 5, 1];
const QUEUE: usize = 16 * 1024;
/// Under sustained load the writer commits at most once per interval, so the
/// records of thousands of requests share a transaction (the index's one writer
/// stays free, and the WAL grows by pages, not by rows). A record that arrives
/// after a quiet spell is written at once.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Records per transaction at most; the queue holds more and the rest go next.
const MAX_PER_COMMIT: usize = 8 * BATCH;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    /// `cert`, `user` or `anonymous`.
    pub identity: String,
    pub subject: String,
    pub serial: Option<String>,
    pub peer: String,
    pub protocol: String,
    pub action: String,
    pub artifact: String,
    pub digest: Option<String>,
    pub outcome: String,
    pub status: u16,
    /// Requests this row stands for (identical ones within the same second).
    pub count: u64,
}

impl AuditRecord {
    /// Whether `other` may be folded into this row.
    fn same_second_and_request(&self, other: &AuditRecord) -> bool {
        self.at_ms.div_euclid(1000) == other.at_ms.div_euclid(1000)
            && self.status == other.status
            && self.artifact == other.artifact
            && self.peer == other.peer
            && self.subject == other.subject
            && self.serial == other.serial
            && self.identity == other.identity
            && self.outcome == other.outcome
            && self.action == other.action
            && self.protocol == other.protocol
            && self.digest == other.digest
    }
}

/// Folds identical requests of the same second together, keeping the first
/// one's time; order otherwise kept.
fn fold(records: &mut Vec<AuditRecord>) {
    let mut folded: Vec<AuditRecord> = Vec::with_capacity(records.len().min(64));
    let mut index: std::collections::HashMap<(i64, u64), Vec<usize>> =
        std::collections::HashMap::new();
    for record in records.drain(..) {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &record.artifact,
            &record.peer,
            &record.subject,
            &record.outcome,
        )
            .hash(&mut hasher);
        let key = (record.at_ms.div_euclid(1000), hasher.finish());
        let candidates = index.entry(key).or_default();
        match candidates
            .iter()
            .find(|&&i| folded[i].same_second_and_request(&record))
        {
            Some(&i) => folded[i].count += record.count,
            None => {
                candidates.push(folded.len());
                folded.push(record);
            }
        }
    }
    *records = folded;
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The sending side, held by the request path.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<AuditRecord>,
}

impl AuditLog {
    pub async fn record(&self, record: AuditRecord) {
        if self.sender.send(record).await.is_err() {
            tracing::error!("audit writer has stopped; a record was lost");
        }
    }
}

/// What `mirror audit` asks for.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Certificate CN or user name.
    pub subject: Option<String>,
    /// A substring of the artifact (`golang.org/x/mod`, `library/alpine`).
    pub artifact: Option<String>,
    pub digest: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: u32,
}

impl Store {
    /// Starts the batch writer; it ends, after writing what was queued, when
    /// every `AuditLog` clone is dropped.
    pub fn start_audit(&self) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::channel::<AuditRecord>(QUEUE);
        let store = self.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut last_commit: Option<tokio::time::Instant> = None;
            while let Some(first) = receiver.recv().await {
                if let Some(next) = last_commit.map(|at| at + MIN_INTERVAL)
                    && next > tokio::time::Instant::now()
                {
                    tokio::time::sleep_until(next).await;
                }
                batch.push(first);
                while batch.len() < MAX_PER_COMMIT {
                    match receiver.try_recv() {
                        Ok(record) => batch.push(record),
                        Err(_) => break,
                    }
                }
                let count = batch.len();
                if let Err(error) = store.write_audit(&mut batch).await {
                    tracing::error!(%error, lost = count, "could not write audit records");
                }
                last_commit = Some(tokio::time::Instant::now());
                batch.clear();
            }
        });
        (AuditLog { sender }, writer)
    }

    /// Writes (and drains) `records` in one transaction, in INSERTs of
    /// `STATEMENT_ROWS` rows. The strings are moved into the statement, not copied.
    async fn write_audit(&self, records: &mut Vec<AuditRecord>) -> Result<(), StoreError> {
        fold(records);
        let mut tx = self.inner.db.write.begin().await?;
        while !records.is_empty() {
            let take = STATEMENT_ROWS
                .into_iter()
                .find(|&rows| rows <= records.len())
                .unwrap_or(1);
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO audit (at_ms, identity, subject, serial, peer, protocol, action, artifact, digest, outcome, status, count) ",
            );
            insert.push_values(records.drain(..take), |mut row, r| {
                row.push_bind(r.at_ms)
                    .push_bind(r.identity)
                    .push_bind(r.subject)
                    .push_bind(r.serial)
                    .push_bind(r.peer)
                    .push_bind(r.protocol)
                    .push_bind(r.action)
                    .push_bind(r.artifact)
                    .push_bind(r.digest)
                    .push_bind(r.outcome)
                    .push_bind(i64::from(r.status))
                    .push_bind(r.count as i64);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut select: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT at_ms, identity, subject, serial, peer, protocol, action, artifact, digest, outcome, status, count \
             FROM audit WHERE 1 = 1",
        );
        if let Some(subject) = &query.subject {
            select.push(" AND subject = ").push_bind(subject);
        }
        if let Some(artifact) = &query.artifact {
            select
                .push(" AND instr(artifact, ")
                .push_bind(artifact)
                .push(") > 0");
        }
        if let Some(digest) = &query.digest {
            select.push(" AND digest = ").push_bind(digest);
        }
        if let Some(since) = query.since_ms {
            select.push(" AND at_ms >= ").push_bind(since);
        }
        if let Some(until) = query.until_ms {
            select.push(" AND at_ms < ").push_bind(until);
        }
        select
            .push(" ORDER BY at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.limit.max(1)));
        let rows = select.build().fetch_all(&self.inner.db.read).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    at_ms: row.try_get("at_ms")?,
                    identity: row.try_get("identity")?,
                    subject: row.try_get("subject")?,
                    serial: row.try_get("serial")?,
                    peer: row.try_get("peer")?,
                    protocol: row.try_get("protocol")?,
                    action: row.try_get("action")?,
                    artifact: row.try_get("artifact")?,
                    digest: row.try_get("digest")?,
                    outcome: row.try_get("outcome")?,
                    status: row.try_get::<i64, _>("status")? as u16,
                    count: row.try_get::<i64, _>("count")? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Prunes records older than `retention`, hourly, until `stop`.
    pub fn spawn_audit_retention(
        &self,
        retention: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let cutoff = now_ms() - retention.as_millis() as i64;
                match store.prune_audit(cutoff).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned old audit records"),
                    Err(error) => tracing::warn!(%error, "could not prune audit records"),
                }
            }
        });
    }

    /// Deletes records older than `before_ms`; how many went.
    pub async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit WHERE at_ms < ?1")
            .bind(before_ms)
            .execute(&self.inner.db.write)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, digest: &str, at_ms: i64) -> AuditRecord {
        AuditRecord {
            at_ms,
            identity: "cert".into(),
            subject: subject.into(),
            serial: Some("abc".into()),
            peer: "127.0.0.1:1".into(),
            protocol: "oci".into(),
            action: "read".into(),
            artifact: format!("library/alpine@{digest}"),
            digest: Some(digest.into()),
            outcome: "hit".into(),
            status: 200,
            count: 1,
        }
    }

    #[tokio::test]
    async fn queued_records_are_written_and_found_by_subject_digest_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        for i in 0..1200 {
            log.record(record(
                if i % 2 == 0 { "alice" } else { "bob" },
                &format!("sha256:{i}"),
                i,
            ))
            .await;
        }
        drop(log);
        writer.await.unwrap();
        let all = store
            .audit_query(&AuditQuery {
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 1200);
        let who = store
            .audit_query(&AuditQuery {
                digest: Some("sha256:7".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(who.len(), 1);
        assert_eq!(who[0].subject, "bob");
        let alice_late = store
            .audit_query(&AuditQuery {
                subject: Some("alice".into()),
                since_ms: Some(1000),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice_late.len(), 100);
        assert_eq!(store.prune_audit(600).await.unwrap(), 600);
    }

    #[tokio::test]
    async fn identical_requests_in_one_second_become_one_row_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        for at_ms in [10_000, 10_400, 10_999, 11_000] {
            log.record(record("alice", "sha256:1", at_ms)).await;
        }
        log.record(record("bob", "sha256:1", 10_500)).await;
        drop(log);
        writer.await.unwrap();
        let rows = store
            .audit_query(&AuditQuery {
                digest: Some("sha256:1".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let summary: Vec<(i64, &str, u64)> = rows
            .iter()
            .map(|r| (r.at_ms, r.subject.as_str(), r.count))
            .collect();
        assert_eq!(
            summary,
            [
                (11_000, "alice", 1),
                (10_500, "bob", 1),
                (10_000, "alice", 3)
            ]
        );
    }
}
