//! What the store's unit tests set or read in the index directly, to stage
//! states no public path makes (an old access time, an unreadable hash state).

use super::SqliteIndex;

impl SqliteIndex {
    /// The requests every audit row stands for, summed.
    pub(crate) async fn audited_requests(&self) -> i64 {
        sqlx::query_scalar("SELECT SUM(count) FROM audit")
            .fetch_one(&self.read)
            .await
            .unwrap()
    }
}
