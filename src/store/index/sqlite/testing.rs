//! What the store's unit tests set or read in the index directly, to stage
//! states no public path makes (an old access time, an unreadable hash state).

use super::SqliteIndex;
use crate::store::Digest;
use crate::store::index::IndexError;

impl SqliteIndex {
    pub(crate) async fn set_accessed_at(
        &self,
        digest: &Digest,
        accessed_at: i64,
    ) -> Result<(), IndexError> {
        sqlx::query("UPDATE blobs SET accessed_at = ?1 WHERE digest = ?2")
            .bind(accessed_at)
            .bind(digest.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_upload_hash_state(
        &self,
        id: &str,
        state: &[u8],
    ) -> Result<(), IndexError> {
        sqlx::query("UPDATE uploads SET hash_state = ?2 WHERE id = ?1")
            .bind(id)
            .bind(state)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_upload_touched_at(
        &self,
        id: &str,
        touched_at: i64,
    ) -> Result<(), IndexError> {
        sqlx::query("UPDATE uploads SET touched_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(touched_at)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The requests every audit row stands for, summed.
    pub(crate) async fn audited_requests(&self) -> Result<i64, IndexError> {
        Ok(sqlx::query_scalar("SELECT SUM(count) FROM audit")
            .fetch_one(&self.read)
            .await?)
    }
}
