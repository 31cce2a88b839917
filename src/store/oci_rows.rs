//! The OCI part of the store: manifests, tags and blob links per repository,
//! keyed by `RepoKey` and `TagKey`. A borrow of the store that delegates; the
//! SQL stays in `oci`.

use super::{Digest, ManifestRow, NewManifest, ReferrerRow, RepoKey, Store, StoreError, TagKey};

impl Store {
    /// Rows of the OCI registry.
    pub fn oci(&self) -> OciRows<'_> {
        OciRows { store: self }
    }
}

/// What the registry indexes per repository; no SQL leaves it.
#[derive(Clone, Copy)]
pub struct OciRows<'a> {
    store: &'a Store,
}

impl OciRows<'_> {
    pub async fn manifest(
        &self,
        repo: &RepoKey,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, StoreError> {
        self.store.oci_manifest(repo.as_str(), digest).await
    }

    /// A tag's manifest and when upstream last confirmed it (unix seconds).
    pub async fn tag(
        &self,
        repo: &RepoKey,
        tag: TagKey<'_>,
    ) -> Result<Option<(ManifestRow, i64)>, StoreError> {
        self.store.oci_tag(repo.as_str(), tag.as_str()).await
    }

    /// Indexes a stored manifest for a repository, with the blob sizes it
    /// states. Idempotent.
    pub async fn put_manifest(&self, manifest: &NewManifest<'_>) -> Result<(), StoreError> {
        self.store.oci_put_manifest(manifest).await
    }

    /// The largest size any of a repository's manifests gives a blob, if one
    /// names it.
    pub async fn described_size(
        &self,
        repo: &RepoKey,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        self.store.oci_described_size(repo.as_str(), digest).await
    }

    /// Points a tag at a manifest (already indexed for the repo), confirmed now.
    pub async fn set_tag(
        &self,
        repo: &RepoKey,
        tag: TagKey<'_>,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.store
            .oci_set_tag(repo.as_str(), tag.as_str(), digest)
            .await
    }

    pub async fn delete_tag(&self, repo: &RepoKey, tag: TagKey<'_>) -> Result<bool, StoreError> {
        self.store.oci_delete_tag(repo.as_str(), tag.as_str()).await
    }

    /// Removes a manifest from a repository (and the tags pointing at it).
    pub async fn delete_manifest(
        &self,
        repo: &RepoKey,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        self.store.oci_delete_manifest(repo.as_str(), digest).await
    }

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    /// `last` is the client's cursor: any text, compared as text.
    pub async fn tags(
        &self,
        repo: &RepoKey,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.store.oci_tags(repo.as_str(), last, n).await
    }

    /// Whether a repository holds any manifest or blob.
    pub async fn has_repo(&self, repo: &RepoKey) -> Result<bool, StoreError> {
        self.store.oci_has_repo(repo.as_str()).await
    }

    /// Repositories holding manifests, in lexical order, after the client's
    /// cursor `last`, at most `n`.
    pub async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, StoreError> {
        self.store.oci_catalog(last, n).await
    }

    /// Manifests of a repository whose `subject` is `digest`.
    pub async fn referrers(
        &self,
        repo: &RepoKey,
        digest: &Digest,
    ) -> Result<Vec<ReferrerRow>, StoreError> {
        self.store.oci_referrers(repo.as_str(), digest).await
    }

    /// The size of a blob a repository holds, if it holds it.
    pub async fn blob_size(
        &self,
        repo: &RepoKey,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        self.store.oci_blob(repo.as_str(), digest).await
    }

    /// Records that a repository holds a (stored, indexed) blob. Idempotent.
    pub async fn link_blob(&self, repo: &RepoKey, digest: &Digest) -> Result<(), StoreError> {
        self.store.oci_link_blob(repo.as_str(), digest).await
    }

    /// Forgets that a repository holds a blob; `false` if it did not.
    pub async fn unlink_blob(&self, repo: &RepoKey, digest: &Digest) -> Result<bool, StoreError> {
        self.store.oci_unlink_blob(repo.as_str(), digest).await
    }
}
