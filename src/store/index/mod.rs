//! The index seam: every row the store keeps, behind traits each backend
//! implements: `SqliteIndex` (the embedded default) and `PgIndex` (several
//! replicas on one PostgreSQL, issue 12). Each owns its pool, its migrations
//! and every SQL string; nothing else in the crate names sqlx or SQL. The
//! store holds `AnyIndex`, an enum over the two, not `dyn`, so a hit costs a
//! match and no extra call.
//!
//! The rows come in families, one trait each, so an implementation splits
//! into one file per family; `Index` is all of them plus the connection's
//! own life. A method that must be atomic (a delete and the generation bump,
//! a manifest and the blobs it names, a batch of access times or audit rows)
//! is one method, so each backend makes it one transaction. On PostgreSQL a
//! write that replaces or deletes a row other processes may hold a copy of
//! also sends a notice in that transaction, heard through `AnyIndex::feed`.
//!
//! Leases are a family too: a fill in progress is an in-process slot
//! (`fill::Fills`); with several replicas it is also a `fills` row, so one
//! replica in the cluster fetches a cold object and the others relay from it.

mod any;
mod postgres;
pub(crate) mod sqlite;
pub(crate) mod transfer;

use std::collections::HashSet;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use super::generation::BlobRows;
use super::{
    AuditQuery, AuditRecord, Digest, GoFile, GroupStats, ManifestRow, NewManifest, ReferrerRow,
    StoreTotals, StoredAnswer, UploadOwner, UploadRow,
};

pub(crate) use any::AnyIndex;
pub use any::IndexChoice;

/// What a backend's own error becomes; its text is kept as the source.
type Backend = Box<dyn std::error::Error + Send + Sync>;

/// Why the index could not answer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A write named a row another path deleted (a blob evicted, a manifest
    /// gone with it).
    #[error("index: {0}")]
    MissingReference(#[source] Backend),
    #[error("index: {0}")]
    Query(#[source] Backend),
    #[error("index migration: {0}")]
    Migrate(#[source] Backend),
    /// A row holds what no write puts there (a digest that does not parse).
    #[error("{0}")]
    Corrupt(String),
}

/// What a feed of change notices heard.
pub(crate) enum Heard {
    Change(super::changes::Change),
    /// Notices may have been lost: the connection dropped, or listens anew.
    Missed,
    /// The index is closing.
    Closed,
}

/// Seconds since the Unix epoch, as the index stores times.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A digest read back from the index.
pub(crate) fn indexed_digest(text: &str) -> Result<Digest, IndexError> {
    text.parse()
        .map_err(|_| IndexError::Corrupt(format!("index holds an invalid digest {text:?}")))
}

/// A cached blob eviction may take, in least-recently-used order.
pub(crate) struct Candidate {
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) accessed_at: i64,
}

/// Every row family, and the connection's own life.
pub(crate) trait Index:
    BlobIndex + GoIndex + OciIndex + AuditIndex + UploadIndex + UpkeepIndex + LeaseIndex
{
    /// Whether the index answers a read now (for `/readyz`); reads only, since
    /// a busy writer is no reason to take an instance out of service.
    async fn answers(&self) -> Result<(), IndexError>;

    async fn close(&self);
}

/// Blob rows: one per stored object, with its size, access time and whether
/// it is pushed (hosted) content, and the deletion generation.
pub(crate) trait BlobIndex {
    /// Records a complete, verified blob. Idempotent; `hosted` only pins.
    async fn insert_blob(&self, digest: &Digest, size: u64, hosted: bool)
    -> Result<(), IndexError>;

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, IndexError>;

    /// Pins an indexed blob as hosted; `false` when no row indexes it.
    async fn mark_hosted(&self, digest: &Digest) -> Result<bool, IndexError>;

    /// Sets the access time of `digests` to `at`, all in one transaction.
    async fn record_access(&self, digests: &[Digest], at: i64) -> Result<(), IndexError>;

    /// Deletes a blob's row (and, by cascade, every row that refers to it)
    /// and bumps the generation in the same transaction: the new generation,
    /// or `None` if no row was deleted.
    async fn delete_blob(&self, digest: &str, rows: BlobRows) -> Result<Option<i64>, IndexError>;

    /// The deletion generation as the index holds it.
    async fn generation(&self) -> Result<i64, IndexError>;
}

/// The Go module mirror's rows: immutable module files and full sumdb tiles,
/// and the expiring answers under their keys.
pub(crate) trait GoIndex {
    async fn go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<Option<(Digest, u64)>, IndexError>;

    /// The blob must already be indexed.
    async fn put_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
        digest: &Digest,
        size: u64,
    ) -> Result<(), IndexError>;

    async fn forget_go_file(
        &self,
        module: &str,
        version: &str,
        kind: GoFile,
    ) -> Result<(), IndexError>;

    async fn go_answer(&self, key: &str) -> Result<Option<StoredAnswer>, IndexError>;

    /// Replaces the answer under `key`; returns its `fetched_at`.
    async fn put_go_answer(&self, key: &str, status: u16, body: &[u8]) -> Result<i64, IndexError>;

    /// At most 1000 answers whose key starts with `prefix`, in descending key order.
    async fn go_answers_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, StoredAnswer)>, IndexError>;

    async fn sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
    ) -> Result<Option<(Digest, u64)>, IndexError>;

    async fn put_sumdb_tile(
        &self,
        sumdb: &str,
        tile: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), IndexError>;

    /// The signed note of the latest verified tree head of `sumdb`.
    async fn sumdb_head(&self, sumdb: &str) -> Result<Option<Vec<u8>>, IndexError>;

    /// Records a head of `size` records unless one at least as large is
    /// recorded: heads only move forward.
    async fn put_sumdb_head(&self, sumdb: &str, size: u64, note: &[u8]) -> Result<(), IndexError>;
}

