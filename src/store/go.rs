//! The SQL of the Go module mirror: the index of immutable module files and
//! full sumdb tiles, and the expiring answers (lists, queries, lookups,
//! negatives). Speaks plain strings; the GOPROXY rules live in `goproxy`.

use sqlx::Row;

use super::index::{indexed_digest, now_secs};
use super::{Digest, Store, StoreError};

/// One of a canonical module version's immutable files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GoFile {
    Info,
    Mod,
    Zip,
}

impl GoFile {
    pub fn as_str(self) -> &'static str {
        match self {
            GoFile::Info => "info",
            GoFile::Mod => "mod",
            GoFile::Zip => "zip",
        }
    }
}

/// A stored expiring answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Unix seconds.
    pub fetched_at: i64,
}

/// A `(digest, size)` row as the caller wants it.
fn located(row: Option<(String, i64)>) -> Result<Option<(Digest, u64)>, StoreError> {
    row.map(|(digest, size)| Ok((indexed_digest(&digest)?, size.max(0) as u64)))
        .transpose()
}

/// `status, body, fetched_at` from column `first` on.
fn stored_answer(row: &sqlx::sqlite::SqliteRow, first: usize) -> Result<StoredAnswer, StoreError> {
    Ok(StoredAnswer {
        status: u16::try_from(row.try_get::<i64, _>(first)?).unwrap_or(0),
        body: row.try_get(first + 1)?,
        fetched_at: row.try_get(first + 2)?,
    })
}

impl Store {
    /// The stored file of `module@version`, as (digest, size).
    pub async fn go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let row = sqlx::query_as(
            "SELECT digest, size FROM go_files WHERE module = ?1 AND version = ?2 AND kind = ?3",
        )
        .bind(module)
        .bind(version)
        .bind(kind.as_str())
        .fetch_optional(&self.inner.index.read)
        .await?;
        located(row)
    }

    /// Records a stored, verified file. The blob must already be indexed.
    pub async fn put_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO go_files (module, version, kind, digest, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (module, version, kind) DO UPDATE SET digest = ?4, size = ?5",
        )
        .bind(module)
        .bind(version)
        .bind(kind.as_str())
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now_secs())
        .execute(&self.inner.index.write)
        .await?;
        Ok(())
    }

    /// Drops an index row whose blob file has gone missing.
    pub async fn forget_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM go_files WHERE module = ?1 AND version = ?2 AND kind = ?3")
            .bind(module)
            .bind(version)
            .bind(kind.as_str())
            .execute(&self.inner.index.write)
            .await?;
        Ok(())
    }

    pub async fn go_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        let row = sqlx::query("SELECT status, body, fetched_at FROM go_answers WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.inner.index.read)
            .await?;
        row.map(|row| stored_answer(&row, 0)).transpose()
    }

    /// Replaces the answer under `key`; returns its `fetched_at`.
    pub async fn put_go_answer(
        &self,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<i64, StoreError> {
        let now = now_secs();
        sqlx::query(
            "INSERT INTO go_answers (key, status, body, fetched_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET status = ?2, body = ?3, fetched_at = ?4",
        )
        .bind(key)
        .bind(i64::from(status))
        .bind(body)
        .bind(now)
        .execute(&self.inner.index.write)
        .await?;
        Ok(now)
    }

    /// Answers whose key starts with `prefix`, in descending key order.
    pub async fn go_answers_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, StoredAnswer)>, StoreError> {
        // A range on the primary key: every key that starts with `prefix`
        // sorts between it and `prefix` followed by the highest character.
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT key, status, body, fetched_at FROM go_answers WHERE key >= ?1 AND key < ?2
             ORDER BY key DESC LIMIT 1000",
        )
        .bind(prefix)
        .bind(upper)
        .fetch_all(&self.inner.index.read)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, stored_answer(row, 1)?)))
            .collect()
    }

    pub async fn sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let row = sqlx::query_as(
            "SELECT digest, size FROM go_sumdb_tiles WHERE sumdb = ?1 AND tile = ?2",
        )
        .bind(sumdb)
        .bind(tile)
        .fetch_optional(&self.inner.index.read)
        .await?;
        located(row)
    }

    pub async fn put_sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO go_sumdb_tiles (sumdb, tile, digest, size) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sumdb, tile) DO UPDATE SET digest = ?3, size = ?4",
        )
        .bind(sumdb)
        .bind(tile)
        .bind(digest.to_string())
        .bind(size as i64)
        .execute(&self.inner.index.write)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn go_files_and_answers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            store
                .go_file("example.com/m", "v1.0.0", GoFile::Mod)
                .await
                .unwrap(),
            None
        );
        let digest = store
            .put_bytes(b"module example.com/m\n", false)
            .await
            .unwrap();
        store
            .put_go_file("example.com/m", "v1.0.0", GoFile::Mod, &digest, 21)
            .await
            .unwrap();
        assert_eq!(
            store
                .go_file("example.com/m", "v1.0.0", GoFile::Mod)
                .await
                .unwrap(),
            Some((digest.clone(), 21))
        );
        assert_eq!(
            store
                .go_file("example.com/m", "v1.0.0", GoFile::Zip)
                .await
                .unwrap(),
            None
        );
        store
            .forget_go_file("example.com/m", "v1.0.0", GoFile::Mod)
            .await
            .unwrap();
        assert_eq!(
            store
                .go_file("example.com/m", "v1.0.0", GoFile::Mod)
                .await
                .unwrap(),
            None
        );

        let at = store
            .put_go_answer("list example.com/m", 200, b"v1.0.0\n")
            .await
            .unwrap();
        let answer = store
            .go_answer("list example.com/m")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice(), answer.fetched_at),
            (200, &b"v1.0.0\n"[..], at)
        );
        store
            .put_go_answer("list example.com/m", 404, b"gone")
            .await
            .unwrap();
        assert_eq!(
            store
                .go_answer("list example.com/m")
                .await
                .unwrap()
                .unwrap()
                .status,
            404
        );

        store
            .put_go_answer("sumdb s/tile/8/0/001.p/3", 200, b"abc")
            .await
            .unwrap();
        store
            .put_go_answer("sumdb s/tile/8/0/001.p/17", 200, b"abcdef")
            .await
            .unwrap();
        store
            .put_go_answer("sumdb s/tile/8/0/0010", 200, b"x")
            .await
            .unwrap();
        let under = store
            .go_answers_under("sumdb s/tile/8/0/001.p/")
            .await
            .unwrap();
        let keys: Vec<&str> = under.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["sumdb s/tile/8/0/001.p/3", "sumdb s/tile/8/0/001.p/17"]
        );

        store
            .put_sumdb_tile("sum.golang.org", "tile/8/0/000", &digest, 21)
            .await
            .unwrap();
        assert_eq!(
            store
                .sumdb_tile("sum.golang.org", "tile/8/0/000")
                .await
                .unwrap(),
            Some((digest, 21))
        );
    }
}
