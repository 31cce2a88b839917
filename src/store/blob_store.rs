//! Where blob bytes live, behind the one seam a second backend (S3, issue
//! 12) implements again: a verified write-once commit, delete, list and
//! lookup by digest. `LocalBlobs`, files under `blobs/`, is the first; its
//! fast read paths (`openat2`, `preadv2`) stay in `read` and `nowait` and
//! reach it through `path`. The store holds it by type, not behind `dyn`,
//! so a hit costs no extra call.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Digest, StoreError, create_private_dirs, io_error};

/// One stored object, as a listing sees it.
pub(crate) struct ListedBlob {
    pub(crate) digest: Digest,
    pub(crate) modified: SystemTime,
    pub(crate) len: u64,
}

pub(crate) trait BlobStore: Send + Sync {
    /// Makes the complete, verified, fsynced staged file the object for
    /// `digest`. Write-once: if the object exists already (same digest, same
    /// bytes), it stays and the staged file goes. A failed commit leaves no
    /// staged file behind either.
    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), StoreError>;

    /// Removes the object for `digest`; one already gone is no error.
    async fn delete(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Whether an object for `digest` exists.
    fn contains(&self, digest: &Digest) -> bool;

    /// Every stored object. Names that are no digest are logged and left alone.
    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError>;
}

/// Blobs as files `blobs/<alg>/<2 hex>/<hex>` under the data dir.
pub(crate) struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub(crate) fn new(data_dir: &Path) -> LocalBlobs {
        LocalBlobs {
            root: data_dir.join("blobs"),
        }
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        // Built in one allocation: this runs on every hit.
        let hex = digest.hex();
        let algorithm = digest.algorithm().as_str();
        let root = self.root.as_os_str();
        let mut path =
            std::ffi::OsString::with_capacity(root.len() + 1 + algorithm.len() + 4 + hex.len());
        path.push(root);
        path.push("/");
        path.push(algorithm);
        path.push("/");
        path.push(&hex[..2]);
        path.push("/");
        path.push(hex);
        PathBuf::from(path)
    }
}

impl BlobStore for LocalBlobs {
    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), StoreError> {
        let tmp = staged.to_owned();
        let moved_to = self.path(digest);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let parent = moved_to.parent().unwrap_or(Path::new("."));
            if moved_to.exists() {
                // Same digest, same bytes: keep the copy readers may already hold.
                let _ = std::fs::remove_file(&tmp);
                return Ok(());
            }
            let moved = create_private_dirs(parent).and_then(|()| {
                std::fs::rename(&tmp, &moved_to)
                    .map_err(io_error(format!("renaming into {}", moved_to.display())))
            });
            if moved.is_err() {
                // A failed adopt leaves nothing behind for a sweep to find.
                let _ = std::fs::remove_file(&tmp);
            }
            moved?;
            // The rename itself must survive a power cut before the index says so.
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error(format!("syncing {}", parent.display())))
        })
        .await?
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("removing {}", path.display()))(e)),
        }
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_files(&root)).await?
    }
}

/// Every `blobs/<alg>/<xx>/<hex>` file.
fn list_files(root: &Path) -> Result<Vec<ListedBlob>, StoreError> {
    let mut files = Vec::new();
    let read =
        |dir: &Path| std::fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())));
    if !root.exists() {
        return Ok(files);
    }
    for algorithm in read(root)? {
        let algorithm = algorithm.map_err(io_error("listing blobs"))?;
        for prefix in read(&algorithm.path())? {
            let prefix = prefix.map_err(io_error("listing blobs"))?;
            for file in read(&prefix.path())? {
                let file = file.map_err(io_error("listing blobs"))?;
                let name = format!(
                    "{}:{}",
                    algorithm.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                let metadata = file.metadata().ok();
                let modified = metadata
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                match name.parse::<Digest>() {
                    Ok(digest) => files.push(ListedBlob {
                        digest,
                        modified,
                        len: metadata.map_or(0, |m| m.len()),
                    }),
                    // Not a blob name at all: nothing we wrote; leave it alone.
                    Err(_) => {
                        tracing::warn!(path = %file.path().display(), "unexpected file in blobs/")
                    }
                }
            }
        }
    }
    Ok(files)
}
