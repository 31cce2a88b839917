//! Push upload sessions that outlive the request and the process: a row per
//! session in the index (its owner, acknowledged size and hash state, through
//! `index::UploadIndex`) and its bytes in `uploads/<id>`. Nothing of a session stays open between requests: each
//! request opens the file, and the row says where its bytes and hash stand.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::fill::lease;
use super::index::{Lease, LeaseIndex, UploadIndex, now_secs};
use super::upload_file::{Part, UploadFile};
use super::{Algorithm, Digest, Hasher, RepoKey, Store, StoreError, io_error};

/// Read size when re-hashing a session's bytes.
const REHASH_CHUNK: usize = 1024 * 1024;

/// Who opened a session: only they may go on with it, and the quota counts
/// sessions by it. Made by the protocol from the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOwner(String);

impl UploadOwner {
    pub fn new(key: String) -> UploadOwner {
        UploadOwner(key)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A session as the index last acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub repo_key: RepoKey,
    pub owner: UploadOwner,
    pub size: u64,
    /// `Hasher::save` after `size` bytes; absent before the first chunk.
    pub(crate) hash_state: Option<Vec<u8>>,
}

/// Whether a new session could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    Opened,
    /// The owner already holds as many sessions as the quota allows.
    QuotaFull,
}

/// Upload ids are made here (32 lower-case hex) and are path components, so
/// anything else a client sends is no session at all.
fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A push session's id, valid by construction: it names a file under
/// `uploads/`, so only `from_random` and `parse` make one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// The id of a new session, from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> UploadId {
        UploadId(hex::encode(bytes))
    }

    /// The id a client sent; `None` when no session could have it.
    pub fn parse(id: &str) -> Option<UploadId> {
        is_upload_id(id).then(|| UploadId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Store {
    /// Push sessions, and the files their bytes arrive in.
    pub fn uploads(&self) -> Uploads<'_> {
        Uploads { store: self }
    }
}

/// What a push may do with its bytes; no path leaves it.
pub struct Uploads<'a> {
    store: &'a Store,
}

/// How a complete upload's commit went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// In the store under the digest, pinned as hosted content.
    Stored { size: u64 },
    /// The bytes hash to `actual`; they are gone.
    WrongDigest { actual: Digest },
}

