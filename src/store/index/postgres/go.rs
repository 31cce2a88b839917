//! Go module files, sumdb tiles and the expiring answers.

use sqlx::Row;

use super::PgIndex;
use super::notify::notify;
use crate::store::Change;
use crate::store::index::{GoIndex, IndexError, indexed_digest, now_secs};
use crate::store::{Digest, GoFile, StoredAnswer};

/// A `(digest, size)` row as the caller wants it.
fn located(row: Option<(String, i64)>) -> Result<Option<(Digest, u64)>, IndexError> {
    row.map(|(digest, size)| Ok((indexed_digest(&digest)?, size.max(0) as u64)))
        .transpose()
}

/// `status, body, fetched_at` from column `first` on.
fn stored_answer(row: &sqlx::postgres::PgRow, first: usize) -> Result<StoredAnswer, IndexError> {
    Ok(StoredAnswer {
        status: u16::try_from(row.try_get::<i64, _>(first)?).unwrap_or(0),
        body: row.try_get(first + 1)?,
        fetched_at: row.try_get(first + 2)?,
    })
}

impl GoIndex for PgIndex {
    async fn go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<Option<(Digest, u64)>, IndexError> {
        let row = sqlx::query_as(
            "SELECT digest, size FROM go_files WHERE module = $1 AND version = $2 AND kind = $3",
        )
        .bind(module)
        .bind(version)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        located(row)
    }

    async fn put_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO go_files (module, version, kind, digest, size, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (module, version, kind) DO UPDATE SET digest = $4, size = $5",
        )
        .bind(module)
        .bind(version)
        .bind(kind.as_str())
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM go_files WHERE module = $1 AND version = $2 AND kind = $3")
            .bind(module)
            .bind(version)
            .bind(kind.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn go_answer(&self, key: &str) -> Result<Option<StoredAnswer>, IndexError> {
        let row = sqlx::query("SELECT status, body, fetched_at FROM go_answers WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| stored_answer(&row, 0)).transpose()
    }

    async fn put_go_answer(&self, key: &str, status: u16, body: &[u8]) -> Result<i64, IndexError> {
        let now = now_secs();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO go_answers (key, status, body, fetched_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET status = $2, body = $3, fetched_at = $4",
        )
        .bind(key)
        .bind(i64::from(status))
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, &Change::Answer(key.to_owned())).await?;
        tx.commit().await?;
        Ok(now)
    }

    async fn go_answers_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, StoredAnswer)>, IndexError> {
        // A range on the primary key: every key that starts with `prefix`
        // sorts between it and `prefix` followed by the highest character.
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT key, status, body, fetched_at FROM go_answers WHERE key >= $1 AND key < $2
             ORDER BY key DESC LIMIT 1000",
        )
        .bind(prefix)
        .bind(upper)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, stored_answer(row, 1)?)))
            .collect()
    }

    async fn sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
    ) -> Result<Option<(Digest, u64)>, IndexError> {
        let row = sqlx::query_as(
            "SELECT digest, size FROM go_sumdb_tiles WHERE sumdb = $1 AND tile = $2",
        )
        .bind(sumdb)
        .bind(tile)
        .fetch_optional(&self.pool)
        .await?;
        located(row)
    }

    async fn put_sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO go_sumdb_tiles (sumdb, tile, digest, size) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sumdb, tile) DO UPDATE SET digest = $3, size = $4",
        )
        .bind(sumdb)
        .bind(tile)
        .bind(digest.to_string())
        .bind(size as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sumdb_head(&self, sumdb: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let row = sqlx::query("SELECT note FROM go_sumdb_heads WHERE sumdb = $1")
            .bind(sumdb)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn put_sumdb_head(&self, sumdb: &str, size: u64, note: &[u8]) -> Result<(), IndexError> {
        // Two replicas verifying different heads at once: the larger wins,
        // whichever commits last.
        sqlx::query(
            "INSERT INTO go_sumdb_heads (sumdb, size, note) VALUES ($1, $2, $3)
             ON CONFLICT (sumdb) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note
             WHERE go_sumdb_heads.size < EXCLUDED.size",
        )
        .bind(sumdb)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
