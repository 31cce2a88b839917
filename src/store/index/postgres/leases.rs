//! Fill leases: one row per fill in progress anywhere in the cluster. A claim
//! is one statement, so two replicas claiming at once get one winner; an
//! expired lease is taken with the next epoch, which fences its old owner
//! (its renewals and release then match no row).

use std::time::Duration;

use super::PgIndex;
use crate::store::index::{IndexError, Lease, LeaseIndex};

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl LeaseIndex for PgIndex {
    async fn claim_fill(
        &self,
        key: &str,
        owner: &str,
        owner_url: &str,
        ttl: Duration,
    ) -> Result<Lease, IndexError> {
        // The row can vanish between the claim and the read (its owner
        // finished): then the next claim wins.
        for _ in 0..3 {
            let won: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO fills (key, owner, owner_url, epoch, lease_until)
                 VALUES ($1, $2, $3, 1, clock_timestamp() + make_interval(secs => $4 / 1000.0))
                 ON CONFLICT (key) DO UPDATE
                 SET owner = EXCLUDED.owner, owner_url = EXCLUDED.owner_url,
                     epoch = fills.epoch + 1, lease_until = EXCLUDED.lease_until
                 WHERE fills.lease_until < clock_timestamp()
                 RETURNING epoch",
            )
            .bind(key)
            .bind(owner)
            .bind(owner_url)
            .bind(millis(ttl))
            .fetch_optional(&self.pool)
            .await?;
            if let Some((epoch,)) = won {
                return Ok(Lease::Won { epoch });
            }
            let held: Option<(String, String, i64)> =
                sqlx::query_as("SELECT owner, owner_url, epoch FROM fills WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some((owner, owner_url, epoch)) = held {
                return Ok(Lease::Held {
                    owner,
                    owner_url,
                    epoch,
                });
            }
        }
        Err(IndexError::Corrupt(format!(
            "the lease on fill {key:?} changed hands three times in a row"
        )))
    }

    async fn renew_fill(&self, key: &str, epoch: i64, ttl: Duration) -> Result<bool, IndexError> {
        let renewed = sqlx::query(
            "UPDATE fills SET lease_until = clock_timestamp() + make_interval(secs => $3 / 1000.0)
             WHERE key = $1 AND epoch = $2",
        )
        .bind(key)
        .bind(epoch)
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn release_fill(&self, key: &str, epoch: i64) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM fills WHERE key = $1 AND epoch = $2")
            .bind(key)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
