//! The real engines the cluster suite runs on, each proven with the client the
//! product uses: a private PostgreSQL 15 through sqlx (queries as the `mirror`
//! role, an outage and a restart on the same port and data), and a single-node
//! Garage through object_store's S3 client (put, ranged get, list, delete,
//! multipart uploads completed, completed from another client, and aborted).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::garage::Garage;
use common::postgres::Postgres;
use common::wait_for;
use futures_util::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};

const MIB: usize = 1024 * 1024;
/// S3's smallest part but the last; Garage does not insist, real S3 does.
const PART: usize = 5 * MIB;

async fn start_postgres() -> Postgres {
    tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres start task")
}

async fn start_garage() -> Garage {
    tokio::task::spawn_blocking(Garage::start)
        .await
        .expect("garage start task")
}

async fn pool(postgres: &Postgres) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&postgres.url())
        .await
        .expect("connect to postgres as mirror")
}

/// Bytes that differ at every offset, so a wrong range cannot match.
fn patterned(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_serves_the_mirror_role_and_its_data_survives_an_outage_and_a_restart() {
    let mut postgres = start_postgres().await;
    let pool = pool(&postgres).await;
    let (user, superuser): (String, bool) =
        sqlx::query_as("SELECT rolname::text, rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .expect("who am I");
    assert_eq!((user.as_str(), superuser), ("mirror", false));
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&pool)
        .await
        .expect("SHOW listen_addresses");
    assert_eq!(listen, "127.0.0.1", "loopback only");
    sqlx::query("CREATE TABLE survivors (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create table as mirror");
    sqlx::query("INSERT INTO survivors (id, name) VALUES ($1, $2)")
        .bind(1_i64)
        .bind("written before the outage")
        .execute(&pool)
        .await
        .expect("insert");

    let postmaster = postgres.pid();
    let mut postgres = tokio::task::spawn_blocking(move || {
        postgres.halt();
        postgres
    })
    .await
    .expect("halt task");
    let during = sqlx::query("SELECT 1").execute(&pool).await;
    assert!(during.is_err(), "a query succeeded while postgres was down");

    let postgres = tokio::task::spawn_blocking(move || {
        postgres.resume();
        postgres.restart();
        postgres
    })
    .await
    .expect("resume and restart task");
    assert_ne!(postgres.pid(), postmaster, "restart made a new postmaster");
    // The same pool recovers: the product must not need a restart of its own.
    wait_for("the pool to reconnect", Duration::from_secs(10), || async {
        sqlx::query("SELECT 1").execute(&pool).await.is_ok()
    })
    .await;
    let name: String = sqlx::query_scalar("SELECT name FROM survivors WHERE id = $1")
        .bind(1_i64)
        .fetch_one(&pool)
        .await
        .expect("read back after restart");
    assert_eq!(name, "written before the outage");
    pool.close().await;
    postgres.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_has_room_for_three_replicas() {
    let postgres = start_postgres().await;
    let pool = pool(&postgres).await;
    let max: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&pool)
        .await
        .expect("SHOW max_connections");
    let max: usize = max.parse().expect("max_connections is a number");
    assert!(
        max >= 3 * 32,
        "max_connections {max} is too small for 3 replicas"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_puts_gets_ranges_lists_and_deletes_objects() {
    let garage = start_garage().await;
    let store = garage.client();
    let blob = patterned(3 * MIB + 17, 1);
    let blob_path = Path::from(format!("blobs/sha256/{}", sha256(&blob)));
    let note_path = Path::from("blobs/notes/readme");
    store
        .put(&blob_path, PutPayload::from(blob.clone()))
        .await
        .expect("put blob");
    store
        .put(&note_path, PutPayload::from_static(b"hello"))
        .await
        .expect("put note");

    let range = 2 * MIB as u64 - 5..3 * MIB as u64 + 11;
    let got = store
        .get_range(&blob_path, range.clone())
        .await
        .expect("ranged get");
    let (start, end) = (range.start as usize, range.end as usize);
    assert_eq!(got, blob.slice(start..end), "the bytes of the range");
    let whole = store
        .get(&blob_path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256(&whole), sha256(&blob));

    let mut listed: Vec<(String, u64)> = store
        .list(Some(&Path::from("blobs")))
        .map_ok(|meta| (meta.location.to_string(), meta.size))
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    let mut expected = vec![
        (blob_path.to_string(), blob.len() as u64),
        (note_path.to_string(), 5),
    ];
    expected.sort();
    assert_eq!(listed, expected);

    store.delete(&blob_path).await.expect("delete");
    let gone = store.head(&blob_path).await;
    assert!(
        matches!(gone, Err(object_store::Error::NotFound { .. })),
        "deleted object still there: {gone:?}"
    );
    let left: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .expect("list after delete");
    assert_eq!(left.len(), 1, "only the note is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_multipart_upload_is_invisible_until_complete_and_abort_leaves_nothing() {
    let garage = start_garage().await;
    let store = garage.client();
    let parts = [patterned(PART, 2), patterned(PART, 3), patterned(1000, 4)];
    let whole: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();

    // Streamed parts through the upload handle, completed.
    let path = Path::from("blobs/multipart/streamed");
    let mut upload = store.put_multipart(&path).await.expect("create multipart");
    for part in &parts {
        upload
            .put_part(PutPayload::from(part.clone()))
            .await
            .expect("put part");
    }
    let before = store.head(&path).await;
    assert!(
        matches!(before, Err(object_store::Error::NotFound { .. })),
        "an incomplete upload is visible: {before:?}"
    );
    upload.complete().await.expect("complete");
    let got = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256(&got), sha256(&whole), "completed object");

    // Begun by one client, finished by another, as a push moves between replicas.
    let path = Path::from("blobs/multipart/handed-over");
    let id = store.create_multipart(&path).await.expect("create");
    let mut etags = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let etag = store
            .put_part(&path, &id, index, PutPayload::from(part.clone()))
            .await
            .expect("put part");
        etags.push(etag);
    }
    garage
        .client()
        .complete_multipart(&path, &id, etags)
        .await
        .expect("complete from another client");
    let got = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        sha256(&got),
        sha256(&whole),
        "object completed by another client"
    );

    // Aborted: nothing is visible and Garage holds no upload. Garage counts
    // in the background, so the completed uploads must be counted out first.
    wait_for(
        "garage to count the completed uploads out",
        Duration::from_secs(10),
        || async { garage.unfinished_multipart_uploads().await == 0 },
    )
    .await;
    let path = Path::from("blobs/multipart/aborted");
    let id = store.create_multipart(&path).await.expect("create");
    store
        .put_part(&path, &id, 0, PutPayload::from(parts[0].clone()))
        .await
        .expect("put part");
    wait_for(
        "garage to count the open upload",
        Duration::from_secs(10),
        || async { garage.unfinished_multipart_uploads().await == 1 },
    )
    .await;
    store.abort_multipart(&path, &id).await.expect("abort");
    wait_for(
        "garage to drop the aborted upload",
        Duration::from_secs(10),
        || async { garage.unfinished_multipart_uploads().await == 0 },
    )
    .await;
    let after = store
        .put_part(&path, &id, 1, PutPayload::from(parts[2].clone()))
        .await;
    assert!(after.is_err(), "a part was accepted into an aborted upload");
    let aborted = store.head(&path).await;
    assert!(
        matches!(aborted, Err(object_store::Error::NotFound { .. })),
        "an aborted upload is visible: {aborted:?}"
    );
}
