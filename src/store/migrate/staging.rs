//! The target's staged files of a migration, `tmp/migrate-…` in its data
//! dir. One migration at a time stages there (it holds `migrate.lock`), so
//! whatever such files it finds at start were left by a killed run and go.

use std::os::unix::fs::OpenOptionsExt;

use crate::store::{Store, StoreError, io_error};

/// The prefix of a migration's staged files.
pub(super) const STAGED: &str = "migrate";

impl Store {
    /// Takes the data dir's migration lock, held while the returned file
    /// lives, and removes the staged files a killed migration left.
    pub(super) fn claim_staging(&self) -> Result<std::fs::File, StoreError> {
        let path = self.inner.root.join("migrate.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        lock.try_lock().map_err(|_| {
            StoreError::Corrupt(format!(
                "another migration stages files in {} (lock {})",
                self.inner.root.display(),
                path.display()
            ))
        })?;
        let tmp = self.inner.root.join("tmp");
        let entries =
            std::fs::read_dir(&tmp).map_err(io_error(format!("listing {}", tmp.display())))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(&format!("{STAGED}-")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(lock)
    }
}
