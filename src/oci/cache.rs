//! Small metadata kept in memory so a hit costs no SQLite read: tag → manifest,
//! manifest → media type, size and (for small ones) the bytes, blob → size
//! and (for small ones, once read) the bytes and the headers naming them, so
//! a small blob's hit costs no file I/O either, as a Go `.info` hit does not
//! (its bytes were hashed when read, so they are the digest's). Only ever a
//! copy of what the index says; dropping any of it is harmless, and all of it
//! is dropped when the index's deletion generation moves (an eviction, a
//! sweep, a quarantine, `mirror cache gc` in another process). On a shared
//! index it follows other replicas' changes as a `Watcher`: a tag set, a
//! manifest or blob link deleted elsewhere goes, everything goes when notices
//! may have been missed or the backstop expires it. A copy is only kept if
//! no change was heard since it was read (`Stamp`), so a read that raced a
//! change cannot put the old row back after the change took it out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::DigestHeaders;
use crate::store::{Change, Digest, Generation, Watcher};
use crate::sync::Unpoisoned;

/// Past this many entries a map is cleared rather than managed: the index
/// still has everything, and a full reset is cheap and bounded.
const MAX_ENTRIES: usize = 50_000;
/// Manifest bodies kept in memory: each at most this…
const MAX_BODY: u64 = 64 * 1024;
/// …and all of them together at most this.
const MAX_BODIES: usize = 64 * 1024 * 1024;
/// Blob bytes kept in memory, all of them together (each is at most the
/// blob path's read-whole size, 64 KiB).
const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ManifestMeta {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub body: Option<Bytes>,
}

#[derive(Clone, Debug)]
pub struct TagMeta {
    pub manifest: ManifestMeta,
    /// Unix seconds upstream last confirmed the tag.
    pub checked_at: i64,
}

/// A blob a repository holds.
#[derive(Clone, Debug)]
pub struct BlobMeta {
    pub size: u64,
    /// A small blob's bytes as last read whole, with its headers.
    pub kept: Option<KeptBlob>,
}

#[derive(Clone, Debug)]
pub struct KeptBlob {
    pub bytes: Bytes,
    pub names: DigestHeaders,
}

impl BlobMeta {
    fn weight(&self) -> usize {
        self.kept.as_ref().map_or(0, |kept| kept.bytes.len())
    }
}

/// One map per repository, so a lookup borrows the repository name and the
/// digest or tag instead of building a key string on every hit.
struct PerRepo<K, V> {
    repos: HashMap<String, HashMap<K, V>>,
    entries: usize,
}

