//! What is in the store, for `mirror cache stats`: every blob counted once, in
//! one group per protocol and upstream, the totals as their sums, and the hit
//! ratio from the audit trail.

use sqlx::Row;

use super::{Store, StoreError, StoreTotals};

/// The blobs one group holds: stored once, counted once.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GroupStats {
    pub protocol: String,
    pub upstream: String,
    pub blobs: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    /// The sums of `groups`, so the header and the rows cannot disagree.
    pub totals: StoreTotals,
    pub groups: Vec<GroupStats>,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
}

/// Label of the group of blobs that more than one group refers to (a layer
/// two upstreams serve, a file Go and OCI share), and of blobs nothing refers
/// to any more (the next sweep removes them).
pub const SHARED: &str = "(shared)";
pub const UNREFERENCED: &str = "(unreferenced)";
pub const HOSTED: &str = "(hosted)";

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

impl Store {
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut groups = Vec::new();
        for row in sqlx::query(GROUP_STATS_SQL)
            .bind(HOSTED)
            .bind(UNREFERENCED)
            .bind(SHARED)
            .fetch_all(&self.inner.index.read)
            .await?
        {
            groups.push(GroupStats {
                protocol: row.try_get("protocol")?,
                upstream: row.try_get("owner")?,
                blobs: row.try_get::<i64, _>("blobs")? as u64,
                bytes: row.try_get::<i64, _>("bytes")? as u64,
            });
        }
        let mut totals = StoreTotals::default();
        for group in &groups {
            totals.blobs += group.blobs;
            totals.bytes += group.bytes;
            if group.upstream == HOSTED {
                totals.hosted_blobs += group.blobs;
                totals.hosted_bytes += group.bytes;
            }
        }
        let mut stats = StoreStats {
            totals,
            groups,
            ..StoreStats::default()
        };
        let outcomes = sqlx::query(
            "SELECT outcome, SUM(count) AS n FROM audit WHERE action = 'read' GROUP BY outcome",
        )
        .fetch_all(&self.inner.index.read)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GoFile;

    #[tokio::test]
    async fn every_blob_is_counted_once_and_the_groups_add_up_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let layer = store
            .put_bytes(b"a layer two repos share", false)
            .await
            .unwrap();
        let both = store
            .put_bytes(b"served by two upstreams", false)
            .await
            .unwrap();
        let zip = store.put_bytes(b"a module zip", false).await.unwrap();
        let pushed = store.put_bytes(b"pushed here", true).await.unwrap();
        store
            .put_bytes(b"nothing refers to me", false)
            .await
            .unwrap();
        for (repo, digest) in [
            ("docker.io/library/a", &layer),
            ("docker.io/library/b", &layer),
            ("docker.io/library/a", &both),
            ("ghcr.io/org/c", &both),
            ("team/app", &pushed),
        ] {
            store.oci_link_blob(repo, digest).await.unwrap();
        }
        store
            .put_go_file("example.com/m", "v1.0.0", GoFile::Zip, &zip, 12)
            .await
            .unwrap();

        let stats = store.stats().await.unwrap();
        let groups: Vec<(&str, &str, u64)> = stats
            .groups
            .iter()
            .map(|g| (g.protocol.as_str(), g.upstream.as_str(), g.blobs))
            .collect();
        assert_eq!(
            groups,
            [
                ("go", "module zip files", 1),
                ("oci", HOSTED, 1),
                ("oci", "docker.io", 1),
                ("-", SHARED, 1),
                ("-", UNREFERENCED, 1),
            ]
        );
        let stored = store.totals().await.unwrap();
        assert_eq!(stats.totals, stored, "the rows add up to the store");
        store.close().await;
    }
}
