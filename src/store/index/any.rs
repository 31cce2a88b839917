//! The index a `Store` was opened with: an enum over the backends, not `dyn`,
//! so a hit pays a match and no indirection (the traits' `async fn`s are not
//! object-safe anyway). Each trait method forwards to the same method of the
//! backend held; `forward!` writes those matches from the signatures.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::postgres::{Feed, PgIndex};
use super::sqlite::SqliteIndex;
use super::transfer::{Row, Table, TransferIndex, Value};
use super::{
    AuditIndex, BlobIndex, Candidate, GoIndex, Index, IndexError, LeaderGuard, Lease, LeaseIndex,
    OciIndex, UpkeepIndex, UploadIndex,
};
use crate::store::blob_store::UploadJournal;
use crate::store::generation::BlobRows;
use crate::store::{
    AuditQuery, AuditRecord, Digest, GoFile, GroupStats, ManifestRow, NewManifest, ReferrerRow,
    StoreError, StoreTotals, StoredAnswer, UploadOwner, UploadRow,
};

/// Where the store keeps its rows.
#[derive(Clone, Default)]
pub enum IndexChoice {
    /// `mirror.db` in the data dir: the embedded default, no service needed.
    #[default]
    Sqlite,
    /// A PostgreSQL database several replicas share, by its URL.
    Postgres(String),
}

/// The URL may carry a password: it is never printed.
impl std::fmt::Debug for IndexChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexChoice::Sqlite => f.write_str("Sqlite"),
            IndexChoice::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

fn no_parts() -> IndexError {
    IndexError::Corrupt("push sessions in parts need a PostgreSQL index".to_owned())
}

pub(crate) enum AnyIndex {
    Sqlite(SqliteIndex),
    Postgres(PgIndex),
}

impl AnyIndex {
    pub(crate) async fn open(
        data_dir: &Path,
        choice: &IndexChoice,
    ) -> Result<AnyIndex, StoreError> {
        Ok(match choice {
            IndexChoice::Sqlite => {
                AnyIndex::Sqlite(SqliteIndex::open(&data_dir.join("mirror.db")).await?)
            }
            IndexChoice::Postgres(url) => AnyIndex::Postgres(PgIndex::open(url).await?),
        })
    }

