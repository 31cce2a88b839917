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

/// Items and bytes per protocol and upstream.
const GROUP_STATS_SQL: &str = "SELECT 'blob' AS protocol, CASE WHEN hosted = 1 THEN 'hosted' ELSE 'cached' END AS upstream, \
     COUNT(*) AS items, COALESCE(SUM(size), 0) AS bytes FROM blobs GROUP BY hosted";

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
            "SELECT outcome, COUNT(*) AS n FROM audit WHERE action = 'read' GROUP BY outcome",
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
