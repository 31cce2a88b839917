//! Fill leases on SQLite: one process owns the index, so its in-process fill
//! slots already make every fill the only one, and each claim wins.

use std::time::Duration;

use super::SqliteIndex;
use crate::store::index::{IndexError, Lease, LeaseIndex};

impl LeaseIndex for SqliteIndex {
    async fn claim_fill(
        &self,
        _key: &str,
        _owner: &str,
        _owner_url: &str,
        _ttl: Duration,
    ) -> Result<Lease, IndexError> {
        Ok(Lease::Won { epoch: 0 })
    }

    async fn renew_fill(
        &self,
        _key: &str,
        _epoch: i64,
        _ttl: Duration,
    ) -> Result<bool, IndexError> {
        Ok(true)
    }

    async fn release_fill(&self, _key: &str, _epoch: i64) -> Result<(), IndexError> {
        Ok(())
    }
}
