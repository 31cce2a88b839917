//! The PostgreSQL index, for several replicas sharing one database: the same
//! rows and transactions as the SQLite index, in PostgreSQL's dialect (`$N`
//! parameters, `GREATEST`, `strpos`, sums cast back to BIGINT). One pool
//! serves reads and writes: PostgreSQL runs writers concurrently, so there is
//! no single writer to make explicit. All SQL for this backend lives under
//! here, one file per row family.

mod audit;
mod blobs;
mod go;
mod leader;
mod leases;
mod multipart;
mod notify;
mod oci;
mod transfer;
mod upkeep;
mod uploads;

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

pub(crate) use leader::Leadership;

use super::{Index, IndexError};
pub(crate) use notify::Feed;

/// Its own folder: `sqlx::migrate!` reads only the files directly in a
/// directory, so the SQLite migrator beside it never sees these.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per replica: the request paths' reads and writes together.
const POOL_SIZE: u32 = 32;

pub(crate) struct PgIndex {
    pool: PgPool,
}

impl PgIndex {
    /// Connects to the database at `url` and brings its schema up to date.
    /// Several replicas may start at once: the migrator holds a PostgreSQL
    /// advisory lock while it runs, so one applies and the others then find
    /// nothing left to do.
    pub(crate) async fn open(url: &str) -> Result<PgIndex, IndexError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgIndex { pool })
    }

    /// A listener for the change notices every replica's writes send.
    pub(crate) fn feed(&self) -> Feed {
        Feed::new(self.pool.clone())
    }
}

impl Index for PgIndex {
    async fn answers(&self) -> Result<(), IndexError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
