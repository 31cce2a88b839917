//! The SQLite index, the embedded default: one writer connection (SQLite
//! serializes writers anyway, and one connection makes that explicit instead
//! of a busy-wait) and a pool of readers on the same WAL database. All SQL
//! lives under here, one file per row family; hits read through the reader
//! pool, writes go through the single writer.

mod audit;
mod blobs;
mod go;
mod leases;
mod oci;
#[cfg(test)]
pub(crate) mod testing;
mod transfer;
mod upkeep;
mod uploads;

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Index, IndexError};
use crate::store::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(crate) struct SqliteIndex {
    write: SqlitePool,
    read: SqlitePool,
}

impl From<sqlx::Error> for IndexError {
    fn from(error: sqlx::Error) -> IndexError {
        match &error {
            sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
                IndexError::MissingReference(Box::new(error))
            }
            _ => IndexError::Query(Box::new(error)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for IndexError {
    fn from(error: sqlx::migrate::MigrateError) -> IndexError {
        IndexError::Migrate(Box::new(error))
    }
}

/// Makes sure the index file exists and only its owner can read it, before
/// SQLite opens it: SQLite gives the `-wal` and `-shm` files it creates the
/// database file's mode. An index left readable by an older version is
/// tightened (it and its companions are ours alone), and the change logged.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io {
        context: format!("creating {}", path.display()),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let companion = std::path::PathBuf::from(name);
        if companion.exists() {
            std::fs::set_permissions(&companion, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StoreError::Io {
                    context: format!("making {} private", companion.display()),
                    source,
                },
            )?;
        }
    }
    tracing::warn!(index = %path.display(), was = format!("{mode:04o}"), "the index was readable by other users; now 0600");
    Ok(())
}

impl SqliteIndex {
    /// Opens (creating it private if needed) and migrates the index at `path`.
    pub(crate) async fn open(path: &Path) -> Result<SqliteIndex, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a power cut may lose the last transactions but never
            // corrupts; every file is fsynced before its row is written, so a lost
            // row only means a blob is fetched again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(IndexError::from)?;
        MIGRATOR.run(&write).await.map_err(IndexError::from)?;
        let readers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2) as u32
            * 2;
        let read = SqlitePoolOptions::new()
            .max_connections(readers)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.read_only(true))
            .await
            .map_err(IndexError::from)?;
        Ok(SqliteIndex { write, read })
    }
}

impl Index for SqliteIndex {
    async fn answers(&self) -> Result<(), IndexError> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master")
            .fetch_one(&self.read)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}
