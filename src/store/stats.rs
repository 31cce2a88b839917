//! What is in the store, for `mirror cache stats`: every blob counted once, in
//! one group per protocol and upstream, the totals as their sums, and the hit
//! ratio from the audit trail.

use super::index::{AuditIndex, UpkeepIndex};
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

impl Store {
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let index = &self.inner.index;
        let groups = index.group_stats(HOSTED, UNREFERENCED, SHARED).await?;
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
        for (outcome, n) in index.read_outcomes().await? {
            match outcome.as_str() {
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
    use crate::store::{GoFile, ModuleKey, VersionKey};

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
            .go()
            .put_file(
                ModuleKey::new("example.com/m"),
                VersionKey::new("v1.0.0"),
                GoFile::Zip,
                &zip,
                12,
            )
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
