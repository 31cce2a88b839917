//! What eviction, sweeps, `verify` and `stats` read across all blob rows.

use std::collections::HashSet;

use sqlx::Row;

use super::SqliteIndex;
use crate::store::index::{Candidate, IndexError, LeaderGuard, UpkeepIndex};
use crate::store::{GroupStats, StoreTotals};

/// Digests per `IN (...)` list, far below SQLite's parameter limit.
const IN_LIST: usize = 500;

/// Every blob in exactly one group: Go files by kind, sumdb tiles by database,
/// image content by upstream, pushed content as hosted, and blobs that several
/// of those refer to as shared. So the groups add up to the store.
const GROUP_STATS_SQL: &str = "\
    WITH refs AS ( \
        SELECT digest, 'go' AS protocol, 'module ' || kind || ' files' AS owner FROM go_files \
        UNION SELECT digest, 'go', 'sumdb ' || sumdb || ' tiles' FROM go_sumdb_tiles \
        UNION SELECT digest, 'oci', substr(repo, 1, instr(repo || '/', '/') - 1) FROM oci_repo_blobs \
        UNION SELECT digest, 'oci', substr(repo, 1, instr(repo || '/', '/') - 1) FROM oci_manifests \
    ), owned AS ( \
        SELECT b.size, \
            CASE WHEN b.hosted = 1 THEN 'oci' WHEN COUNT(r.digest) = 1 THEN MIN(r.protocol) ELSE '-' END \
                AS protocol, \
            CASE WHEN b.hosted = 1 THEN ?1 WHEN COUNT(r.digest) = 0 THEN ?2 \
                 WHEN COUNT(r.digest) = 1 THEN MIN(r.owner) ELSE ?3 END AS owner \
        FROM blobs AS b LEFT JOIN refs AS r ON r.digest = b.digest GROUP BY b.digest \
    ) \
    SELECT protocol, owner, COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes FROM owned \
    GROUP BY protocol, owner ORDER BY protocol = '-', protocol, owner";

impl UpkeepIndex for SqliteIndex {
    async fn totals(&self) -> Result<StoreTotals, IndexError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes,
                    COALESCE(SUM(hosted), 0) AS hosted_blobs,
                    COALESCE(SUM(CASE WHEN hosted = 1 THEN size ELSE 0 END), 0) AS hosted_bytes
             FROM blobs",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(StoreTotals {
            blobs: row.try_get::<i64, _>("blobs")? as u64,
            bytes: row.try_get::<i64, _>("bytes")? as u64,
            hosted_blobs: row.try_get::<i64, _>("hosted_blobs")? as u64,
            hosted_bytes: row.try_get::<i64, _>("hosted_bytes")? as u64,
        })
    }

    async fn eviction_candidates(
        &self,
        (accessed_at, digest): (i64, &str),
        limit: u32,
    ) -> Result<Vec<Candidate>, IndexError> {
        let rows = sqlx::query(
            "SELECT digest, size, accessed_at FROM blobs
             WHERE hosted = 0 AND (accessed_at, digest) > (?1, ?2)
             ORDER BY accessed_at, digest LIMIT ?3",
        )
        .bind(accessed_at)
        .bind(digest)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Candidate {
                    digest: row.try_get("digest")?,
                    size: row.try_get::<i64, _>("size")? as u64,
                    accessed_at: row.try_get("accessed_at")?,
                })
            })
            .collect()
    }

    async fn blobs_after(
        &self,
        digest: &str,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, IndexError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT digest, size FROM blobs WHERE digest > ?1 ORDER BY digest LIMIT ?2",
        )
        .bind(digest)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(digest, size)| (digest, size as u64))
            .collect())
    }

    async fn indexed_among(&self, digests: &[&str]) -> Result<HashSet<String>, IndexError> {
        let mut known = HashSet::new();
        for chunk in digests.chunks(IN_LIST) {
            let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT digest FROM blobs WHERE digest IN (",
            );
            let mut list = query.separated(", ");
            for digest in chunk {
                list.push_bind(*digest);
            }
            query.push(")");
            known.extend(
                query
                    .build()
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .filter_map(|row| row.try_get::<String, _>("digest").ok()),
            );
        }
        Ok(known)
    }

    async fn group_stats(
        &self,
        hosted: &str,
        unreferenced: &str,
        shared: &str,
    ) -> Result<Vec<GroupStats>, IndexError> {
        let rows = sqlx::query(GROUP_STATS_SQL)
            .bind(hosted)
            .bind(unreferenced)
            .bind(shared)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(GroupStats {
                    protocol: row.try_get("protocol")?,
                    upstream: row.try_get("owner")?,
                    blobs: row.try_get::<i64, _>("blobs")? as u64,
                    bytes: row.try_get::<i64, _>("bytes")? as u64,
                })
            })
            .collect()
    }

    /// The index is this process's alone: nobody else runs its upkeep.
    async fn try_lead(&self) -> Result<Option<LeaderGuard>, IndexError> {
        Ok(Some(LeaderGuard::Alone))
    }
}
