//! Whether the store can serve right now (for `/readyz`): the index answers a
//! query and `data_dir` takes a new file. Each failure is named without a
//! path: the answer goes to anonymous callers.

use std::io::Write;
use std::time::Duration;

use super::Store;
use super::index::Index;

/// A check that takes longer than this counts as failed: a probe must answer
/// before the load balancer's own timeout, and a stuck index is not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the index does not answer: {0}")]
    Index(String),
    #[error("data_dir is not writable: {0}")]
    DataDir(String),
}

impl Store {
    /// Runs both checks; empty when the store is ready. Reads go through the
    /// reader pool only: the one writer connection is busy under load, and a
    /// busy instance is still ready.
    pub async fn readiness(&self) -> Vec<NotReady> {
        let (index, data_dir) = tokio::join!(self.index_answers(), self.data_dir_writable());
        [index.err(), data_dir.err()]
            .into_iter()
            .flatten()
            .collect()
    }

    async fn index_answers(&self) -> Result<(), NotReady> {
        let query = self.inner.index.answers();
        match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            // The backend's own words: the answer already says it is the index.
            Ok(Err(error)) => Err(NotReady::Index(
                std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string),
            )),
            Err(_) => Err(NotReady::Index(format!(
                "no answer within {CHECK_TIMEOUT:?}"
            ))),
        }
    }

    /// Creates, writes and removes a probe file where fills write theirs.
    async fn data_dir_writable(&self) -> Result<(), NotReady> {
        let probe = self.new_temp_path("readyz");
        let write = tokio::task::spawn_blocking(move || {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .and_then(|mut file| file.write_all(b"ready"));
            let _ = std::fs::remove_file(&probe);
            written
        });
        match tokio::time::timeout(CHECK_TIMEOUT, write).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(NotReady::DataDir(format!(
                "cannot create a file in tmp/: {error}"
            ))),
            Ok(Err(error)) => Err(NotReady::DataDir(error.to_string())),
            Err(_) => Err(NotReady::DataDir(format!(
                "no file created in tmp/ within {CHECK_TIMEOUT:?}"
            ))),
        }
    }
}
