//! The audit part of the store: what `mirror audit` reads, and the retention
//! that prunes it. Rows are written by `AuditLog`. A borrow of the store that
//! delegates; the SQL stays in `audit`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AuditQuery, AuditRecord, Store, StoreError};

impl Store {
    /// The audit trail.
    pub fn audit(&self) -> AuditTrail<'_> {
        AuditTrail { store: self }
    }
}

/// Who asked for what, as the index keeps it.
#[derive(Clone, Copy)]
pub struct AuditTrail<'a> {
    store: &'a Store,
}

impl AuditTrail<'_> {
    /// The records `query` selects, newest first.
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit_query(query).await
    }

    /// Deletes records older than `before_ms`; how many went.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.store.prune_audit(before_ms).await
    }

    /// Prunes records older than `retention`, hourly, until `stop`.
    pub fn spawn_retention(&self, retention: Duration, stop: CancellationToken) {
        self.store.spawn_audit_retention(retention, stop);
    }
}