    /// Whether other processes may use the same index at the same time.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, AnyIndex::Postgres(_))
    }

    /// See `PgIndex::upload_part`. A SQLite index is one process's, whose
    /// sessions keep their bytes in one file each: it has no parts.
    pub(crate) async fn upload_part(
        &self,
        id: &str,
        start: u64,
        size: u64,
        hash_state: &[u8],
    ) -> Result<bool, IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.upload_part(id, start, size, hash_state).await,
            AnyIndex::Sqlite(_) => Err(no_parts()),
        }
    }

    pub(crate) async fn upload_parts(&self, id: &str) -> Result<Vec<u64>, IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.upload_parts(id).await,
            AnyIndex::Sqlite(_) => Err(no_parts()),
        }
    }

    /// See `PgIndex::doom_blob`. On SQLite one process deletes at once, as
    /// nothing else can be reading: it dooms nothing.
    pub(crate) async fn doom_blob(&self, digest: &str, at: i64) -> Result<(), IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.doom_blob(digest, at).await,
            AnyIndex::Sqlite(_) => Ok(()),
        }
    }

    pub(crate) async fn doomed_among(
        &self,
        digests: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.doomed_among(digests).await,
            AnyIndex::Sqlite(_) => Ok(std::collections::HashMap::new()),
        }
    }

    pub(crate) async fn forget_doomed(&self, digest: &str) -> Result<(), IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.forget_doomed(digest).await,
            AnyIndex::Sqlite(_) => Ok(()),
        }
    }

    /// Uploads to the bucket idle since before `before`. A SQLite index never
    /// fronts a bucket (the config refuses S3 storage without PostgreSQL), so
    /// it journals none.
    pub(crate) async fn idle_multiparts(
        &self,
        before: i64,
    ) -> Result<Vec<(String, String)>, IndexError> {
        match self {
            AnyIndex::Postgres(index) => index.idle_multiparts(before).await,
            AnyIndex::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// The notices of changes other processes commit, where the index sends
    /// them (PostgreSQL); SQLite sends none.
    pub(crate) fn feed(&self) -> Option<Feed> {
        match self {
            AnyIndex::Sqlite(_) => None,
            AnyIndex::Postgres(index) => Some(index.feed()),
        }
    }

    /// The SQLite index, for unit tests that stage rows in it directly.
    #[cfg(test)]
    fn sqlite(&self) -> &SqliteIndex {
        match self {
            AnyIndex::Sqlite(index) => index,
            AnyIndex::Postgres(_) => panic!("this test stages rows in SQLite only"),
        }
    }

    #[cfg(test)]
    pub(crate) async fn set_accessed_at(
        &self,
        digest: &Digest,
        accessed_at: i64,
    ) -> Result<(), IndexError> {
        self.sqlite().set_accessed_at(digest, accessed_at).await
    }

    #[cfg(test)]
    pub(crate) async fn set_upload_hash_state(
        &self,
        id: &str,
        state: &[u8],
    ) -> Result<(), IndexError> {
        self.sqlite().set_upload_hash_state(id, state).await
    }

    #[cfg(test)]
    pub(crate) async fn set_upload_touched_at(
        &self,
        id: &str,
        touched_at: i64,
    ) -> Result<(), IndexError> {
        self.sqlite().set_upload_touched_at(id, touched_at).await
    }

    #[cfg(test)]
    pub(crate) async fn audited_requests(&self) -> Result<i64, IndexError> {
        self.sqlite().audited_requests().await
    }
}

/// `impl Trait for AnyIndex`, each listed method matching on the backend and
/// awaiting the same call on it.
macro_rules! forward {
    ($trait:ident { $(async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        impl $trait for AnyIndex {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        AnyIndex::Sqlite(index) => index.$name($($arg),*).await,
                        AnyIndex::Postgres(index) => index.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

impl Index for AnyIndex {
    async fn answers(&self) -> Result<(), IndexError> {
        match self {
            AnyIndex::Sqlite(index) => index.answers().await,
            AnyIndex::Postgres(index) => index.answers().await,
        }
    }

    async fn close(&self) {
        match self {
            AnyIndex::Sqlite(index) => index.close().await,
            AnyIndex::Postgres(index) => index.close().await,
        }
    }
}

forward!(BlobIndex {
    async fn insert_blob(&self, digest: &Digest, size: u64, hosted: bool) -> Result<(), IndexError>;
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, IndexError>;
    async fn mark_hosted(&self, digest: &Digest) -> Result<bool, IndexError>;
    async fn record_access(&self, digests: &[Digest], at: i64) -> Result<(), IndexError>;
    async fn delete_blob(&self, digest: &str, rows: BlobRows) -> Result<Option<i64>, IndexError>;
    async fn generation(&self) -> Result<i64, IndexError>;
});

forward!(GoIndex {
    async fn go_file(&self, module: &str, version: &str, kind: GoFile) -> Result<Option<(Digest, u64)>, IndexError>;
    async fn put_go_file(&self, module: &str, version: &str, kind: GoFile, digest: &Digest, size: u64) -> Result<(), IndexError>;
    async fn forget_go_file(&self, module: &str, version: &str, kind: GoFile) -> Result<(), IndexError>;
    async fn go_answer(&self, key: &str) -> Result<Option<StoredAnswer>, IndexError>;
    async fn put_go_answer(&self, key: &str, status: u16, body: &[u8]) -> Result<i64, IndexError>;
    async fn go_answers_under(&self, prefix: &str) -> Result<Vec<(String, StoredAnswer)>, IndexError>;
    async fn sumdb_tile(&self, sumdb: &str, tile: &str) -> Result<Option<(Digest, u64)>, IndexError>;
    async fn put_sumdb_tile(&self, sumdb: &str, tile: &str, digest: &Digest, size: u64) -> Result<(), IndexError>;
    async fn sumdb_head(&self, sumdb: &str) -> Result<Option<Vec<u8>>, IndexError>;
    async fn put_sumdb_head(&self, sumdb: &str, size: u64, note: &[u8]) -> Result<(), IndexError>;
});

forward!(OciIndex {
    async fn manifest(&self, repo: &str, digest: &Digest) -> Result<Option<ManifestRow>, IndexError>;
    async fn tag(&self, repo: &str, tag: &str) -> Result<Option<(ManifestRow, i64)>, IndexError>;
    async fn put_manifest(&self, manifest: &NewManifest<'_>) -> Result<(), IndexError>;
    async fn described_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError>;
    async fn set_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<(), IndexError>;
    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, IndexError>;
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError>;
    async fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Vec<String>, IndexError>;
    async fn has_repo(&self, repo: &str) -> Result<bool, IndexError>;
    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, IndexError>;
    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<ReferrerRow>, IndexError>;
    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError>;
    async fn link_blob(&self, repo: &str, digest: &Digest) -> Result<(), IndexError>;
    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError>;
});

forward!(AuditIndex {
    async fn write_audit(&self, records: &mut Vec<AuditRecord>) -> Result<(), IndexError>;
    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, IndexError>;
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, IndexError>;
    async fn read_outcomes(&self) -> Result<Vec<(String, u64)>, IndexError>;
});

forward!(UploadIndex {
    async fn begin_upload(&self, id: &str, repo_key: &str, owner: &UploadOwner, quota: u32) -> Result<bool, IndexError>;
    async fn upload_progress(&self, id: &str, size: u64, hash_state: &[u8]) -> Result<bool, IndexError>;
    async fn find_upload(&self, id: &str) -> Result<Option<UploadRow>, IndexError>;
    async fn end_upload(&self, id: &str) -> Result<(), IndexError>;
    async fn upload_sessions(&self) -> Result<Vec<(String, i64)>, IndexError>;
});

forward!(UpkeepIndex {
    async fn totals(&self) -> Result<StoreTotals, IndexError>;
    async fn eviction_candidates(&self, after: (i64, &str), limit: u32) -> Result<Vec<Candidate>, IndexError>;
    async fn blobs_after(&self, digest: &str, limit: u32) -> Result<Vec<(String, u64)>, IndexError>;
    async fn indexed_among(&self, digests: &[&str]) -> Result<HashSet<String>, IndexError>;
    async fn group_stats(&self, hosted: &str, unreferenced: &str, shared: &str) -> Result<Vec<GroupStats>, IndexError>;
    async fn try_lead(&self) -> Result<Option<LeaderGuard>, IndexError>;
});

forward!(LeaseIndex {
    async fn claim_fill(&self, key: &str, owner: &str, owner_url: &str, ttl: Duration) -> Result<Lease, IndexError>;
    async fn renew_fill(&self, key: &str, epoch: i64, ttl: Duration) -> Result<bool, IndexError>;
    async fn release_fill(&self, key: &str, epoch: i64) -> Result<(), IndexError>;
});

forward!(TransferIndex {
    async fn count_rows(&self, table: Table) -> Result<u64, IndexError>;
    async fn export_rows(&self, table: Table, after: Option<&[Value]>, limit: u32) -> Result<Vec<Row>, IndexError>;
    async fn import_rows(&self, table: Table, rows: &[Row]) -> Result<(), IndexError>;
});

/// Multipart uploads in flight, journaled where every replica's sweep sees
/// them (see `PgIndex::record_multipart`).
impl UploadJournal for AnyIndex {
    async fn begun(&self, upload_id: &str, object_key: &str) -> Result<(), StoreError> {
        match self {
            AnyIndex::Postgres(index) => Ok(index
                .record_multipart(upload_id, object_key, super::now_secs())
                .await?),
            AnyIndex::Sqlite(_) => Ok(()),
        }
    }

    async fn progressed(&self, upload_id: &str) -> Result<(), StoreError> {
        match self {
            AnyIndex::Postgres(index) => {
                Ok(index.touch_multipart(upload_id, super::now_secs()).await?)
            }
            AnyIndex::Sqlite(_) => Ok(()),
        }
    }

    async fn ended(&self, upload_id: &str) -> Result<(), StoreError> {
        match self {
            AnyIndex::Postgres(index) => Ok(index.forget_multipart(upload_id).await?),
            AnyIndex::Sqlite(_) => Ok(()),
        }
    }
}