impl Uploads<'_> {
    /// Where the bytes of upload `id` live; `None` for a malformed id.
    fn path(&self, id: &str) -> Option<PathBuf> {
        is_upload_id(id).then(|| self.store.inner.root.join("uploads").join(id))
    }

    fn existing_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        self.path(id)
            .ok_or_else(|| StoreError::Corrupt(format!("{id:?} is not an upload id")))
    }

    /// Opens session `id` with an empty file, unless `owner` already holds
    /// `quota` sessions. Counting and inserting is one statement, so
    /// concurrent openings cannot overshoot the quota.
    pub async fn begin(
        &self,
        id: &UploadId,
        repo_key: &RepoKey,
        owner: &UploadOwner,
        quota: u32,
    ) -> Result<Begun, StoreError> {
        let id = id.as_str();
        let path = self.existing_path(id)?;
        // The row first: a file no row names is fair game for the sweep.
        let index = &self.store.inner.index;
        if !index
            .begin_upload(id, repo_key.as_str(), owner, quota)
            .await?
        {
            return Ok(Begun::QuotaFull);
        }
        if self.store.shares_bytes() {
            // Each chunk brings its own file; none exists between requests.
            return Ok(Begun::Opened);
        }
        if let Err(error) = tokio::fs::File::create(&path).await {
            self.end_named(id).await?;
            return Err(io_error(format!("creating {}", path.display()))(error));
        }
        Ok(Begun::Opened)
    }

    /// Records that the session's file holds `file.size()` good bytes, with
    /// their hash. `false` when the session is gone (cancelled, or swept).
    /// Recorded, a chunk kept in parts is done with: its file is gone and the
    /// session's next request may write, on any replica, once this returns.
    pub async fn progress(&self, id: &UploadId, file: &mut UploadFile) -> Result<bool, StoreError> {
        let recorded = self.record(id.as_str(), file).await?;
        if let Some(part) = &mut file.part {
            part.release().await;
        }
        Ok(recorded)
    }

    async fn record(&self, id: &str, file: &UploadFile) -> Result<bool, StoreError> {
        let state = file.hasher().save();
        let index = &self.store.inner.index;
        let (Some(part), Some(bucket)) = (&file.part, self.store.shared_bucket()) else {
            return Ok(index.upload_progress(id, file.size(), &state).await?);
        };
        if file.size() == part.base {
            // An empty chunk: no part to upload, and its file is done with
            // (`put_part` removes a chunk's file once uploaded).
            let _ = tokio::fs::remove_file(&file.path).await;
            return Ok(index.upload_progress(id, file.size(), &state).await?);
        }
        file.file
            .sync_all()
            .await
            .map_err(io_error(format!("syncing {}", file.path.display())))?;
        // The chunk first: a row naming a part the bucket lacks would lose bytes.
        bucket.put_part(&file.path, id, part.base, index).await?;
        Ok(index
            .upload_part(id, part.base, file.size(), &state)
            .await?)
    }

    pub async fn find(&self, id: &UploadId) -> Result<Option<UploadRow>, StoreError> {
        Ok(self.store.inner.index.find_upload(id.as_str()).await?)
    }

    /// The session's file after its acknowledged bytes, with their hash.
    /// `None` when the file is gone or holds fewer bytes than were
    /// acknowledged.
    pub async fn resume(
        &self,
        id: &UploadId,
        row: &UploadRow,
    ) -> Result<Option<UploadFile>, StoreError> {
        let id = id.as_str();
        let Some(hasher) = self.hasher(id, row).await? else {
            return Ok(None);
        };
        if self.store.shares_bytes() {
            return self.resume_in_parts(id, row, hasher).await.map(Some);
        }
        let path = self.existing_path(id)?;
        let Some(file) = self.open(&path, id, row).await? else {
            return Ok(None);
        };
        Ok(Some(UploadFile {
            path,
            file,
            size: row.size,
            hasher,
            part: None,
        }))
    }

    /// A fresh file for this request's chunk of a session kept in parts,
    /// under the session's writer lease.
    async fn resume_in_parts(
        &self,
        id: &str,
        row: &UploadRow,
        hasher: Hasher,
    ) -> Result<UploadFile, StoreError> {
        let writer = self.writer_lease(id).await?;
        let path = self.store.new_temp_path("part");
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_error(format!("creating {}", path.display())))?;
        Ok(UploadFile {
            path,
            file,
            size: row.size,
            hasher,
            part: Some(Part {
                id: id.to_owned(),
                base: row.size,
                writer: Some(writer),
            }),
        })
    }

    /// The cluster-wide right to write session `id`, for one request.
    async fn writer_lease(&self, id: &str) -> Result<lease::Held, StoreError> {
        let key = format!("upload:{id}");
        let owner = self.store.lease_owner();
        match self
            .store
            .inner
            .index
            .claim_fill(&key, &owner, "", lease::TTL)
            .await?
        {
            Lease::Won { epoch } => Ok(lease::Held::start(self.store, &key, epoch)),
            Lease::Held { .. } => Err(StoreError::Busy(
                "another request on this upload session is in progress".to_owned(),
            )),
        }
    }

    /// The session's file, opened after its acknowledged bytes, with whatever
    /// a failed or interrupted chunk left beyond them cut off.
    async fn open(
        &self,
        path: &Path,
        id: &str,
        row: &UploadRow,
    ) -> Result<Option<tokio::fs::File>, StoreError> {
        let path = path.to_owned();
        let size = row.size;
        let opened = tokio::task::spawn_blocking(move || open_at(&path, size)).await?;
        Ok(opened
            .map_err(io_error(format!("opening upload {id}")))?
            .map(tokio::fs::File::from_std))
    }

    /// The hash state after the session's acknowledged bytes: from the index,
    /// or (for a state this build cannot read) by hashing the bytes again.
    /// `None` when the file no longer holds them.
    async fn hasher(&self, id: &str, row: &UploadRow) -> Result<Option<Hasher>, StoreError> {
        if row.size == 0 {
            return Ok(Some(Algorithm::Sha256.hasher()));
        }
        if let Some(hasher) = row.hash_state.as_deref().and_then(Hasher::restore) {
            return Ok(Some(hasher));
        }
        let path = self.existing_path(id)?;
        let size = row.size;
        let rehashed = tokio::task::spawn_blocking(move || rehash(&path, size)).await?;
        rehashed.map_err(io_error(format!("re-hashing upload {id}")))
    }

    /// A fresh file for a blob pushed in one request, outside any session,
    /// hashed with `algorithm`.
    pub async fn unsessioned(&self, algorithm: Algorithm) -> Result<UploadFile, StoreError> {
        let path = self.store.new_temp_path("upload");
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_error(format!("creating {}", path.display())))?;
        Ok(UploadFile {
            path,
            file,
            size: 0,
            hasher: algorithm.hasher(),
            part: None,
        })
    }

    /// Checks a complete upload against `digest` and moves it into the store
    /// as hosted content; refused or failed, its file is gone afterwards.
    pub async fn commit(&self, upload: UploadFile, digest: &Digest) -> Result<Pushed, StoreError> {
        let UploadFile {
            path,
            file,
            size,
            hasher,
            part,
        } = upload;
        let actual = hasher.finish();
        if actual != *digest {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(Pushed::WrongDigest { actual });
        }
        let (path, file) = match &part {
            Some(part) => match self.assemble(&path, file, part).await {
                Ok(whole) => whole,
                Err(error) => {
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(error);
                }
            },
            None => (path, file),
        };
        if let Err(error) = file.sync_all().await {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(io_error("syncing upload")(error));
        }
        drop(file);
        self.store.adopt_file(&path, digest, size, true).await?;
        Ok(Pushed::Stored { size })
    }

    /// The whole upload in one staged file: the session's parts from the
    /// bucket, streamed, then this request's chunk. The chunk's file is gone
    /// afterwards.
    async fn assemble(
        &self,
        chunk_path: &Path,
        chunk: tokio::fs::File,
        part: &Part,
    ) -> Result<(PathBuf, tokio::fs::File), StoreError> {
        let bucket = self
            .store
            .shared_bucket()
            .ok_or_else(|| StoreError::Corrupt("a session in parts without a bucket".into()))?;
        let starts = self.store.inner.index.upload_parts(&part.id).await?;
        let path = self.store.new_temp_path("assembled");
        let mut whole = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(io_error(format!("creating {}", path.display())))?;
        let result = async {
            let mut copied = 0;
            for &start in &starts {
                if start != copied {
                    return Err(StoreError::Corrupt(format!(
                        "upload {}: a part starts at byte {start}, after {copied}",
                        part.id
                    )));
                }
                copied += bucket.copy_part(&part.id, start, &mut whole).await?;
            }
            if copied != part.base {
                return Err(StoreError::Corrupt(format!(
                    "upload {}: its parts hold {copied} bytes, {} were acknowledged",
                    part.id, part.base
                )));
            }
            // Its handle writes only; read it by name.
            drop(chunk);
            let mut chunk = tokio::fs::File::open(chunk_path)
                .await
                .map_err(io_error(format!("opening {}", chunk_path.display())))?;
            tokio::io::copy(&mut chunk, &mut whole)
                .await
                .map_err(io_error("appending the last chunk"))?;
            Ok(())
        }
        .await;
        let _ = tokio::fs::remove_file(chunk_path).await;
        match result {
            Ok(()) => Ok((path, whole)),
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(error)
            }
        }
    }

    /// Forgets a session and removes its file (a committed session's file has
    /// moved into the store already).
    pub async fn end(&self, id: &UploadId) -> Result<(), StoreError> {
        self.end_named(id.as_str()).await
    }

    /// `end` for any name a row holds, malformed ones too (the sweep's).
    async fn end_named(&self, id: &str) -> Result<(), StoreError> {
        if let Some(bucket) = self.store.shared_bucket() {
            // The row first names the parts; once it is gone nothing can.
            let starts = self.store.inner.index.upload_parts(id).await?;
            self.store.inner.index.end_upload(id).await?;
            return bucket.delete_parts(id, &starts).await;
        }
        self.store.inner.index.end_upload(id).await?;
        if let Some(path) = self.path(id) {
            match tokio::fs::remove_file(&path).await {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error(format!("removing {}", path.display()))(error));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Store {
    /// Drops sessions untouched for `abandoned_after` with their files, rows
    /// whose file is gone, and files older than `min_age` that no row names.
    /// Returns how many sessions and files went.
    pub(crate) async fn sweep_uploads(
        &self,
        abandoned_after: Duration,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let cutoff = now_secs() - abandoned_after.as_secs() as i64;
        let rows = self.inner.index.upload_sessions().await?;
        let dir = self.inner.root.join("uploads");
        // On an index other processes share, a session without a file here
        // may be another process's, whose file is in its own data dir.
        let fileless_is_dead = !self.inner.index.is_shared();
        let (dead, leftovers) = tokio::task::spawn_blocking(move || {
            let named: std::collections::HashSet<&str> =
                rows.iter().map(|(id, _)| id.as_str()).collect();
            // A row is dead when stale, malformed (never a path then) or fileless.
            let dead: Vec<String> = rows
                .iter()
                .filter(|(id, touched_at)| {
                    *touched_at < cutoff
                        || !is_upload_id(id)
                        || (fileless_is_dead && !dir.join(id).is_file())
                })
                .map(|(id, _)| id.clone())
                .collect();
            let now = SystemTime::now();
            let mut leftovers = Vec::new();
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name();
                let old_enough =
                    entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|modified| {
                            now.duration_since(modified).unwrap_or_default() >= min_age
                        });
                if old_enough && !named.contains(name.to_string_lossy().as_ref()) {
                    leftovers.push(entry.path());
                }
            }
            if !dry_run {
                for id in dead.iter().filter(|id| is_upload_id(id)) {
                    let _ = std::fs::remove_file(dir.join(id));
                }
                leftovers.retain(|path| std::fs::remove_file(path).is_ok());
            }
            std::io::Result::Ok((dead, leftovers.len() as u64))
        })
        .await?
        .map_err(io_error("sweeping uploads"))?;
        if !dry_run {
            for id in &dead {
                self.uploads().end_named(id).await?;
            }
        }
        let orphan_parts = self.sweep_orphan_parts(min_age, dry_run).await?;
        Ok(dead.len() as u64 + leftovers + orphan_parts)
    }

    /// On a shared bucket, deletes (unless `dry_run`) session chunks older
    /// than `min_age` whose session has no row: a replica killed between
    /// uploading a chunk and recording it, or between ending a session and
    /// deleting its chunks, leaves them. How many.
    async fn sweep_orphan_parts(
        &self,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let Some(bucket) = self.shared_bucket() else {
            return Ok(0);
        };
        // Listed before the rows are read: a session's row exists before
        // any chunk of it, so a listed chunk of a live session finds its row.
        let parts = bucket.list_parts().await?;
        let sessions: std::collections::HashSet<String> = self
            .inner
            .index
            .upload_sessions()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let now = SystemTime::now();
        let mut swept = 0;
        for (id, key, modified) in parts {
            let old_enough = now.duration_since(modified).unwrap_or_default() >= min_age;
            if !old_enough || sessions.contains(&id) {
                continue;
            }
            if dry_run || bucket.delete_key(&key).await.is_ok() {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

/// Opens an upload file for writing after its first `size` bytes, cutting
/// off anything beyond them; `None` if it is gone or shorter.
fn open_at(path: &Path, size: u64) -> std::io::Result<Option<std::fs::File>> {
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if file.metadata()?.len() < size {
        return Ok(None);
    }
    file.set_len(size)?;
    file.seek(SeekFrom::Start(size))?;
    Ok(Some(file))
}

/// The hash of an upload file's first `size` bytes; `None` if it is gone or
/// shorter.
fn rehash(path: &Path, size: u64) -> std::io::Result<Option<Hasher>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if file.metadata()?.len() < size {
        return Ok(None);
    }
    let mut hasher = Algorithm::Sha256.hasher();
    let mut buffer = vec![0u8; REHASH_CHUNK];
    let mut left = size;
    while left > 0 {
        let want = left.min(REHASH_CHUNK as u64) as usize;
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(Some(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn upload_id(text: String) -> UploadId {
        UploadId::parse(&text).unwrap()
    }

    fn owner(name: &str) -> UploadOwner {
        UploadOwner::new(format!("cert:{name}"))
    }

    #[tokio::test]
    async fn the_quota_counts_an_owners_sessions_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let ids: Vec<UploadId> = (0..4).map(|i| upload_id(format!("{i:032x}"))).collect();
        let begin = |id: &UploadId, who: &str| {
            let store = store.clone();
            let (id, who) = (id.clone(), owner(who));
            async move {
                store
                    .uploads()
                    .begin(&id, &RepoKey::new("team/app".into()), &who, 2)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(begin(&ids[0], "alice").await, Begun::Opened);
        assert_eq!(begin(&ids[1], "alice").await, Begun::Opened);
        assert_eq!(begin(&ids[2], "alice").await, Begun::QuotaFull);
        assert!(store.uploads().find(&ids[2]).await.unwrap().is_none());
        assert!(!store.uploads().path(ids[2].as_str()).unwrap().exists());
        assert_eq!(begin(&ids[2], "bob").await, Begun::Opened);
        store.uploads().end(&ids[0]).await.unwrap();
        assert!(!store.uploads().path(ids[0].as_str()).unwrap().exists());
        assert_eq!(begin(&ids[3], "alice").await, Begun::Opened);
        let row = store.uploads().find(&ids[3]).await.unwrap().unwrap();
        assert_eq!((row.owner, row.size), (owner("alice"), 0));
    }

    /// Writes `bytes` after the acknowledged ones and acknowledges them.
    async fn append(store: &Store, id: &UploadId, bytes: &[u8]) {
        let uploads = store.uploads();
        let row = uploads.find(id).await.unwrap().unwrap();
        let mut file = uploads.resume(id, &row).await.unwrap().unwrap();
        file.write(bytes).await.unwrap();
        file.flush().await.unwrap();
        assert!(uploads.progress(id, &mut file).await.unwrap());
    }

    #[tokio::test]
    async fn a_session_goes_on_from_its_saved_hash_state_or_by_hashing_its_bytes_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let id = upload_id("e".repeat(32));
        store
            .uploads()
            .begin(&id, &RepoKey::new("team/app".into()), &owner("alice"), 8)
            .await
            .unwrap();
        append(&store, &id, b"first chunk, ").await;
        append(&store, &id, b"second chunk").await;
        let expected = super::super::Digest::sha256_of(b"first chunk, second chunk");
        let row = store.uploads().find(&id).await.unwrap().unwrap();
        let saved = store.uploads().resume(&id, &row).await.unwrap().unwrap();
        assert_eq!(saved.hasher.finish(), expected);

        // A state this build cannot read: the bytes are hashed again.
        store
            .inner
            .index
            .set_upload_hash_state(id.as_str(), &[0])
            .await
            .unwrap();
        let row = store.uploads().find(&id).await.unwrap().unwrap();
        let rehashed = store.uploads().resume(&id, &row).await.unwrap().unwrap();
        assert_eq!(rehashed.hasher.finish(), expected);

        // Bytes past the acknowledged ones (a chunk that failed) are cut off.
        let path = store.uploads().path(id.as_str()).unwrap();
        std::fs::write(&path, b"first chunk, second chunk and a broken third").unwrap();
        drop(store.uploads().resume(&id, &row).await.unwrap().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first chunk, second chunk");

        // A file shorter than what was acknowledged is no session to go on with.
        std::fs::write(&path, b"first").unwrap();
        assert!(store.uploads().resume(&id, &row).await.unwrap().is_none());
        store.uploads().end(&id).await.unwrap();
        let mut unsessioned = store
            .uploads()
            .unsessioned(Algorithm::Sha256)
            .await
            .unwrap();
        assert!(
            !store
                .uploads()
                .progress(&id, &mut unsessioned)
                .await
                .unwrap()
        );
        unsessioned.discard().await;
    }

    #[tokio::test]
    async fn the_sweep_keeps_live_sessions_and_drops_abandoned_ones_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (live, stale, rowless, fileless) = (
            upload_id("a".repeat(32)),
            upload_id("b".repeat(32)),
            upload_id("c".repeat(32)),
            upload_id("d".repeat(32)),
        );
        for id in [&live, &stale, &fileless] {
            store
                .uploads()
                .begin(id, &RepoKey::new("team/app".into()), &owner("alice"), 8)
                .await
                .unwrap();
        }
        std::fs::remove_file(store.uploads().path(fileless.as_str()).unwrap()).unwrap();
        for id in [&live, &stale, &rowless] {
            std::fs::write(store.uploads().path(id.as_str()).unwrap(), b"bytes").unwrap();
        }
        store
            .inner
            .index
            .set_upload_touched_at(stale.as_str(), 0)
            .await
            .unwrap();

        assert_eq!(
            store.sweep_uploads(DAY, DAY, false).await.unwrap(),
            2,
            "stale and fileless"
        );
        assert_eq!(
            store
                .sweep_uploads(DAY, Duration::ZERO, true)
                .await
                .unwrap(),
            1,
            "dry run: rowless"
        );
        assert!(
            store.uploads().path(rowless.as_str()).unwrap().exists(),
            "a dry run removes nothing"
        );
        assert_eq!(
            store
                .sweep_uploads(DAY, Duration::ZERO, false)
                .await
                .unwrap(),
            1
        );

        assert!(store.uploads().path(live.as_str()).unwrap().exists());
        assert!(store.uploads().find(&live).await.unwrap().is_some());
        for id in [&stale, &rowless, &fileless] {
            assert!(!store.uploads().path(id.as_str()).unwrap().exists(), "{id}");
            assert!(store.uploads().find(id).await.unwrap().is_none(), "{id}");
        }
    }

    #[test]
    fn only_ids_this_server_makes_name_files() {
        assert!(is_upload_id(&"0f".repeat(16)));
        for id in ["", "../mirror.db", &"A".repeat(32), &"a".repeat(33), "a/b"] {
            assert!(!is_upload_id(id), "{id}");
        }
    }
}