/// The OCI rows per repository: manifests (with their subject and the blobs
/// they name), tags, and links to the blobs a repository holds.
pub(crate) trait OciIndex {
    async fn manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, IndexError>;

    /// A tag's manifest and when upstream last confirmed it (unix seconds).
    async fn tag(&self, repo: &str, tag: &str) -> Result<Option<(ManifestRow, i64)>, IndexError>;

    /// The manifest and the blobs it names, in one transaction. Idempotent.
    async fn put_manifest(&self, manifest: &NewManifest<'_>) -> Result<(), IndexError>;

    /// The largest size any of a repository's manifests gives a blob.
    async fn described_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError>;

    /// Points a tag at a manifest indexed for the repo, confirmed now.
    async fn set_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<(), IndexError>;

    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, IndexError>;

    /// Removes a manifest (and the tags pointing at it).
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError>;

    /// Tags in lexical order, after `last`, at most `n`.
    async fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, IndexError>;

    /// Whether the repository holds a manifest or a blob.
    async fn has_repo(&self, repo: &str) -> Result<bool, IndexError>;

    /// Repositories holding manifests, in lexical order, after `last`, at most `n`.
    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, IndexError>;

    /// Manifests of a repository whose `subject` is `digest`, oldest first.
    async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Vec<ReferrerRow>, IndexError>;

    /// The size of a blob the repository holds.
    async fn repo_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, IndexError>;

    /// The blob must already be indexed. Idempotent.
    async fn link_blob(&self, repo: &str, digest: &Digest) -> Result<(), IndexError>;

    async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, IndexError>;
}

/// The audit trail: one row per distinct request per second, with a count.
pub(crate) trait AuditIndex {
    /// Writes (and drains) `records` in one transaction, as they are: the
    /// store has escaped what came from outside.
    async fn write_audit(&self, records: &mut Vec<AuditRecord>) -> Result<(), IndexError>;

    /// Newest first; `query.subject` is matched as stored (escaped).
    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, IndexError>;

    /// Deletes records older than `before_ms`; how many went.
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, IndexError>;

    /// Requests read, by outcome (`hit`, `miss`, `stale`, ...), counted.
    async fn read_outcomes(&self) -> Result<Vec<(String, u64)>, IndexError>;
}

/// Push sessions: who owns one, how many bytes are acknowledged and the hash
/// state after them.
pub(crate) trait UploadIndex {
    /// Opens session `id` unless `owner` already holds `quota` sessions,
    /// counting and inserting in one statement; `false` when full.
    async fn begin_upload(
        &self,
        id: &str,
        repo_key: &str,
        owner: &UploadOwner,
        quota: u32,
    ) -> Result<bool, IndexError>;

