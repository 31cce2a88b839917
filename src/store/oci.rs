//! OCI index SQL: manifests, tags and blob links per repository. All OCI SQL
//! lives here; the `oci` module never sees a pool. Hits read through the
//! reader pool; writes go through the single writer.

use sqlx::Row;

use super::index::{indexed_digest, now_secs};
use super::{Digest, Store, StoreError};

/// A manifest stored for a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What the referrers API lists for one manifest.
#[derive(Clone, Debug)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// A manifest to index, with what the referrers API needs from it.
pub struct NewManifest<'a> {
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub subject: Option<&'a Digest>,
    pub artifact_type: Option<&'a str>,
    pub annotations: Option<&'a str>,
    /// The blobs it names (config, layers) with the size each descriptor gives.
    pub blobs: &'a [(Digest, u64)],
}

impl Store {
    pub async fn oci_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, StoreError> {
        let row = sqlx::query(
            "SELECT media_type, size FROM oci_manifests WHERE repo = ?1 AND digest = ?2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.inner.index.read)
        .await?;
        Ok(row.map(|row| ManifestRow {
            digest: digest.clone(),
            media_type: row.get(0),
            size: row.get::<i64, _>(1) as u64,
        }))
    }

    /// A tag's manifest and when upstream last confirmed it (unix seconds).
    pub async fn oci_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<(ManifestRow, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT t.digest, m.media_type, m.size, t.checked_at FROM oci_tags t
             JOIN oci_manifests m ON m.repo = t.repo AND m.digest = t.digest
             WHERE t.repo = ?1 AND t.tag = ?2",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&self.inner.index.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let manifest = ManifestRow {
            digest: indexed_digest(row.get(0))?,
            media_type: row.get(1),
            size: row.get::<i64, _>(2) as u64,
        };
        Ok(Some((manifest, row.get(3))))
    }

    /// Indexes a stored manifest for a repository, with the blob sizes it
    /// states. Idempotent.
    pub async fn oci_put_manifest(&self, manifest: &NewManifest<'_>) -> Result<(), StoreError> {
        let mut tx = self.inner.index.write.begin().await?;
        sqlx::query(
            "INSERT INTO oci_manifests (repo, digest, media_type, size, subject, artifact_type, annotations, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(manifest.repo)
        .bind(manifest.digest.to_string())
        .bind(manifest.media_type)
        .bind(manifest.size as i64)
        .bind(manifest.subject.map(Digest::to_string))
        .bind(manifest.artifact_type)
        .bind(manifest.annotations)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        for (digest, size) in manifest.blobs {
            sqlx::query(
                "INSERT INTO oci_manifest_blobs (repo, manifest, digest, size) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(manifest.repo)
            .bind(manifest.digest.as_str())
            .bind(digest.as_str())
            .bind(i64::try_from(*size).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The largest size any of a repository's manifests gives a blob, if one
    /// names it: more than that is not the blob those manifests mean.
    pub async fn oci_described_size(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(size) FROM oci_manifest_blobs WHERE repo = ?1 AND digest = ?2",
        )
        .bind(repo)
        .bind(digest.as_str())
        .fetch_one(&self.inner.index.read)
        .await?;
        Ok(size.map(|s| s.max(0) as u64))
    }

    /// Points a tag at a manifest (already indexed for the repo), confirmed now.
    pub async fn oci_set_tag(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oci_tags (repo, tag, digest, checked_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (repo, tag) DO UPDATE SET digest = ?3, checked_at = ?4",
        )
        .bind(repo)
        .bind(tag)
        .bind(digest.to_string())
        .bind(now_secs())
        .execute(&self.inner.index.write)
        .await?;
        Ok(())
    }

    pub async fn oci_delete_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM oci_tags WHERE repo = ?1 AND tag = ?2")
            .bind(repo)
            .bind(tag)
            .execute(&self.inner.index.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a manifest from a repository (and the tags pointing at it).
    pub async fn oci_delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM oci_manifests WHERE repo = ?1 AND digest = ?2")
            .bind(repo)
            .bind(digest.to_string())
            .execute(&self.inner.index.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    pub async fn oci_tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tags = sqlx::query_scalar(
            "SELECT tag FROM oci_tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(n.min(i64::MAX as usize) as i64)
        .fetch_all(&self.inner.index.read)
        .await?;
        Ok(tags)
    }

    pub async fn oci_has_repo(&self, repo: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM oci_manifests WHERE repo = ?1 UNION ALL SELECT 1 FROM oci_repo_blobs WHERE repo = ?1 LIMIT 1",
        )
        .bind(repo)
        .fetch_optional(&self.inner.index.read)
        .await?;
        Ok(found.is_some())
    }

    /// Repositories holding manifests, in lexical order, after `last`, at most `n`.
    pub async fn oci_catalog(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let repos = sqlx::query_scalar(
            "SELECT DISTINCT repo FROM oci_manifests WHERE repo > ?1 ORDER BY repo LIMIT ?2",
        )
        .bind(last.unwrap_or(""))
        .bind(n.min(i64::MAX as usize) as i64)
        .fetch_all(&self.inner.index.read)
        .await?;
        Ok(repos)
    }

    /// Manifests of a repository whose `subject` is `digest`.
    pub async fn oci_referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Vec<ReferrerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM oci_manifests
             WHERE repo = ?1 AND subject = ?2 ORDER BY created_at, digest",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_all(&self.inner.index.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ReferrerRow {
                    digest: indexed_digest(row.get(0))?,
                    media_type: row.get(1),
                    size: row.get::<i64, _>(2) as u64,
                    artifact_type: row.get(3),
                    annotations: row.get(4),
                })
            })
            .collect()
    }

    /// The size of a blob a repository holds, if it holds it.
    pub async fn oci_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM oci_repo_blobs r JOIN blobs b ON b.digest = r.digest
             WHERE r.repo = ?1 AND r.digest = ?2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.inner.index.read)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    /// Records that a repository holds a (stored, indexed) blob. Idempotent.
    pub async fn oci_link_blob(&self, repo: &str, digest: &Digest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oci_repo_blobs (repo, digest) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(digest.to_string())
        .execute(&self.inner.index.write)
        .await?;
        Ok(())
    }

    pub async fn oci_unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM oci_repo_blobs WHERE repo = ?1 AND digest = ?2")
            .bind(repo)
            .bind(digest.to_string())
            .execute(&self.inner.index.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn described_sizes_are_the_largest_a_repository_states_and_go_with_their_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let layer = Digest::sha256_of(b"layer");
        let mut manifests = Vec::new();
        for (i, size) in [(0u8, 100), (1, 250)] {
            let digest = store.put_bytes(&[i; 10], false).await.unwrap();
            let blobs = [(layer.clone(), size)];
            store
                .oci_put_manifest(&NewManifest {
                    repo: "up/app",
                    digest: &digest,
                    media_type: "application/vnd.oci.image.manifest.v1+json",
                    size: 10,
                    subject: None,
                    artifact_type: None,
                    annotations: None,
                    blobs: &blobs,
                })
                .await
                .unwrap();
            manifests.push(digest);
        }
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            Some(250)
        );
        assert_eq!(
            store.oci_described_size("up/other", &layer).await.unwrap(),
            None
        );
        store
            .oci_delete_manifest("up/app", &manifests[1])
            .await
            .unwrap();
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            Some(100)
        );
        store.evict_to(0, false).await.unwrap();
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            None
        );
    }
}
