//! OCI manifests, tags and blob links per repository; a write that
//! replaces or deletes one notifies in its transaction (`notify`).

use sqlx::Row;

use super::PgIndex;
use super::notify::notify;
use crate::store::Change;
use crate::store::index::{IndexError, OciIndex, indexed_digest, now_secs};
use crate::store::{Digest, ManifestRow, NewManifest, ReferrerRow, RepoKey};

/// Set or deleted, a tag's copies elsewhere go.
fn tag_change(repo: &str, tag: &str) -> Change {
    Change::Tag {
        repo: RepoKey::new(repo.to_owned()),
        tag: tag.to_owned(),
    }
}

impl OciIndex for PgIndex {
    async fn manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, IndexError> {
        let row = sqlx::query(
            "SELECT media_type, size FROM oci_manifests WHERE repo = $1 AND digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| ManifestRow {
            digest: digest.clone(),
            media_type: row.get(0),
            size: row.get::<i64, _>(1) as u64,
        }))
    }

    async fn tag(&self, repo: &str, tag: &str) -> Result<Option<(ManifestRow, i64)>, IndexError> {
        let row = sqlx::query(
            "SELECT t.digest, m.media_type, m.size, t.checked_at FROM oci_tags t
             JOIN oci_manifests m ON m.repo = t.repo AND m.digest = t.digest
             WHERE t.repo = $1 AND t.tag = $2",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let manifest = ManifestRow {
            digest: indexed_digest(row.get(0))?,
            media_type: row.get(1),
            size: row.get::<i64, _>(2) as u64,
        };
        Ok(Some((manifest, row.get(3))))
    }

    async fn put_manifest(&self, manifest: &NewManifest<'_>) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO oci_manifests (repo, digest, media_type, size, subject, artifact_type, annotations, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(manifest.repo.as_str())
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
                "INSERT INTO oci_manifest_blobs (repo, manifest, digest, size) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(manifest.repo.as_str())
            .bind(manifest.digest.as_str())
            .bind(digest.as_str())
            .bind(i64::try_from(*size).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn described_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(size) FROM oci_manifest_blobs WHERE repo = $1 AND digest = $2",
        )
        .bind(repo)
        .bind(digest.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(size.map(|s| s.max(0) as u64))
    }

    async fn set_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO oci_tags (repo, tag, digest, checked_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, tag) DO UPDATE SET digest = $3, checked_at = $4",
        )
        .bind(repo)
        .bind(tag)
        .bind(digest.to_string())
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, &tag_change(repo, tag)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM oci_tags WHERE repo = $1 AND tag = $2")
            .bind(repo)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            notify(&mut tx, &tag_change(repo, tag)).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM oci_manifests WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            let change = Change::Manifest {
                repo: RepoKey::new(repo.to_owned()),
                digest: digest.clone(),
            };
            notify(&mut tx, &change).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, IndexError> {
        let tags = sqlx::query_scalar(
            "SELECT tag FROM oci_tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(n.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(tags)
    }

    async fn has_repo(&self, repo: &str) -> Result<bool, IndexError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM oci_manifests WHERE repo = $1 UNION ALL SELECT 1 FROM oci_repo_blobs WHERE repo = $1 LIMIT 1",
        )
        .bind(repo)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, IndexError> {
        let repos = sqlx::query_scalar(
            "SELECT DISTINCT repo FROM oci_manifests WHERE repo > $1 ORDER BY repo LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(repos)
    }

    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<ReferrerRow>, IndexError> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM oci_manifests
             WHERE repo = $1 AND subject = $2 ORDER BY created_at, digest",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_all(&self.pool)
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

    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM oci_repo_blobs r JOIN blobs b ON b.digest = r.digest
             WHERE r.repo = $1 AND r.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn link_blob(&self, repo: &str, digest: &Digest) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO oci_repo_blobs (repo, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(digest.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM oci_repo_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            let change = Change::RepoBlob {
                repo: RepoKey::new(repo.to_owned()),
                digest: digest.clone(),
            };
            notify(&mut tx, &change).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