    /// `false` when the session is gone.
    async fn upload_progress(
        &self,
        id: &str,
        size: u64,
        hash_state: &[u8],
    ) -> Result<bool, IndexError>;

    async fn find_upload(&self, id: &str) -> Result<Option<UploadRow>, IndexError>;

    async fn end_upload(&self, id: &str) -> Result<(), IndexError>;

    /// Every session's id and when it was last touched (unix seconds).
    async fn upload_sessions(&self) -> Result<Vec<(String, i64)>, IndexError>;
}

/// What eviction, sweeps, `verify` and `stats` read across all blob rows.
pub(crate) trait UpkeepIndex {
    async fn totals(&self) -> Result<StoreTotals, IndexError>;

    /// Unpinned blobs after `(accessed_at, digest)`, least recently used first.
    async fn eviction_candidates(
        &self,
        after: (i64, &str),
        limit: u32,
    ) -> Result<Vec<Candidate>, IndexError>;

    /// Blob rows after `digest` in digest order, with their sizes.
    async fn blobs_after(&self, digest: &str, limit: u32)
    -> Result<Vec<(String, u64)>, IndexError>;

    /// Which of `digests` have a row.
    async fn indexed_among(&self, digests: &[&str]) -> Result<HashSet<String>, IndexError>;

    /// Every blob in exactly one group, labelled with `hosted`, `unreferenced`
    /// and `shared` for those groups.
    async fn group_stats(
        &self,
        hosted: &str,
        unreferenced: &str,
        shared: &str,
    ) -> Result<Vec<GroupStats>, IndexError>;

    /// Leadership of upkeep (eviction, sweeps, audit retention) among the
    /// processes sharing this index, if no other process holds it: `None`
    /// when one does. SQLite's is always granted: its index is one process's.
    async fn try_lead(&self) -> Result<Option<LeaderGuard>, IndexError>;
}

/// Leadership of upkeep, held while this lives (and, on PostgreSQL, while
/// its session does).
pub(crate) enum LeaderGuard {
    /// The index is this process's alone.
    Alone,
    /// A session of its own holding the advisory lock: a pooled connection
    /// would hand the lock back to the pool, and to whichever query came next.
    Postgres(postgres::Leadership),
}

impl LeaderGuard {
    /// Whether leadership still holds: on PostgreSQL, whether the session
    /// that holds the lock still answers (the lock dies with it).
    pub(crate) async fn holds(&mut self) -> bool {
        match self {
            LeaderGuard::Alone => true,
            LeaderGuard::Postgres(session) => session.holds().await,
        }
    }

    /// Hands leadership back now rather than when the server notices.
    pub(crate) async fn release(self) {
        if let LeaderGuard::Postgres(session) = self {
            session.release().await;
        }
    }
}

/// Who fetches a cold object for the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    /// The caller fetches; `epoch` fences it once another replica takes over.
    Won { epoch: i64 },
    /// Another owner's lease has not expired: relay from it.
    Held {
        owner: String,
        owner_url: String,
        epoch: i64,
    },
}

/// Fill leases: `fills(key, owner, owner_url, epoch, lease_until)`. Times are
/// the database's own clock, so replicas' clocks need not agree.
pub(crate) trait LeaseIndex {
    /// Claims `key` for `owner` unless another unexpired lease holds it; a
    /// claim of an expired lease takes the next epoch.
    async fn claim_fill(
        &self,
        key: &str,
        owner: &str,
        owner_url: &str,
        ttl: Duration,
    ) -> Result<Lease, IndexError>;

    /// Extends a lease still at `epoch`; false once a newer epoch took it.
    async fn renew_fill(&self, key: &str, epoch: i64, ttl: Duration) -> Result<bool, IndexError>;

    /// Ends a lease still at `epoch`; a newer owner's lease stays.
    async fn release_fill(&self, key: &str, epoch: i64) -> Result<(), IndexError>;
}
