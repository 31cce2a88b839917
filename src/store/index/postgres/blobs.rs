//! Blob rows, their access times and the deletion generation.

use super::PgIndex;
use super::notify::notify;
use crate::store::Change;
use crate::store::Digest;
use crate::store::generation::BlobRows;
use crate::store::index::{BlobIndex, IndexError, now_secs};

impl BlobIndex for PgIndex {
    async fn insert_blob(
        &self,
        digest: &Digest,
        size: u64,
        hosted: bool,
    ) -> Result<(), IndexError> {
        let now = now_secs();
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, accessed_at, hosted) VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (digest) DO UPDATE SET accessed_at = $3, hosted = GREATEST(blobs.hosted, $4)",
        )
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now)
        .bind(i64::from(hosted))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, IndexError> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn mark_hosted(&self, digest: &Digest) -> Result<bool, IndexError> {
        let done = sqlx::query("UPDATE blobs SET hosted = 1 WHERE digest = $1")
            .bind(digest.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One statement over the whole batch: atomic like SQLite's transaction,
    /// and two replicas flushing overlapping batches lock rows in one scan
    /// each instead of row by row in hash order, which could deadlock.
    async fn record_access(&self, digests: &[Digest], at: i64) -> Result<(), IndexError> {
        let digests: Vec<String> = digests.iter().map(Digest::to_string).collect();
        sqlx::query("UPDATE blobs SET accessed_at = $1 WHERE digest = ANY($2)")
            .bind(at)
            .bind(digests)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_blob(&self, digest: &str, rows: BlobRows) -> Result<Option<i64>, IndexError> {
        let sql = match rows {
            BlobRows::Cached => "DELETE FROM blobs WHERE digest = $1 AND hosted = 0",
            BlobRows::Any => "DELETE FROM blobs WHERE digest = $1",
        };
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(sql)
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        let generation: i64 = sqlx::query_scalar(
            "UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        notify(&mut tx, &Change::Generation(generation)).await?;
        tx.commit().await?;
        Ok(Some(generation))
    }

    async fn generation(&self) -> Result<i64, IndexError> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }
}

/// Objects whose rows went, kept for a grace period (see `evict`).
impl PgIndex {
    pub(crate) async fn doom_blob(&self, digest: &str, at: i64) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO doomed_blobs (digest, doomed_at) VALUES ($1, $2) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When each of `digests` was doomed, for those that are.
    pub(crate) async fn doomed_among(
        &self,
        digests: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, IndexError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT digest, doomed_at FROM doomed_blobs WHERE digest = ANY($1)")
                .bind(digests)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub(crate) async fn forget_doomed(&self, digest: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM doomed_blobs WHERE digest = $1")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
