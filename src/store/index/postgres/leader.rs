//! Leadership of upkeep among replicas: PostgreSQL's session advisory lock
//! under one constant key, taken on a connection of its own that lives as
//! long as leadership does. When the session ends (the process killed, the
//! connection dropped, the server restarted) the lock goes with it and
//! another replica's next try takes it.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::PgIndex;
use crate::store::index::{IndexError, LeaderGuard};

/// The advisory lock's key, in the two-number form: PostgreSQL keeps those
/// apart from single-`bigint` keys, which the migrator and the upload quota
/// (`hashtextextended`) take, so no hash of theirs can ever equal it.
/// "mirr" and "upkp" in ASCII.
const UPKEEP_LOCK: (i32, i32) = (0x6d69_7272, 0x7570_6b70);

/// How long the leader's session may take to answer before leadership is
/// treated as lost: a leader that cannot tell it still leads stops leading.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting and asking for the lock may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The session that holds the lock.
pub(crate) struct Leadership {
    session: PgConnection,
}

impl PgIndex {
    /// Bounded, since the store waits on this before an upkeep pass: a
    /// database that does not answer is a refusal this time.
    pub(super) async fn try_lead_upkeep(&self) -> Result<Option<LeaderGuard>, IndexError> {
        tokio::time::timeout(TRY_TIMEOUT, self.try_lock_on_own_session())
            .await
            .map_err(|elapsed| IndexError::Query(Box::new(elapsed)))?
    }

    async fn try_lock_on_own_session(&self) -> Result<Option<LeaderGuard>, IndexError> {
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name("mirror upkeep leader");
        let mut session = PgConnection::connect_with(&options).await?;
        let granted: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(UPKEEP_LOCK.0)
            .bind(UPKEEP_LOCK.1)
            .fetch_one(&mut session)
            .await?;
        if !granted {
            let _ = session.close().await;
            return Ok(None);
        }
        Ok(Some(LeaderGuard::Postgres(Leadership { session })))
    }
}

impl Leadership {
    pub(crate) async fn holds(&mut self) -> bool {
        let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut self.session);
        matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(1)))
    }

    /// Closing the session releases the lock with it.
    pub(crate) async fn release(self) {
        let _ = self.session.close().await;
    }
}
