//! The audit trail's rows: batched inserts, queries, pruning, and the read
//! outcomes `stats` counts.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::SqliteIndex;
use crate::store::index::{AuditIndex, IndexError};
use crate::store::{AuditQuery, AuditRecord};

/// Rows per INSERT statement (13 parameters each, far below SQLite's limit).
const BATCH: usize = 500;
/// The row counts an INSERT is prepared for: a batch is cut into these so
/// every statement comes from the cache instead of being parsed (a parse costs
/// about as much per row as the insert itself).
const STATEMENT_ROWS: [usize; 4] = [BATCH, 50, 5, 1];

impl AuditIndex for SqliteIndex {
    /// In INSERTs of `STATEMENT_ROWS` rows; the strings are moved into the
    /// statement, not copied.
    async fn write_audit(&self, records: &mut Vec<AuditRecord>) -> Result<(), IndexError> {
        let mut tx = self.write.begin().await?;
        while !records.is_empty() {
            let take = STATEMENT_ROWS
                .into_iter()
                .find(|&rows| rows <= records.len())
                .unwrap_or(1);
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO audit (at_ms, identity, subject, serial, peer, protocol, action, artifact, digest, outcome, status, count, replica) ",
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
                    .push_bind(r.count as i64)
                    .push_bind(r.replica);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, IndexError> {
        let mut select: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT at_ms, identity, subject, serial, peer, protocol, action, artifact, digest, outcome, status, count, replica \
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
        let rows = select.build().fetch_all(&self.read).await?;
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
                    replica: row.try_get("replica")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(IndexError::from)
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, IndexError> {
        let done = sqlx::query("DELETE FROM audit WHERE at_ms < ?1")
            .bind(before_ms)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn read_outcomes(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let rows = sqlx::query(
            "SELECT outcome, SUM(count) AS n FROM audit WHERE action = 'read' GROUP BY outcome",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("outcome")?,
                    row.try_get::<i64, _>("n")? as u64,
                ))
            })
            .collect()
    }
}
