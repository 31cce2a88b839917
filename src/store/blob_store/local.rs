//! Blobs as files `blobs/<alg>/<2 hex>/<hex>` under the data dir, and bad
//! ones moved to `quarantine/<alg>/<hex>`. A warm hit is opened and read on
//! the async worker when the kernel has the path and the bytes cached
//! (`nowait`), otherwise in one trip to the blocking pool.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{BlobObject, BlobStore, ListedBlob, Opened, Quarantined, UploadJournal, nowait};
use crate::store::{Digest, StoreError, create_private_dirs, io_error};

/// Read size when streaming a file: large enough that the per-read cost of a
/// blocking-pool hop vanishes next to TLS, small enough to keep memory flat.
const FILE_CHUNK: usize = 256 * 1024;

/// Blobs as files `blobs/<alg>/<2 hex>/<hex>` under the data dir.
pub(crate) struct LocalBlobs {
    root: PathBuf,
    quarantine: PathBuf,
}

/// An open blob file.
pub(crate) struct LocalObject {
    file: std::fs::File,
    size: u64,
}

impl LocalBlobs {
    pub(crate) fn new(data_dir: &Path) -> LocalBlobs {
        LocalBlobs {
            root: data_dir.join("blobs"),
            quarantine: data_dir.join("quarantine"),
        }
    }

    fn quarantine_path(&self, digest: &Digest) -> PathBuf {
        self.quarantine
            .join(digest.algorithm().as_str())
            .join(digest.hex())
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

impl BlobObject for LocalObject {
    fn size(&self) -> u64 {
        self.size
    }

    async fn stream(
        &self,
        start: u64,
        len: u64,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        // A second descriptor, so the object keeps its identity for a
        // quarantine while the stream reads.
        let mut file = tokio::fs::File::from_std(self.file.try_clone()?);
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        Ok(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            FILE_CHUNK,
        ))
    }
}

impl BlobStore for LocalBlobs {
    type Object = LocalObject;

    async fn open(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<Opened<LocalObject>>, StoreError> {
        let path = self.path(digest);
        let context = || format!("reading blob {digest}");
        let cached = match nowait::open(&path) {
            Ok(Some(file)) => open_read(file, read_limit, true)
                .map_err(io_error(context()))?
                .map_err(Some),
            Ok(None) => Err(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(context())(e)),
        };
        match cached {
            Ok(opened) => Ok(Some(opened)),
            Err(open) => {
                let read = tokio::task::spawn_blocking(move || {
                    let file = match open {
                        Some(file) => file,
                        None => match std::fs::File::open(&path) {
                            Ok(file) => file,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                            Err(e) => return Err(e),
                        },
                    };
                    Ok(open_read(file, read_limit, false)?.ok())
                });
                read.await?.map_err(io_error(context()))
            }
        }
    }

    async fn commit(
        &self,
        staged: &Path,
        digest: &Digest,
        _renamed_not_uploaded: &impl UploadJournal,
    ) -> Result<(), StoreError> {
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

    async fn contains(&self, digest: &Digest) -> bool {
        // One stat, inline: it is as quick as the hop a blocking task costs.
        self.path(digest).exists()
    }

    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_files(&root)).await?
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        opened: &LocalObject,
    ) -> Result<Quarantined, StoreError> {
        let path = self.path(digest);
        let target = self.quarantine_path(digest);
        let opened = opened.file.metadata().map(|m| (m.dev(), m.ino()));
        let shown = target.display().to_string();
        tokio::task::spawn_blocking(move || {
            let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino()));
            match (opened, current) {
                (Ok(opened), Ok(current)) if opened == current => {}
                _ => return Ok(Quarantined::Replaced),
            }
            move_aside(&path, &target)
                .map(|()| Quarantined::Moved(shown))
                .map_err(io_error(format!("moving {} aside", path.display())))
        })
        .await?
    }

    async fn is_quarantined(&self, digest: &Digest) -> bool {
        tokio::fs::try_exists(self.quarantine_path(digest))
            .await
            .unwrap_or(false)
    }
}

/// Sizes an open blob file and, if it is at most `read_limit` bytes, reads
/// it whole (an empty one too, unless `read_limit` is zero: nothing to
/// hold back when streaming it, so it is checked by the caller). With
/// `nowait`, a read that would wait for the disk hands the file back
/// (`Err(file)`).
fn open_read(
    file: std::fs::File,
    read_limit: u64,
    nowait: bool,
) -> std::io::Result<Result<Opened<LocalObject>, std::fs::File>> {
    use std::io::Read;
    let size = file.metadata()?.len();
    if read_limit == 0 || size > read_limit {
        return Ok(Ok(Opened::Object(LocalObject { file, size })));
    }
    let mut bytes = vec![0; size as usize];
    if nowait {
        return Ok(match nowait::read_exact_at(&file, &mut bytes, 0)? {
            Some(()) => Ok(Opened::Whole(bytes, LocalObject { file, size })),
            None => Err(file),
        });
    }
    (&file).read_exact(&mut bytes)?;
    Ok(Ok(Opened::Whole(bytes, LocalObject { file, size })))
}

/// Renames `path` to `target` (same file system), replacing an older
/// quarantined copy of the same digest; the folder is private, as `blobs/` is.
fn move_aside(path: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    std::fs::rename(path, target)
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
