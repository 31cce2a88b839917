//! Push sessions' rows: owner, acknowledged size and hash state.

use super::PgIndex;
use crate::store::index::{IndexError, UploadIndex, now_secs};
use crate::store::{RepoKey, UploadOwner, UploadRow};

impl UploadIndex for PgIndex {
    /// SQLite's single writer makes count-and-insert atomic; here two replicas
    /// could both count below the quota, so the owner's sessions are counted
    /// under a transaction-scoped advisory lock on the owner.
    async fn begin_upload(
        &self,
        id: &str,
        repo_key: &str,
        owner: &UploadOwner,
        quota: u32,
    ) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("uploads owner {}", owner.as_str()))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO uploads (id, repo_key, owner, size, touched_at) \
             SELECT $1, $2, $3, 0, $4 \
             WHERE (SELECT COUNT(*) FROM uploads WHERE owner = $3) < $5",
        )
        .bind(id)
        .bind(repo_key)
        .bind(owner.as_str())
        .bind(now_secs())
        .bind(i64::from(quota))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted > 0)
    }

    async fn upload_progress(
        &self,
        id: &str,
        size: u64,
        hash_state: &[u8],
    ) -> Result<bool, IndexError> {
        let updated = sqlx::query(
            "UPDATE uploads SET size = $2, hash_state = $3, touched_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(size as i64)
        .bind(hash_state)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn find_upload(&self, id: &str) -> Result<Option<UploadRow>, IndexError> {
        let row: Option<(String, String, i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT repo_key, owner, size, hash_state FROM uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(repo_key, owner, size, hash_state)| UploadRow {
            repo_key: RepoKey::new(repo_key),
            owner: UploadOwner::new(owner),
            size: size.max(0) as u64,
            hash_state,
        }))
    }

    async fn end_upload(&self, id: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload_sessions(&self) -> Result<Vec<(String, i64)>, IndexError> {
        let rows = sqlx::query_as("SELECT id, touched_at FROM uploads")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}

/// Session parts: only a shared index has them (see `Uploads`).
impl PgIndex {
    /// Records a chunk of `id` that starts at `start`, after which the
    /// session holds `size` bytes with `hash_state`. Only from the size the
    /// row acknowledges, so a writer that lost its turn cannot append out of
    /// order; `false` when the session is gone or moved on.
    pub(crate) async fn upload_part(
        &self,
        id: &str,
        start: u64,
        size: u64,
        hash_state: &[u8],
    ) -> Result<bool, IndexError> {
        let updated = sqlx::query(
            "UPDATE uploads SET size = $3, hash_state = $4, touched_at = $5, \
             parts = array_append(parts, $2) WHERE id = $1 AND size = $2",
        )
        .bind(id)
        .bind(start as i64)
        .bind(size as i64)
        .bind(hash_state)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// The first byte of each of the session's chunks, in order.
    pub(crate) async fn upload_parts(&self, id: &str) -> Result<Vec<u64>, IndexError> {
        let row: Option<(Vec<i64>,)> = sqlx::query_as("SELECT parts FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|(parts,)| parts.into_iter().map(|p| p.max(0) as u64).collect())
            .unwrap_or_default())
    }
}
