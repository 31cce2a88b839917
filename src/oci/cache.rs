//! Small metadata kept in memory so a hit costs no SQLite read: tag → manifest,
//! manifest → media type, size and (for small ones) the bytes, blob → size.
//! Only ever a copy of what the index says; dropping any of it is harmless.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::store::Digest;

/// Past this many entries a map is cleared rather than managed: the index
/// still has everything, and a full reset is cheap and bounded.
const MAX_ENTRIES: usize = 50_000;
/// Manifest bodies kept in memory: each at most this…
const MAX_BODY: u64 = 64 * 1024;
/// …and all of them together at most this.
const MAX_BODIES: usize = 64 * 1024 * 1024;

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

#[derive(Default)]
pub struct MetaCache {
    tags: Mutex<HashMap<String, TagMeta>>,
    manifests: Mutex<(HashMap<String, ManifestMeta>, usize)>,
    blobs: Mutex<HashMap<String, u64>>,
}

fn key(repo: &str, item: &str) -> String {
    format!("{repo}\n{item}")
}

fn bounded<V>(map: &mut HashMap<String, V>) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
}

impl MetaCache {
    pub fn tag(&self, repo: &str, tag: &str) -> Option<TagMeta> {
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(repo, tag))
            .cloned()
    }

    pub fn put_tag(&self, repo: &str, tag: &str, meta: TagMeta) {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut tags);
        tags.insert(key(repo, tag), meta);
    }

    pub fn forget_tag(&self, repo: &str, tag: &str) {
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(repo, tag));
    }

    pub fn manifest(&self, repo: &str, digest: &Digest) -> Option<ManifestMeta> {
        let manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        manifests.0.get(&key(repo, &digest.to_string())).cloned()
    }

    pub fn put_manifest(&self, repo: &str, mut meta: ManifestMeta) {
        if meta.size > MAX_BODY {
            meta.body = None;
        }
        let mut guard = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        let (map, bytes) = &mut *guard;
        let added = meta.body.as_ref().map_or(0, Bytes::len);
        if map.len() >= MAX_ENTRIES || *bytes + added > MAX_BODIES {
            map.clear();
            *bytes = 0;
        }
        *bytes += added;
        if let Some(old) = map.insert(key(repo, &meta.digest.to_string()), meta) {
            *bytes -= old.body.as_ref().map_or(0, Bytes::len).min(*bytes);
        }
    }

    /// Forgets a manifest and every tag of the repository (tags may point at it).
    pub fn forget_manifest(&self, repo: &str, digest: &Digest) {
        let mut guard = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.remove(&key(repo, &digest.to_string()));
        drop(guard);
        let prefix = key(repo, "");
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| !k.starts_with(&prefix));
    }

    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<u64> {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(repo, &digest.to_string()))
            .copied()
    }

    pub fn put_blob(&self, repo: &str, digest: &Digest, size: u64) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        bounded(&mut blobs);
        blobs.insert(key(repo, &digest.to_string()), size);
    }

    pub fn forget_blob(&self, repo: &str, digest: &Digest) {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(repo, &digest.to_string()));
    }
}
