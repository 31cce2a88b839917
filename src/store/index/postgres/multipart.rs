//! The journal of multipart uploads in flight to the shared bucket (see
//! `blob_store::UploadJournal`).

use super::PgIndex;
use crate::store::index::IndexError;

impl PgIndex {
    pub(crate) async fn record_multipart(
        &self,
        upload_id: &str,
        object_key: &str,
        at: i64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO multipart_uploads (upload_id, object_key, touched_at) VALUES ($1, $2, $3) \
             ON CONFLICT (upload_id) DO UPDATE SET touched_at = $3",
        )
        .bind(upload_id)
        .bind(object_key)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn touch_multipart(&self, upload_id: &str, at: i64) -> Result<(), IndexError> {
        sqlx::query("UPDATE multipart_uploads SET touched_at = $2 WHERE upload_id = $1")
            .bind(upload_id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn forget_multipart(&self, upload_id: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM multipart_uploads WHERE upload_id = $1")
            .bind(upload_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uploads last touched before `before`, as (upload id, object key).
    pub(crate) async fn idle_multiparts(
        &self,
        before: i64,
    ) -> Result<Vec<(String, String)>, IndexError> {
        Ok(sqlx::query_as(
            "SELECT upload_id, object_key FROM multipart_uploads WHERE touched_at < $1 \
             ORDER BY touched_at LIMIT 1000",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?)
    }
}
