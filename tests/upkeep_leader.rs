//! One upkeep leader among the processes sharing a PostgreSQL index: of two
//! stores on one real PostgreSQL 15, exactly one leads; when it closes, or
//! its database session is killed, the other takes over within a bounded
//! wait; and an over-full cache is evicted by the leader's timer only.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::postgres::Postgres;
use common::wait_for;
use mirror::store::{IndexChoice, Origin, Storage, Store};
use tokio_util::sync::CancellationToken;

/// How often the stores here try for leadership (a server's is seconds).
const EVERY: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(15);

async fn start_postgres() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres start task")
}

/// A store on the shared index, campaigning for leadership until `stop`.
/// Both stores of a test share one data dir too, so either can read and
/// delete the other's files.
async fn replica(dir: &Path, postgres: &Postgres, stop: &CancellationToken) -> Store {
    let store = Store::open_with(dir, &Storage::Files, &IndexChoice::Postgres(postgres.url()))
        .await
        .expect("open the store");
    store.spawn_leadership(EVERY, stop.clone());
    store
}

async fn wait_until_leads(what: &str, store: &Store, leads: bool) {
    wait_for(what, DEADLINE, || {
        let store = store.clone();
        async move { store.is_upkeep_leader() == leads }
    })
    .await;
}

/// Two replicas, the first already leading.
async fn two_replicas(dir: &Path, postgres: &Postgres, stop: &CancellationToken) -> (Store, Store) {
    let first = replica(dir, postgres, stop).await;
    wait_until_leads("the first replica to lead", &first, true).await;
    let second = replica(dir, postgres, stop).await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_replicas_leads_and_the_other_takes_over_when_it_closes() {
    let postgres = start_postgres().await;
    let dir = tempfile::tempdir().expect("data dir");
    let stop = CancellationToken::new();
    let (first, second) = two_replicas(dir.path(), &postgres, &stop).await;
    // Twenty of the second's tries, every one refused.
    tokio::time::sleep(EVERY * 20).await;
    assert!(first.is_upkeep_leader());
    assert!(!second.is_upkeep_leader(), "two leaders at once");

    first.close().await;
    assert!(
        !first.is_upkeep_leader(),
        "a closed store hands leadership back"
    );
    wait_until_leads("the second replica to take over", &second, true).await;
    tokio::time::sleep(EVERY * 5).await;
    assert!(
        !first.is_upkeep_leader(),
        "a closed store never leads again"
    );
    stop.cancel();
    second.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_session_is_killed_stops_leading_and_another_takes_over() {
    let postgres = start_postgres().await;
    let dir = tempfile::tempdir().expect("data dir");
    let stop = CancellationToken::new();
    let (first, second) = two_replicas(dir.path(), &postgres, &stop).await;

    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres.admin_url())
        .await
        .expect("connect as the superuser");
    let killed: Vec<bool> = sqlx::query_scalar(
        // objsubid 2: a lock taken with two keys, as the upkeep lock is.
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND granted",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate the lock holder");
    assert_eq!(killed, [true], "one session holds the upkeep lock");

    wait_until_leads("the second replica to take over", &second, true).await;
    wait_until_leads("the first replica to notice", &first, false).await;
    // The first keeps trying, and is refused while the second leads.
    tokio::time::sleep(EVERY * 10).await;
    assert!(!first.is_upkeep_leader() && second.is_upkeep_leader());
    stop.cancel();
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_full_cache_is_evicted_by_the_leaders_timer_only() {
    let postgres = start_postgres().await;
    let dir = tempfile::tempdir().expect("data dir");
    let stop = CancellationToken::new();
    let (first, second) = two_replicas(dir.path(), &postgres, &stop).await;
    for i in 0..3u8 {
        second
            .blobs()
            .put(&[i; 100], Origin::Cached)
            .await
            .expect("put");
    }
    // The follower's timer checks at once, finds 300 bytes over a 10-byte
    // cache, and leaves them: eviction is the leader's.
    second.spawn_eviction(10, 0.5, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(second.totals().await.expect("totals").blobs, 3);

    first.spawn_eviction(10, 0.5, stop.clone());
    wait_for("the leader to evict", DEADLINE, || {
        let store = second.clone();
        async move { store.totals().await.expect("totals").blobs == 0 }
    })
    .await;
    let evicted = |store: &Store| store.counters().evicted_blobs.load(Ordering::Relaxed);
    assert_eq!((evicted(&first), evicted(&second)), (3, 0));

    // The leader gone, the follower's timer takes over the eviction too.
    first.close().await;
    for i in 10..12u8 {
        second
            .blobs()
            .put(&[i; 100], Origin::Cached)
            .await
            .expect("put");
    }
    wait_until_leads("the second replica to take over", &second, true).await;
    wait_for("the new leader to evict", DEADLINE, || {
        let store = second.clone();
        async move { store.totals().await.expect("totals").blobs == 0 }
    })
    .await;
    assert_eq!((evicted(&first), evicted(&second)), (3, 2));
    stop.cancel();
    second.close().await;
}
