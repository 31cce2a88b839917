//! What is in the store, for `mirror cache stats`: totals, a breakdown per
//! protocol and upstream, and the hit ratio from the audit trail.

use sqlx::Row;

use super::{Store, StoreError, StoreTotals};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GroupStats {
    pub protocol: String,
    pub upstream: String,
    pub items: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    pub totals: StoreTotals,
    pub groups: Vec<GroupStats>,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
}

/// Items and bytes per protocol and upstream (a blob two repositories share
/// counts in both).
const GROUP_STATS_SQL: &str = "\
    SELECT 'go' AS protocol, 'module ' || kind || ' files' AS upstream, COUNT(*) AS items, \
           COALESCE(SUM(size), 0) AS bytes FROM go_files GROUP BY kind \
    UNION ALL \
    SELECT 'go', 'sumdb ' || sumdb || ' tiles', COUNT(*), COALESCE(SUM(size), 0) FROM go_sumdb_tiles GROUP BY sumdb \
    UNION ALL \
    SELECT 'oci', CASE WHEN b.hosted = 1 THEN '(hosted)' ELSE substr(l.repo, 1, instr(l.repo, '/') - 1) END AS owner, \
           COUNT(*), COALESCE(SUM(b.size), 0) \
    FROM (SELECT repo, digest FROM oci_repo_blobs UNION SELECT repo, digest FROM oci_manifests) AS l \
    JOIN blobs AS b ON b.digest = l.digest GROUP BY owner \
    ORDER BY 1, 2";

impl Store {
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let totals = self.totals().await?;
        let mut groups = Vec::new();
        for row in sqlx::query(GROUP_STATS_SQL)
            .fetch_all(&self.inner.db.read)
            .await?
        {
            groups.push(GroupStats {
                protocol: row.try_get("protocol")?,
                upstream: row.try_get("upstream")?,
                items: row.try_get::<i64, _>("items")? as u64,
                bytes: row.try_get::<i64, _>("bytes")? as u64,
            });
        }
        let mut stats = StoreStats {
            totals,
            groups,
            ..StoreStats::default()
        };
        let outcomes = sqlx::query(
            "SELECT outcome, SUM(count) AS n FROM audit WHERE action = 'read' GROUP BY outcome",
        )
        .fetch_all(&self.inner.db.read)
        .await?;
        for row in outcomes {
            let n = row.try_get::<i64, _>("n")? as u64;
            match row.try_get::<String, _>("outcome")?.as_str() {
                "hit" => stats.hits = n,
                "miss" => stats.misses = n,
                "stale" => stats.stale = n,
                _ => {}
            }
        }
        Ok(stats)
    }
}
