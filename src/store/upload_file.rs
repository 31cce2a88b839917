//! The file a push's bytes arrive in, hashed as they do. Only the store knows
//! where it lives: a protocol holds the handle, writes chunks through it and
//! hands it back to be committed or thrown away.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::{Hasher, StoreError, io_error};

/// Bytes being received, with the hash of all of them so far.
pub struct UploadFile {
    pub(super) path: PathBuf,
    pub(super) file: tokio::fs::File,
    pub(super) size: u64,
    pub(super) hasher: Hasher,
    /// When sessions keep their bytes in the bucket: the file holds only
    /// this request's chunk, which begins after the session's first `base` bytes.
    pub(super) part: Option<Part>,
}

/// A chunk of a session whose earlier bytes are in the bucket, written under
/// the session's writer lease (one writer at a time, cluster-wide).
pub(super) struct Part {
    pub(super) id: String,
    pub(super) base: u64,
    /// Held while this request writes; `None` once its chunk is recorded.
    pub(super) writer: Option<crate::store::fill::lease::Held>,
}

impl Part {
    /// Lets the session's next request write, from the moment this returns.
    pub(super) async fn release(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.release().await;
        }
    }
}

impl UploadFile {
    /// How many bytes the file holds, those of this request included.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Appends `data` and hashes it.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(io_error(format!("writing {}", self.path.display())))?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Hands what was written to the file system (not yet to the disk).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.file
            .flush()
            .await
            .map_err(io_error(format!("writing {}", self.path.display())))
    }

    /// Drops what a failed chunk left past the `acknowledged` bytes. Best
    /// effort: opening the session again cuts them off as well.
    pub async fn cut_back(self, acknowledged: u64) {
        if self.part.is_some() {
            // The chunk was this request's alone: nothing of it was acknowledged.
            self.discard().await;
            return;
        }
        if let Err(error) = self.file.set_len(acknowledged).await {
            tracing::warn!(%error, path = %self.path.display(), "could not cut back a failed chunk");
        }
    }

    /// Removes the file; for bytes no session will go on with.
    pub async fn discard(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
        if let Some(mut part) = self.part {
            part.release().await;
        }
    }
}
