//! Fills across replicas. The replica that wins a fill's lease fetches from
//! upstream as a single process does; a replica whose client asks for the
//! same object meanwhile relays the owner's fill into a local fill of its
//! own, from the owner's peer endpoint, as the bytes arrive there. The
//! follower's readers get the last byte only when the owner's fill is stored
//! and the follower's own hash of what it received matches.
//!
//! When the owner dies mid-fill, its lease expires; a follower claims it and
//! fetches again from upstream through `Refetch`, comparing what comes with
//! the bytes it already relayed (and may have sent), so its clients finish
//! with verified bytes at the cost of one more upstream request.

use std::sync::Arc;
use std::time::Duration;

use super::wire::{Frame, Frames};
use super::{FillError, FillProducer, lease};
use crate::store::index::{Lease, LeaseIndex};
use crate::store::{Store, StoreError};

/// Fetches an object from upstream again into `producer` (detached: the
/// caller returns at once), for a replica taking a fill over.
pub type Refetch = Arc<dyn Fn(Box<FillProducer>) + Send + Sync>;

/// This replica, as the others reach it.
pub struct Cluster {
    /// `cluster.replica`: the name leases are held under.
    pub replica: String,
    /// `cluster.peer_url`: where the others relay this replica's fills from.
    pub peer_url: String,
    /// A client that presents this replica's certificate to the others.
    pub peers: reqwest::Client,
}

pub(super) enum Claimed {
    Won(lease::Held),
    Held { owner_url: String },
}

/// No frame for this long: the owner is taken for gone. Longer than the
/// fill's own `fill_rate_window` cut-off, so a slow upstream fails on the
/// owner (and reaches the follower as that failure) before this fires.
const SILENCE: Duration = Duration::from_secs(90);

/// Rounds of "the owner is gone, but its lease holds" before giving up: at
/// `RETRY_EVERY`, well past a lease's TTL.
const ROUNDS: u32 = 60;
const RETRY_EVERY: Duration = Duration::from_millis(500);

impl Cluster {
    pub(super) async fn claim(&self, store: &Store, key: &str) -> Result<Claimed, StoreError> {
        let lease = store
            .inner
            .index
            .claim_fill(key, &self.replica, &self.peer_url, lease::TTL)
            .await?;
        Ok(match lease {
            Lease::Won { epoch } => Claimed::Won(lease::Held::start(store, key, epoch)),
            Lease::Held { owner_url, .. } => Claimed::Held { owner_url },
        })
    }
}

enum Relayed {
    Finished {
        digest: crate::store::Digest,
        size: u64,
    },
    Failed(FillError),
    /// The owner went away, or never had this fill: claim it again.
    Lost(String),
}

/// Relays the fill owned at `owner_url` into `producer`'s local fill until it
/// is stored, fails, or this replica takes it over.
pub(super) async fn follow(
    cluster: Arc<Cluster>,
    mut producer: Box<FillProducer>,
    mut owner_url: String,
    refetch: Refetch,
) {
    let mut rounds = 0;
    loop {
        let reason = match relay_from(&cluster, &mut producer, &owner_url).await {
            Relayed::Finished { digest, size } => {
                producer.finish_relayed(digest, size).await;
                return;
            }
            Relayed::Failed(error) => {
                producer.fail(error);
                return;
            }
            Relayed::Lost(reason) => reason,
        };
        rounds += 1;
        if rounds > ROUNDS {
            producer.fail(FillError::Upstream(crate::store::UpstreamFailure::new(
                None,
                format!("the replica filling it ({owner_url}) is gone: {reason}"),
            )));
            return;
        }
        if rounds == 1 {
            tracing::info!(owner = %owner_url, %reason, "lost the replica filling an object; claiming its lease");
        }
        tokio::time::sleep(RETRY_EVERY).await;
        let claimed = cluster.claim(&producer.store, &producer.key).await;
        if producer.received() == 0
            && producer.prefix == 0
            && matches!(claimed, Ok(Claimed::Won(_)))
        {
            // Nothing passed on yet, and the owner is done with it: most
            // likely it stored the object just before this replica asked.
            // The readers look again (the callers' loop), and find it
            // stored or claim the fill themselves.
            drop(claimed);
            producer.withdraw();
            return;
        }
        // Whatever comes next sends the object from byte 0 again, compared
        // with what this replica has already passed on.
        producer.restart();
        match claimed {
            Ok(Claimed::Won(lease)) => {
                tracing::info!(dead_owner = %owner_url, "took over a fill; fetching it from upstream again");
                producer.lease = Some(lease);
                refetch(producer);
                return;
            }
            Ok(Claimed::Held { owner_url: next }) => owner_url = next,
            Err(error) => {
                producer.fail(FillError::from(error));
                return;
            }
        }
    }
}

async fn relay_from(cluster: &Cluster, producer: &mut FillProducer, owner_url: &str) -> Relayed {
    let url = format!(
        "{}/fills/{}",
        owner_url.trim_end_matches('/'),
        hex::encode(producer.key.as_bytes())
    );
    let response = match cluster.peers.get(&url).send().await {
        Ok(response) => response,
        Err(error) => return Relayed::Lost(format!("cannot reach it: {error}")),
    };
    if !response.status().is_success() {
        return Relayed::Lost(format!("it answered {}", response.status()));
    }
    let mut frames = Frames::new(Box::pin(response.bytes_stream()));
    loop {
        let frame = match tokio::time::timeout(SILENCE, frames.next()).await {
            Err(_) => return Relayed::Lost(format!("it sent nothing for {}s", SILENCE.as_secs())),
            Ok(Err(reason)) => return Relayed::Lost(reason),
            Ok(Ok(None)) => return Relayed::Lost("it ended the fill without a verdict".to_owned()),
            Ok(Ok(Some(frame))) => frame,
        };
        match frame {
            Frame::Head(head) => {
                if producer.head.is_none()
                    && let Err(error) = producer.start(head)
                {
                    return Relayed::Failed(error);
                }
            }
            Frame::Data(bytes) => {
                if let Err(error) = producer.write(bytes).await {
                    return Relayed::Failed(error);
                }
            }
            Frame::Finished { digest, size } => return Relayed::Finished { digest, size },
            Frame::Failed(error) => return Relayed::Failed(error),
        }
    }
}