impl<K, V> Default for PerRepo<K, V> {
    fn default() -> Self {
        PerRepo {
            repos: HashMap::new(),
            entries: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, V> PerRepo<K, V> {
    fn get<Q>(&self, repo: &str, item: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.repos.get(repo)?.get(item)
    }

    /// Inserts, clearing everything first when full; returns the replaced value.
    fn insert(&mut self, repo: &str, item: K, value: V) -> Option<V> {
        if self.entries >= MAX_ENTRIES {
            self.clear();
        }
        let map = match self.repos.get_mut(repo) {
            Some(map) => map,
            None => self.repos.entry(repo.to_owned()).or_default(),
        };
        let old = map.insert(item, value);
        if old.is_none() {
            self.entries += 1;
        }
        old
    }

    fn remove<Q>(&mut self, repo: &str, item: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let removed = self.repos.get_mut(repo)?.remove(item);
        if removed.is_some() {
            self.entries -= 1;
        }
        removed
    }

    fn remove_repo(&mut self, repo: &str) {
        if let Some(map) = self.repos.remove(repo) {
            self.entries -= map.len();
        }
    }

    fn clear(&mut self) {
        self.repos.clear();
        self.entries = 0;
    }
}

/// The blobs, and the bytes they keep: clearing one clears the other.
#[derive(Default)]
struct Blobs {
    map: PerRepo<Digest, BlobMeta>,
    kept: usize,
}

impl Blobs {
    fn insert(&mut self, repo: &str, digest: &Digest, meta: BlobMeta) {
        let added = meta.weight();
        if self.kept + added > MAX_BLOB_BYTES || self.map.entries >= MAX_ENTRIES {
            // `insert` would clear a full map; the kept bytes go with it.
            self.clear();
        }
        self.kept += added;
        if let Some(old) = self.map.insert(repo, digest.clone(), meta) {
            self.kept -= old.weight().min(self.kept);
        }
    }

    fn remove(&mut self, repo: &str, digest: &Digest) {
        if let Some(old) = self.map.remove(repo, digest) {
            self.kept -= old.weight().min(self.kept);
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.kept = 0;
    }
}

#[derive(Default)]
pub struct MetaCache {
    tags: Mutex<PerRepo<String, TagMeta>>,
    /// The manifests, and the bytes of their bodies held in memory.
    manifests: Mutex<(PerRepo<Digest, ManifestMeta>, usize)>,
    blobs: Mutex<Blobs>,
    /// The index's deletion generation, and the one everything here was read under.
    generation: Generation,
    seen: AtomicU64,
    /// Changes heard from the index: a copy read before one is not kept.
    heard: AtomicU64,
}

/// When a copy was read: taken before reading the index (or writing it), and
/// given back with the copy to keep.
#[derive(Clone, Copy, Debug)]
pub struct Stamp(u64);

impl MetaCache {
    pub fn new(generation: Generation) -> MetaCache {
        MetaCache {
            seen: AtomicU64::new(generation.current()),
            generation,
            ..MetaCache::default()
        }
    }

    /// Drops everything if rows were deleted since it was read: one atomic
    /// load on every lookup, no SQLite.
    fn check(&self) {
        let current = self.generation.current();
        if self.seen.load(Ordering::Acquire) == current {
            return;
        }
        self.clear();
        self.seen.store(current, Ordering::Release);
    }

    /// Taken on a miss, before the read whose result is put here: one atomic load.
    pub fn stamp(&self) -> Stamp {
        Stamp(self.heard.load(Ordering::Acquire))
    }

    /// Whether a copy read under `stamp` may be kept: checked under the
    /// map's lock, after which a change takes the copy out again.
    fn current(&self, stamp: Stamp) -> bool {
        self.heard.load(Ordering::Acquire) == stamp.0
    }

    pub fn tag(&self, repo: &str, tag: &str) -> Option<TagMeta> {
        self.check();
        self.tags.lock().unpoisoned().get(repo, tag).cloned()
    }

    pub fn put_tag(&self, repo: &str, tag: &str, meta: TagMeta, read: Stamp) {
        let mut tags = self.tags.lock().unpoisoned();
        if self.current(read) {
            tags.insert(repo, tag.to_owned(), meta);
        }
    }

    pub fn forget_tag(&self, repo: &str, tag: &str) {
        self.tags.lock().unpoisoned().remove(repo, tag);
    }

    pub fn manifest(&self, repo: &str, digest: &Digest) -> Option<ManifestMeta> {
        self.check();
        let manifests = self.manifests.lock().unpoisoned();
        manifests.0.get(repo, digest).cloned()
    }

    pub fn put_manifest(&self, repo: &str, mut meta: ManifestMeta, read: Stamp) {
        if meta.size > MAX_BODY {
            meta.body = None;
        }
        let mut guard = self.manifests.lock().unpoisoned();
        if !self.current(read) {
            return;
        }
        let (map, bytes) = &mut *guard;
        let added = meta.body.as_ref().map_or(0, Bytes::len);
        if *bytes + added > MAX_BODIES {
            map.clear();
            *bytes = 0;
        }
        if map.entries >= MAX_ENTRIES {
            // `insert` is about to clear the map; the bodies go with it.
            *bytes = 0;
        }
        *bytes += added;
        if let Some(old) = map.insert(repo, meta.digest.clone(), meta) {
            *bytes -= old.body.as_ref().map_or(0, Bytes::len).min(*bytes);
        }
    }

    /// Forgets a manifest and every tag of the repository (tags may point at it).
    pub fn forget_manifest(&self, repo: &str, digest: &Digest) {
        let mut guard = self.manifests.lock().unpoisoned();
        let (map, bytes) = &mut *guard;
        if let Some(old) = map.remove(repo, digest) {
            *bytes -= old.body.as_ref().map_or(0, Bytes::len).min(*bytes);
        }
        drop(guard);
        self.tags.lock().unpoisoned().remove_repo(repo);
    }

    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<BlobMeta> {
        self.check();
        self.blobs
            .lock()
            .unpoisoned()
            .map
            .get(repo, digest)
            .cloned()
    }

    /// Records that `repo` holds the blob; bytes it kept stay if the size agrees.
    pub fn put_blob(&self, repo: &str, digest: &Digest, size: u64, read: Stamp) {
        let mut blobs = self.blobs.lock().unpoisoned();
        if !self.current(read) || blobs.map.get(repo, digest).is_some_and(|b| b.size == size) {
            return;
        }
        blobs.insert(repo, digest, BlobMeta { size, kept: None });
    }

    /// Keeps a small blob's bytes (just read whole) for the next hits.
    pub fn keep_blob(
        &self,
        repo: &str,
        digest: &Digest,
        bytes: Bytes,
        names: DigestHeaders,
        read: Stamp,
    ) {
        let meta = BlobMeta {
            size: bytes.len() as u64,
            kept: Some(KeptBlob { bytes, names }),
        };
        let mut blobs = self.blobs.lock().unpoisoned();
        if self.current(read) {
            blobs.insert(repo, digest, meta);
        }
    }

    pub fn forget_blob(&self, repo: &str, digest: &Digest) {
        self.blobs.lock().unpoisoned().remove(repo, digest);
    }

    fn clear(&self) {
        self.tags.lock().unpoisoned().clear();
        let mut manifests = self.manifests.lock().unpoisoned();
        manifests.0.clear();
        manifests.1 = 0;
        drop(manifests);
        self.blobs.lock().unpoisoned().clear();
    }
}

impl Watcher for MetaCache {
    fn changed(&self, change: &Change) {
        let forget = |this: &MetaCache| {
            // Before taking anything out: a copy read until now is refused.
            this.heard.fetch_add(1, Ordering::AcqRel);
        };
        match change {
            Change::Tag { repo, tag } => {
                forget(self);
                self.forget_tag(repo.as_str(), tag);
            }
            Change::Manifest { repo, digest } => {
                forget(self);
                self.forget_manifest(repo.as_str(), digest);
            }
            Change::RepoBlob { repo, digest } => {
                forget(self);
                self.forget_blob(repo.as_str(), digest);
            }
            Change::Reset | Change::Expire => {
                forget(self);
                self.clear();
            }
            // Every lookup compares the generation and clears; a read in
            // flight across the deletion is refused here.
            Change::Generation(_) => forget(self),
            Change::Answer(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Origin, RepoKey};

    fn meta(byte: u8, body: usize) -> ManifestMeta {
        ManifestMeta {
            digest: Digest::sha256_of(&[byte]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: body as u64,
            body: Some(Bytes::from(vec![byte; body])),
        }
    }

    #[test]
    fn entries_are_found_per_repository_and_forgotten() {
        let cache = MetaCache::default();
        let m = meta(1, 10);
        cache.put_manifest("a/b", m.clone(), cache.stamp());
        cache.put_tag(
            "a/b",
            "v1",
            TagMeta {
                manifest: m.clone(),
                checked_at: 1,
            },
            cache.stamp(),
        );
        cache.put_blob("a/b", &m.digest, 7, cache.stamp());
        assert!(cache.manifest("a/b", &m.digest).is_some());
        assert!(cache.manifest("a/c", &m.digest).is_none());
        assert_eq!(cache.blob("a/b", &m.digest).map(|b| b.size), Some(7));
        assert_eq!(cache.tag("a/b", "v1").map(|t| t.checked_at), Some(1));
        cache.forget_manifest("a/b", &m.digest);
        assert!(cache.manifest("a/b", &m.digest).is_none());
        assert!(cache.tag("a/b", "v1").is_none(), "tags go with a manifest");
        cache.forget_blob("a/b", &m.digest);
        assert!(cache.blob("a/b", &m.digest).is_none());
    }

    fn kept_bytes(cache: &MetaCache, repo: &str, digest: &Digest) -> Option<Bytes> {
        cache.blob(repo, digest)?.kept.map(|kept| kept.bytes)
    }

    #[test]
    fn a_small_blob_keeps_its_bytes_until_forgotten() {
        let cache = MetaCache::default();
        let digest = Digest::sha256_of(b"layer");
        let names = DigestHeaders::of(&digest).unwrap();
        cache.put_blob("a/b", &digest, 5, cache.stamp());
        assert_eq!(kept_bytes(&cache, "a/b", &digest), None);
        cache.keep_blob(
            "a/b",
            &digest,
            Bytes::from_static(b"layer"),
            names,
            cache.stamp(),
        );
        cache.put_blob("a/b", &digest, 5, cache.stamp());
        assert_eq!(
            kept_bytes(&cache, "a/b", &digest).as_deref(),
            Some(&b"layer"[..]),
            "recording the size again keeps the bytes"
        );
        assert_eq!(kept_bytes(&cache, "a/c", &digest), None, "per repository");
        assert_eq!(cache.blobs.lock().unwrap().kept, 5);
        cache.forget_blob("a/b", &digest);
        assert!(cache.blob("a/b", &digest).is_none());
        assert_eq!(cache.blobs.lock().unwrap().kept, 0);
    }

    #[test]
    fn kept_blob_bytes_stay_within_their_budget() {
        let cache = MetaCache::default();
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for i in 0..(MAX_BLOB_BYTES / chunk.len() + 10) {
            let digest = Digest::sha256_of(&i.to_le_bytes());
            let names = DigestHeaders::of(&digest).unwrap();
            cache.keep_blob("r", &digest, chunk.clone(), names, cache.stamp());
            assert!(cache.blobs.lock().unwrap().kept <= MAX_BLOB_BYTES);
        }
        let blobs = cache.blobs.lock().unwrap();
        let counted: usize = blobs
            .map
            .repos
            .values()
            .flat_map(|m| m.values())
            .map(BlobMeta::weight)
            .sum();
        assert_eq!(blobs.kept, counted, "the count is what the map holds");
    }

    #[tokio::test]
    async fn everything_goes_when_the_index_generation_moves() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).await.unwrap();
        let cache = MetaCache::new(store.generation());
        let m = meta(3, 10);
        let digest = store.blobs().put(&[3; 10], Origin::Cached).await.unwrap();
        cache.put_manifest("a/b", m.clone(), cache.stamp());
        cache.put_blob("a/b", &m.digest, 10, cache.stamp());
        let names = DigestHeaders::of(&digest).unwrap();
        cache.keep_blob(
            "a/b",
            &digest,
            Bytes::from_static(&[3; 10]),
            names,
            cache.stamp(),
        );
        assert!(cache.manifest("a/b", &m.digest).is_some());
        store.evict_to(0, false).await.unwrap();
        assert!(store.blobs().size(&digest).await.unwrap().is_none());
        assert!(cache.manifest("a/b", &m.digest).is_none());
        assert!(cache.blob("a/b", &m.digest).is_none());
        assert!(cache.blob("a/b", &digest).is_none(), "kept bytes go too");
        assert_eq!(cache.manifests.lock().unwrap().1, 0, "bodies counted out");
        assert_eq!(
            cache.blobs.lock().unwrap().kept,
            0,
            "kept bytes counted out"
        );
    }

    #[test]
    fn another_replicas_changes_take_out_what_they_name() {
        let cache = MetaCache::default();
        let (one, two) = (meta(1, 10), meta(2, 10));
        let tag = |m: &ManifestMeta| TagMeta {
            manifest: m.clone(),
            checked_at: 1,
        };
        let repo = || RepoKey::new("a/b".to_owned());
        cache.put_manifest("a/b", one.clone(), cache.stamp());
        cache.put_manifest("a/b", two.clone(), cache.stamp());
        cache.put_tag("a/b", "v1", tag(&one), cache.stamp());
        cache.put_tag("a/b", "v2", tag(&two), cache.stamp());
        cache.put_blob("a/b", &one.digest, 7, cache.stamp());
        cache.changed(&Change::Tag {
            repo: repo(),
            tag: "v1".into(),
        });
        assert!(cache.tag("a/b", "v1").is_none());
        assert!(cache.tag("a/b", "v2").is_some(), "only the tag named");
        cache.changed(&Change::Manifest {
            repo: repo(),
            digest: two.digest.clone(),
        });
        assert!(cache.manifest("a/b", &two.digest).is_none());
        assert!(cache.tag("a/b", "v2").is_none(), "its tags with it");
        assert!(cache.manifest("a/b", &one.digest).is_some());
        cache.changed(&Change::RepoBlob {
            repo: repo(),
            digest: one.digest.clone(),
        });
        assert!(cache.blob("a/b", &one.digest).is_none());
        cache.changed(&Change::Expire);
        assert!(cache.manifest("a/b", &one.digest).is_none(), "the backstop");
    }

    #[test]
    fn a_copy_read_before_a_change_is_not_kept() {
        let cache = MetaCache::default();
        let one = meta(1, 10);
        let read = cache.stamp();
        // The change lands while the index read is in flight…
        cache.changed(&Change::Tag {
            repo: RepoKey::new("a/b".to_owned()),
            tag: "v1".into(),
        });
        // …so what that read returned may be the old row.
        cache.put_tag(
            "a/b",
            "v1",
            TagMeta {
                manifest: one.clone(),
                checked_at: 1,
            },
            read,
        );
        cache.put_manifest("a/b", one.clone(), read);
        cache.put_blob("a/b", &one.digest, 7, read);
        assert!(cache.tag("a/b", "v1").is_none());
        assert!(cache.manifest("a/b", &one.digest).is_none());
        assert!(cache.blob("a/b", &one.digest).is_none());
        cache.put_manifest("a/b", one.clone(), cache.stamp());
        assert!(
            cache.manifest("a/b", &one.digest).is_some(),
            "a new read is"
        );
    }

    #[test]
    fn the_maps_stay_bounded() {
        let cache = MetaCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put_blob("r", &Digest::sha256_of(&i.to_le_bytes()), 1, cache.stamp());
        }
        assert!(cache.blobs.lock().unwrap().map.entries <= MAX_ENTRIES);
        cache.put_manifest("r", meta(2, MAX_BODY as usize), cache.stamp());
        assert_eq!(cache.manifests.lock().unwrap().1, MAX_BODY as usize);
    }
}
