//! The audit trail in the index: every content request, so an operator can
//! answer "who pulled this digest?" (`AuditLog` in `audit_log` gathers them;
//! this module escapes, writes, queries and prunes rows through
//! `index::AuditIndex`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::index::AuditIndex;
use super::{Store, StoreError};
use crate::escape::escape_owned;

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
    /// The `[cluster] replica` that served the request; `None` on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    /// Writes `records` in one transaction. The texts that come from
    /// outside (the subject, the artifact) are escaped on the way in: the
    /// trail is read in terminals and by tools that split lines, and a CN or
    /// user name may hold a newline or a terminal escape. Escaping moves a
    /// clean string through without copying it.
    pub(crate) async fn write_audit(
        &self,
        records: &mut Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        let replica = self.inner.replica.get();
        for record in records.iter_mut() {
            record.subject = escape_owned(std::mem::take(&mut record.subject));
            record.artifact = escape_owned(std::mem::take(&mut record.artifact));
            // Validated by the config as letters, digits, '.', '_' and '-'.
            record.replica = replica.cloned();
        }
        Ok(self.inner.index.write_audit(records).await?)
    }

    /// Newest first.
    pub(super) async fn audit_query(
        &self,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // Subjects are stored escaped; escaping is idempotent, so the raw
        // name and the name as `mirror audit` prints it both match.
        let escaped = query
            .subject
            .as_deref()
            .map(|subject| crate::escape::escape(subject).into_owned());
        let query = AuditQuery {
            subject: escaped,
            ..query.clone()
        };
        Ok(self.inner.index.audit_query(&query).await?)
    }

    /// Names the replica this store serves as (`[cluster] replica`) in every
    /// audit row it writes from now on; set once, at start.
    pub fn set_replica(&self, name: &str) {
        let _ = self.inner.replica.set(name.to_owned());
    }

    /// Prunes records older than `retention`, hourly while this process
    /// leads upkeep, until `stop`.
    pub(super) fn spawn_audit_retention(
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
                if !store.leads_upkeep().await {
                    continue;
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
    pub(super) async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(self.inner.index.prune_audit(before_ms).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditEntry;

    fn entry<'a>(
        subject: &'a str,
        artifact: &'a str,
        digest: &'a str,
        at_ms: i64,
    ) -> AuditEntry<'a> {
        AuditEntry {
            at_ms,
            identity: "cert",
            subject,
            serial: Some("abc"),
            peer: "127.0.0.1:1",
            protocol: "oci",
            action: "read",
            artifact,
            digest: Some(digest),
            outcome: "hit",
            status: 200,
        }
    }

    #[tokio::test]
    async fn recorded_requests_are_written_and_found_by_subject_digest_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        for i in 0..1200 {
            let digest = format!("sha256:{i}");
            let artifact = format!("library/alpine@{digest}");
            log.record(entry(
                if i % 2 == 0 { "alice" } else { "bob" },
                &artifact,
                &digest,
                i,
            ))
            .await;
        }
        drop(log);
        writer.await.unwrap();
        let query = |q: AuditQuery| {
            let store = store.clone();
            async move { store.audit_query(&q).await.unwrap() }
        };
        let all = query(AuditQuery {
            limit: 5000,
            ..Default::default()
        })
        .await;
        assert_eq!(all.len(), 1200);
        let who = query(AuditQuery {
            digest: Some("sha256:7".into()),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(who.len(), 1);
        assert_eq!(who[0].subject, "bob");
        let alice_late = query(AuditQuery {
            subject: Some("alice".into()),
            since_ms: Some(1000),
            limit: 1000,
            ..Default::default()
        })
        .await;
        assert_eq!(alice_late.len(), 100);
        assert_eq!(store.prune_audit(600).await.unwrap(), 600);
    }

    #[tokio::test]
    async fn rows_name_the_replica_once_it_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let write = |at_ms| {
            let store = store.clone();
            async move {
                let (log, writer) = store.start_audit();
                log.record(entry("alice", "app@sha256:1", "sha256:1", at_ms))
                    .await;
                drop(log);
                writer.await.unwrap();
            }
        };
        write(1_000).await;
        store.set_replica("m1");
        write(2_000).await;
        let rows = store
            .audit_query(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let replicas: Vec<Option<&str>> = rows.iter().map(|r| r.replica.as_deref()).collect();
        assert_eq!(replicas, [Some("m1"), None]);
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert!(
            json.get("replica").is_none(),
            "a single node's JSON is unchanged"
        );
    }

    #[tokio::test]
    async fn identical_requests_in_one_second_become_one_row_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        for at_ms in [10_000, 10_400, 10_999, 11_000] {
            log.record(entry("alice", "app@sha256:1", "sha256:1", at_ms))
                .await;
        }
        log.record(entry("bob", "app@sha256:1", "sha256:1", 10_500))
            .await;
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

    #[tokio::test]
    async fn subjects_are_stored_escaped_and_found_by_the_raw_or_the_printed_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        let evil = "evil\n2026-01-01 INFO forged\x1b[31m";
        log.record(entry(evil, "m@v1\u{202e}", "sha256:1", 1_000))
            .await;
        drop(log);
        writer.await.unwrap();
        let printed = "evil\\n2026-01-01 INFO forged\\u{1b}[31m";
        for who in [evil, printed] {
            let rows = store
                .audit_query(&AuditQuery {
                    subject: Some(who.into()),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "{who:?}");
            assert_eq!(rows[0].subject, printed);
            assert_eq!(rows[0].artifact, "m@v1\\u{202e}");
        }
    }

    #[tokio::test]
    async fn a_full_table_makes_requests_wait_for_the_writer_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (log, writer) = store.start_audit();
        let mut tasks = Vec::new();
        for task in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..15_000 {
                    let artifact = format!("m{task}@{i}");
                    log.record(entry("alice", &artifact, "sha256:x", 5_000))
                        .await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        drop(log);
        writer.await.unwrap();
        assert_eq!(store.inner.index.audited_requests().await.unwrap(), 60_000);
    }
}
