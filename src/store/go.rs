//! The Go module mirror's rows: immutable module files and full sumdb tiles,
//! and the expiring answers (lists, queries, lookups, negatives), kept by the
//! index (`index::GoIndex`). Speaks plain strings; the GOPROXY rules live in
//! `goproxy`.

use super::index::GoIndex;
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

impl Store {
    /// The stored file of `module@version`, as (digest, size).
    pub(super) async fn go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        Ok(self.inner.index.go_file(module, version, kind).await?)
    }

    /// Records a stored, verified file. The blob must already be indexed.
    pub(super) async fn put_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let index = &self.inner.index;
        Ok(index
            .put_go_file(module, version, kind, digest, size)
            .await?)
    }

    /// Drops an index row whose blob file has gone missing.
    pub(super) async fn forget_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<(), StoreError> {
        Ok(self
            .inner
            .index
            .forget_go_file(module, version, kind)
            .await?)
    }

    pub(super) async fn go_answer(&self, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        Ok(self.inner.index.go_answer(key).await?)
    }

    /// Replaces the answer under `key`; returns its `fetched_at`.
    pub(super) async fn put_go_answer(
        &self,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<i64, StoreError> {
        Ok(self.inner.index.put_go_answer(key, status, body).await?)
    }

    /// Answers whose key starts with `prefix`, in descending key order.
    pub(super) async fn go_answers_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, StoredAnswer)>, StoreError> {
        Ok(self.inner.index.go_answers_under(prefix).await?)
    }

    pub(super) async fn sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        Ok(self.inner.index.sumdb_tile(sumdb, tile).await?)
    }

    pub(super) async fn put_sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let index = &self.inner.index;
        Ok(index.put_sumdb_tile(sumdb, tile, digest, size).await?)
    }

    /// The signed note of the latest verified tree head of `sumdb`.
    pub(super) async fn sumdb_head(&self, sumdb: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.index.sumdb_head(sumdb).await?)
    }

    /// Records a verified head of `size` records; an older or equal one than
    /// the head already recorded leaves it as it is (heads only move forward).
    pub(super) async fn put_sumdb_head(
        &self,
        sumdb: &str,
        size: u64,
        note: &[u8],
    ) -> Result<(), StoreError> {
        Ok(self.inner.index.put_sumdb_head(sumdb, size, note).await?)
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
