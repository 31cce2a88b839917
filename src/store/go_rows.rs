//! The Go part of the store: module files by module, version and kind, full
//! sumdb tiles, expiring answers by key, and each checksum database's latest
//! verified head. A borrow of the store that hands the typed keys to the
//! index (`index::GoIndex`) as text.

use super::index::GoIndex;
use super::{
    AnswerKey, Digest, GoFile, ModuleKey, Store, StoreError, StoredAnswer, TileKey, VersionKey,
};

impl Store {
    /// Rows of the Go module mirror.
    pub fn go(&self) -> GoRows<'_> {
        GoRows { store: self }
    }
}

/// What the Go mirror indexes; no SQL leaves it.
#[derive(Clone, Copy)]
pub struct GoRows<'a> {
    store: &'a Store,
}

impl GoRows<'_> {
    /// The stored file of `module@version`, as (digest, size).
    pub async fn file(
        &self,
        module: ModuleKey<'_>,
        version: VersionKey<'_>,
        kind: GoFile,
    ) -> Result<Option<(Digest, u64)>, StoreError> {
        let index = &self.store.inner.index;
        Ok(index
            .go_file(module.as_str(), version.as_str(), kind)
            .await?)
    }

    /// Records a stored, verified file. The blob must already be indexed.
    pub async fn put_file(
        &self,
        module: ModuleKey<'_>,
        version: VersionKey<'_>,
        kind: GoFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let index = &self.store.inner.index;
        let (module, version) = (module.as_str(), version.as_str());
        Ok(index
            .put_go_file(module, version, kind, digest, size)
            .await?)
    }

    /// Drops an index row whose blob file has gone missing.
    pub async fn forget_file(
        &self,
        module: ModuleKey<'_>,
        version: VersionKey<'_>,
        kind: GoFile,
    ) -> Result<(), StoreError> {
        let index = &self.store.inner.index;
        Ok(index
            .forget_go_file(module.as_str(), version.as_str(), kind)
            .await?)
    }

    pub async fn answer(&self, key: AnswerKey<'_>) -> Result<Option<StoredAnswer>, StoreError> {
        Ok(self.store.inner.index.go_answer(key.as_str()).await?)
    }

    /// Replaces the answer under `key`; returns its `fetched_at`.
    pub async fn put_answer(
        &self,
        key: AnswerKey<'_>,
        status: u16,
        body: &[u8],
    ) -> Result<i64, StoreError> {
        let index = &self.store.inner.index;
        Ok(index.put_go_answer(key.as_str(), status, body).await?)
    }

    /// Answers whose key starts with `prefix`, in descending key order.
    pub async fn answers_under(
        &self,
        prefix: AnswerKey<'_>,
    ) -> Result<Vec<(String, StoredAnswer)>, StoreError> {
        Ok(self
            .store
            .inner
            .index
            .go_answers_under(prefix.as_str())
            .await?)
    }

    pub async fn tile(&self, tile: TileKey<'_>) -> Result<Option<(Digest, u64)>, StoreError> {
        Ok(self
            .store
            .inner
            .index
            .sumdb_tile(tile.db(), tile.tile())
            .await?)
    }

    pub async fn put_tile(
        &self,
        tile: TileKey<'_>,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let index = &self.store.inner.index;
        Ok(index
            .put_sumdb_tile(tile.db(), tile.tile(), digest, size)
            .await?)
    }

    /// The signed note of the latest tree head verified for checksum database `db`.
    pub async fn verified_head(&self, db: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.store.inner.index.sumdb_head(db).await?)
    }

    /// Records a verified head of `size` records; one no newer than the head
    /// already recorded leaves it as it is (heads only move forward).
    pub async fn put_verified_head(
        &self,
        db: &str,
        size: u64,
        note: &[u8],
    ) -> Result<(), StoreError> {
        Ok(self
            .store
            .inner
            .index
            .put_sumdb_head(db, size, note)
            .await?)
    }
}
