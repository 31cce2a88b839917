//! The OCI rows: manifests, tags and blob links per repository, kept by the
//! index (`index::OciIndex`); the `oci` module never sees a pool.

use super::index::OciIndex;
use super::{Digest, RepoKey, Store, StoreError};

/// A manifest stored for a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What the referrers API lists for one manifest.
#[derive(Clone, Debug)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// A manifest to index, with what the referrers API needs from it.
pub struct NewManifest<'a> {
    pub repo: &'a RepoKey,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub subject: Option<&'a Digest>,
    pub artifact_type: Option<&'a str>,
    pub annotations: Option<&'a str>,
    /// The blobs it names (config, layers) with the size each descriptor gives.
    pub blobs: &'a [(Digest, u64)],
}

impl Store {
    pub(super) async fn oci_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>, StoreError> {
        Ok(self.inner.index.manifest(repo, digest).await?)
    }

    /// A tag's manifest and when upstream last confirmed it (unix seconds).
    pub(super) async fn oci_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<(ManifestRow, i64)>, StoreError> {
        Ok(self.inner.index.tag(repo, tag).await?)
    }

    /// Indexes a stored manifest for a repository, with the blob sizes it
    /// states. Idempotent.
    pub(super) async fn oci_put_manifest(
        &self,
        manifest: &NewManifest<'_>,
    ) -> Result<(), StoreError> {
        Ok(self.inner.index.put_manifest(manifest).await?)
    }

    /// The largest size any of a repository's manifests gives a blob, if one
    /// names it: more than that is not the blob those manifests mean.
    pub(super) async fn oci_described_size(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.index.described_size(repo, digest).await?)
    }

    /// Points a tag at a manifest (already indexed for the repo), confirmed now.
    pub(super) async fn oci_set_tag(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        Ok(self.inner.index.set_tag(repo, tag, digest).await?)
    }

    pub(super) async fn oci_delete_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        Ok(self.inner.index.delete_tag(repo, tag).await?)
    }

    /// Removes a manifest from a repository (and the tags pointing at it).
    pub(super) async fn oci_delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        Ok(self.inner.index.delete_manifest(repo, digest).await?)
    }

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    pub(super) async fn oci_tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.inner.index.tags(repo, last, n).await?)
    }

    pub(super) async fn oci_has_repo(&self, repo: &str) -> Result<bool, StoreError> {
        Ok(self.inner.index.has_repo(repo).await?)
    }

    /// Repositories holding manifests, in lexical order, after `last`, at most `n`.
    pub(super) async fn oci_catalog(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.inner.index.catalog(last, n).await?)
    }

    /// Manifests of a repository whose `subject` is `digest`.
    pub(super) async fn oci_referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Vec<ReferrerRow>, StoreError> {
        Ok(self.inner.index.referrers(repo, digest).await?)
    }

    /// The size of a blob a repository holds, if it holds it.
    pub(super) async fn oci_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.index.repo_blob(repo, digest).await?)
    }

    /// Records that a repository holds a (stored, indexed) blob. Idempotent.
    pub(super) async fn oci_link_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        Ok(self.inner.index.link_blob(repo, digest).await?)
    }

    pub(super) async fn oci_unlink_blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        Ok(self.inner.index.unlink_blob(repo, digest).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn described_sizes_are_the_largest_a_repository_states_and_go_with_their_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let layer = Digest::sha256_of(b"layer");
        let mut manifests = Vec::new();
        for (i, size) in [(0u8, 100), (1, 250)] {
            let digest = store.put_bytes(&[i; 10], false).await.unwrap();
            let blobs = [(layer.clone(), size)];
            store
                .oci_put_manifest(&NewManifest {
                    repo: &RepoKey::new("up/app".into()),
                    digest: &digest,
                    media_type: "application/vnd.oci.image.manifest.v1+json",
                    size: 10,
                    subject: None,
                    artifact_type: None,
                    annotations: None,
                    blobs: &blobs,
                })
                .await
                .unwrap();
            manifests.push(digest);
        }
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            Some(250)
        );
        assert_eq!(
            store.oci_described_size("up/other", &layer).await.unwrap(),
            None
        );
        store
            .oci_delete_manifest("up/app", &manifests[1])
            .await
            .unwrap();
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            Some(100)
        );
        store.evict_to(0, false).await.unwrap();
        assert_eq!(
            store.oci_described_size("up/app", &layer).await.unwrap(),
            None
        );
    }
}
