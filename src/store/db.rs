//! The SQLite index: one writer connection (SQLite serializes writers anyway, and
//! one connection makes that explicit instead of a busy-wait) and a pool of
//! readers on the same WAL database. All SQL shared across protocols lives here;
//! each protocol's tables have their own file beside it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Digest, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct Db {
    pub(crate) write: SqlitePool,
    pub(crate) read: SqlitePool,
}

/// A digest read back from the index.
pub(crate) fn indexed_digest(text: &str) -> Result<Digest, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("index holds an invalid digest {text:?}")))
}

/// Seconds since the Unix epoch, as the index stores times.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Makes sure the index file exists and only its owner can read it, before
/// SQLite opens it: SQLite gives the `-wal` and `-shm` files it creates the
/// database file's mode. An index left readable by an older version is
/// tightened (it and its companions are ours alone), and the change logged.
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
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

impl Db {
    pub async fn open(path: &Path) -> Result<Db, StoreError> {
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
            .await?;
        MIGRATOR.run(&write).await?;
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
            .await?;
        Ok(Db { write, read })
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// Records a complete, verified blob file. Idempotent.
    pub async fn insert_blob(
        &self,
        digest: &Digest,
        size: u64,
        hosted: bool,
    ) -> Result<(), StoreError> {
        let now = now_secs();
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, accessed_at, hosted) VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (digest) DO UPDATE SET accessed_at = ?3, hosted = MAX(hosted, ?4)",
        )
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now)
        .bind(i64::from(hosted))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?1")
            .bind(digest.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(size.map(|s| s as u64))
    }
}
