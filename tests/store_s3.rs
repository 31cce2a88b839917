//! The store with its blob bytes in an S3-compatible bucket: a real
//! single-node Garage on loopback, the same Store API the protocols call. A
//! small object and a multipart one (pushed through an upload session) go in
//! under their digest and come back whole and by range; a wrong digest leaves
//! nothing in the bucket and no upload unfinished; an object changed behind
//! the store's back is quarantined in the bucket and reads as absent.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::garage::Garage;
use common::{noise, wait_for};
use futures_util::TryStreamExt;
use mirror::store::{
    Begun, Digest, IndexChoice, Origin, Pushed, RepoKey, S3Settings, Storage, Store, UploadId,
    UploadOwner, VerifyOnRead,
};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

const MIB: usize = 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

fn settings(garage: &Garage) -> S3Settings {
    S3Settings {
        endpoint: garage.endpoint(),
        bucket: garage.bucket().to_owned(),
        region: garage.region().to_owned(),
        path_style: true,
        access_key_id: garage.access_key_id().to_owned(),
        secret_access_key: garage.secret_access_key().to_owned(),
    }
}

fn key(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/sha256/{}/{hex}", &hex[..2]))
}

async fn exists(bucket: &AmazonS3, key: &Path) -> bool {
    match bucket.head(key).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(error) => panic!("HEAD {key}: {error}"),
    }
}

/// Pushes `bytes` through an upload session in 1 MiB chunks and commits it
/// under `digest`.
async fn push(store: &Store, id: &str, bytes: &[u8], digest: &Digest) -> Pushed {
    let id = &UploadId::parse(id).expect("an upload id");
    let uploads = store.uploads();
    let owner = UploadOwner::new("alice".to_owned());
    let begun = uploads
        .begin(id, &RepoKey::new("hosted/app".into()), &owner, 8)
        .await;
    assert_eq!(begun.expect("begin an upload session"), Begun::Opened);
    let row = uploads.find(id).await.expect("find").expect("session row");
    let mut file = uploads
        .resume(id, &row)
        .await
        .expect("resume")
        .expect("session file");
    for chunk in bytes.chunks(MIB) {
        file.write(chunk).await.expect("write a chunk");
    }
    file.flush().await.expect("flush");
    uploads.commit(file, digest).await.expect("commit")
}

/// Whether a streamed read of `len` bytes ends well: refused when it starts
/// or cut short are the same to a client.
async fn completes(blob: mirror::store::BlobFile, len: usize) -> bool {
    match blob.stream(0, len as u64).await {
        Ok(body) => body.try_collect::<Vec<Bytes>>().await.is_ok(),
        Err(_) => false,
    }
}

async fn start_garage() -> Garage {
    tokio::task::spawn_blocking(Garage::start)
        .await
        .expect("garage start task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_in_s3_are_written_whole_read_by_range_and_quarantined_when_changed() {
    let garage = start_garage().await;
    let bucket = garage.client();
    let dir = tempfile::tempdir().expect("data dir");
    let store = Store::open_with(
        dir.path(),
        &Storage::S3(settings(&garage)),
        &IndexChoice::Sqlite,
    )
    .await
    .expect("a store on garage");

    // Small: one PUT, read back whole and checked.
    let config = store
        .blobs()
        .put(b"{\"a\":1}", Origin::Cached)
        .await
        .expect("put");
    assert!(
        exists(&bucket, &key(&config)).await,
        "object under its digest"
    );
    assert_eq!(store.blobs().size(&config).await.expect("has"), Some(7));
    let read = store
        .blobs()
        .read_small(&config, 1024)
        .await
        .expect("read small");
    assert_eq!(read.as_deref(), Some(&b"{\"a\":1}"[..]));

    // Large: a multipart upload (over the 8 MiB part size), then ranges.
    let layer = noise::bytes(20 * MIB + 123);
    let digest = Digest::sha256_of(&layer);
    let pushed = push(&store, &"a".repeat(32), &layer, &digest).await;
    assert_eq!(
        pushed,
        Pushed::Stored {
            size: layer.len() as u64
        }
    );
    let meta = bucket.head(&key(&digest)).await.expect("multipart object");
    assert_eq!(meta.size, layer.len() as u64);
    for (start, len) in [
        (0, layer.len()),
        (5, 100),
        (9 * MIB - 1, 3 * MIB),
        (layer.len() - 1, 1),
    ] {
        let blob = store
            .blobs()
            .open(&digest)
            .await
            .expect("open")
            .expect("blob");
        assert_eq!(blob.size, layer.len() as u64);
        let body = blob.stream(start as u64, len as u64).await.expect("stream");
        let got: Vec<Bytes> = body.try_collect().await.expect("ranged read");
        assert_eq!(
            got.concat(),
            &layer[start..start + len],
            "range {start}+{len}"
        );
    }
    let report = store.verify(false).await.expect("verify");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checked, 2);

    // A wrong digest: nothing under either digest, no upload left behind.
    let other = noise::bytes(9 * MIB);
    let claimed = Digest::sha256_of(b"something else");
    let pushed = push(&store, &"b".repeat(32), &other, &claimed).await;
    assert!(matches!(pushed, Pushed::WrongDigest { .. }), "{pushed:?}");
    assert!(!exists(&bucket, &key(&claimed)).await);
    assert!(!exists(&bucket, &key(&Digest::sha256_of(&other))).await);
    wait_for(
        "no unfinished multipart upload in the bucket",
        Duration::from_secs(20),
        || async { garage.unfinished_multipart_uploads().await == 0 },
    )
    .await;

    // Changed behind the store's back: found on read, put aside, a miss from then on.
    bucket
        .put(&key(&config), PutPayload::from_static(b"{\"a\":2}"))
        .await
        .expect("overwrite the object");
    let read = store
        .blobs()
        .read_small(&config, 1024)
        .await
        .expect("read small");
    assert!(read.is_none(), "bad bytes read as absent");
    assert!(store.blobs().is_quarantined(&config).await);
    assert!(!exists(&bucket, &key(&config)).await);
    let aside = Path::from(format!("quarantine/sha256/{}", config.hex()));
    let kept = bucket.get(&aside).await.expect("quarantined copy");
    assert_eq!(&kept.bytes().await.expect("bytes")[..], b"{\"a\":2}");
    assert_eq!(store.blobs().size(&config).await.expect("has"), None);

    // A streamed read verified to its end fails on a changed large object.
    store.set_verify_on_read(VerifyOnRead::All);
    let mut changed = layer.to_vec();
    changed[MIB] ^= 1;
    let blob = store
        .blobs()
        .open(&digest)
        .await
        .expect("open")
        .expect("blob");
    bucket
        .put(&key(&digest), PutPayload::from(changed))
        .await
        .expect("overwrite the layer");
    assert!(
        !completes(blob, layer.len()).await,
        "a read pinned to the old object fails"
    );
    let blob = store
        .blobs()
        .open(&digest)
        .await
        .expect("open")
        .expect("blob");
    assert!(
        !completes(blob, layer.len()).await,
        "a changed object never completes"
    );
    assert!(store.blobs().is_quarantined(&digest).await);
    assert!(store.blobs().open(&digest).await.expect("open").is_none());

    store.close().await;
    garage.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_bucket_an_evicted_blob_outlives_its_row_for_readers_elsewhere() {
    let garage = start_garage().await;
    let postgres = tokio::task::spawn_blocking(common::postgres::Postgres::start)
        .await
        .expect("postgres start task");
    let bucket = garage.client();
    let open = |dir: std::path::PathBuf| {
        let (storage, index) = (
            Storage::S3(settings(&garage)),
            IndexChoice::Postgres(postgres.url()),
        );
        async move {
            Store::open_with(&dir, &storage, &index)
                .await
                .expect("a store on postgres and garage")
        }
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (evicting, reading) = (
        open(dir_a.path().to_owned()).await,
        open(dir_b.path().to_owned()).await,
    );
    let bytes = noise::bytes(3 * MIB + 7);
    let digest = evicting
        .blobs()
        .put(&bytes, Origin::Cached)
        .await
        .expect("put");

    // The other replica opens it and is part way through when it is evicted.
    let blob = reading
        .blobs()
        .open(&digest)
        .await
        .expect("open")
        .expect("stored");
    let report = evicting.evict_to(0, false).await.expect("evict");
    assert_eq!(report.evicted, 1);
    assert!(completes(blob, bytes.len()).await, "the reader finishes");
    assert_eq!(
        reading.blobs().size(&digest).await.unwrap(),
        None,
        "a miss now"
    );

    // The sweep leaves the object for the grace period...
    let swept = evicting
        .sweep(mirror::store::SweepOptions::owner())
        .await
        .expect("sweep");
    assert_eq!(swept.orphan_files, 0, "{swept:?}");
    assert!(exists(&bucket, &key(&digest)).await);
    // ... and a refill finds it there and indexes it again.
    let again = reading
        .blobs()
        .put(&bytes, Origin::Cached)
        .await
        .expect("refill");
    assert_eq!(again, digest);
    assert_eq!(
        evicting.blobs().size(&digest).await.unwrap(),
        Some(bytes.len() as u64)
    );
    evicting.close().await;
    reading.close().await;
}

/// A store as a replica opens it: a PostgreSQL index and a Garage bucket.
async fn shared_store() -> (Garage, common::postgres::Postgres, tempfile::TempDir, Store) {
    let garage = start_garage().await;
    let postgres = tokio::task::spawn_blocking(common::postgres::Postgres::start)
        .await
        .expect("postgres start task");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        &Storage::S3(settings(&garage)),
        &IndexChoice::Postgres(postgres.url()),
    )
    .await
    .expect("a store on postgres and garage");
    (garage, postgres, dir, store)
}

async fn journaled_uploads(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM multipart_uploads")
        .fetch_one(pool)
        .await
        .expect("count the journaled uploads");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_its_writer_never_finished_is_aborted_by_the_sweep_once_idle() {
    let (garage, postgres, _dir, store) = shared_store().await;
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();

    // An upload that ends, either way, leaves nothing journaled.
    let whole = noise::bytes(20 * MIB + 1);
    store
        .blobs()
        .put(&whole, Origin::Cached)
        .await
        .expect("put");
    assert_eq!(journaled_uploads(&pool).await, 0);

    // A writer that stops mid-upload (its future dropped, as a killed
    // process's is) runs no abort: the upload stays begun in the bucket.
    let bytes = noise::bytes(96 * MIB + 5);
    let digest = Digest::sha256_of(&bytes);
    {
        let blobs = store.blobs();
        let put = blobs.put(&bytes, Origin::Cached);
        let begun = async {
            while journaled_uploads(&pool).await == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            put = put => panic!("the upload finished before it could be cut off: {put:?}"),
            () = begun => {}
        }
    }
    wait_for("garage counts the unfinished upload", LIMIT, || async {
        garage.unfinished_multipart_uploads().await > 0
    })
    .await;

    // Not idle long enough: another replica may be uploading it right now.
    let sweep = || store.sweep(mirror::store::SweepOptions::shared());
    let swept = sweep().await.expect("sweep");
    assert_eq!(swept.abandoned_multipart_uploads, 0, "{swept:?}");
    assert_eq!(journaled_uploads(&pool).await, 1);

    sqlx::query("UPDATE multipart_uploads SET touched_at = touched_at - $1")
        .bind(mirror::store::MULTIPART_IDLE_AFTER.as_secs() as i64 + 1)
        .execute(&pool)
        .await
        .unwrap();
    let dry = store
        .sweep(mirror::store::SweepOptions {
            dry_run: true,
            ..mirror::store::SweepOptions::shared()
        })
        .await
        .expect("dry-run sweep");
    assert_eq!(dry.abandoned_multipart_uploads, 1, "{dry:?}");
    assert_eq!(
        journaled_uploads(&pool).await,
        1,
        "a dry run aborts nothing"
    );
    let swept = sweep().await.expect("sweep");
    assert_eq!(swept.abandoned_multipart_uploads, 1, "{swept:?}");
    assert_eq!(journaled_uploads(&pool).await, 0);
    wait_for("no unfinished upload in the bucket", LIMIT, || async {
        garage.unfinished_multipart_uploads().await == 0
    })
    .await;
    assert!(!exists(&garage.client(), &key(&digest)).await);
    assert_eq!(store.blobs().size(&digest).await.unwrap(), None);

    // The bytes can still be stored whole.
    let again = store
        .blobs()
        .put(&bytes, Origin::Cached)
        .await
        .expect("put again");
    assert_eq!(again, digest);
    assert!(exists(&garage.client(), &key(&digest)).await);
    pool.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_chunks_no_session_names_are_swept_and_a_live_sessions_stay() {
    let (garage, _postgres, _dir, store) = shared_store().await;
    let bucket = garage.client();
    let live = UploadId::parse("0123456789abcdef0123456789abcdef").unwrap();
    let begun = store
        .uploads()
        .begin(
            &live,
            &RepoKey::new("hosted/app".into()),
            &UploadOwner::new("alice".to_owned()),
            8,
        )
        .await
        .expect("begin");
    assert_eq!(begun, Begun::Opened);
    // What a replica killed between uploading a chunk and recording it (or
    // between ending a session and deleting its chunks) leaves behind.
    let orphan = Path::from("uploads/fedcba9876543210fedcba9876543210/00000000000000000000");
    let living = Path::from(format!("uploads/{}/00000000000000000000", live.as_str()));
    for key in [&orphan, &living] {
        bucket
            .put(key, PutPayload::from(noise::bytes(1000)))
            .await
            .expect("put a chunk");
    }

    // Beside a live server only chunks over an hour old go: neither here.
    let swept = store
        .sweep(mirror::store::SweepOptions::shared())
        .await
        .expect("sweep");
    assert_eq!(swept.abandoned_uploads, 0, "{swept:?}");
    assert!(exists(&bucket, &orphan).await);

    let swept = store
        .sweep(mirror::store::SweepOptions::owner())
        .await
        .expect("sweep");
    assert_eq!(swept.abandoned_uploads, 1, "{swept:?}");
    assert!(!exists(&bucket, &orphan).await, "the orphan chunk is gone");
    assert!(exists(&bucket, &living).await, "the live session's stays");
    store.close().await;
}

/// A client sends its next chunk (or the closing PUT) the moment a PATCH is
/// answered, perhaps through another replica: the session's writer lease must
/// be free by then, not when a task the answered request spawned gets to run.
/// On one thread that task rarely runs before the next claim goes out.
#[tokio::test(flavor = "current_thread")]
async fn a_recorded_chunk_leaves_the_session_free_for_its_next_request_at_once() {
    let (_garage, _postgres, _dir, store) = shared_store().await;
    let uploads = store.uploads();
    let id = &UploadId::parse("00112233445566778899aabbccddeeff").unwrap();
    let begun = uploads
        .begin(
            id,
            &RepoKey::new("hosted/app".into()),
            &UploadOwner::new("alice".to_owned()),
            8,
        )
        .await
        .expect("begin");
    assert_eq!(begun, Begun::Opened);
    // Many chunks: on one thread the spawned release may still come first.
    let bytes = noise::bytes(4 * MIB);
    let mut row = uploads.find(id).await.expect("find").expect("session row");
    for chunk in bytes.chunks(MIB / 4) {
        let mut file = uploads
            .resume(id, &row)
            .await
            .expect("the chunk after an answered one is taken at once")
            .expect("session file");
        file.write(chunk).await.expect("write a chunk");
        file.flush().await.expect("flush");
        assert!(
            uploads
                .progress(id, &mut file)
                .await
                .expect("record the chunk")
        );
        // What the next request reads, as the answer to this one goes out.
        row = uploads.find(id).await.expect("find").expect("session row");
        drop(file);
    }
    assert_eq!(row.size, bytes.len() as u64);
    let file = uploads
        .resume(id, &row)
        .await
        .expect("the closing request is taken at once")
        .expect("session file");
    let digest = Digest::sha256_of(&bytes);
    assert!(matches!(
        uploads.commit(file, &digest).await.expect("commit"),
        Pushed::Stored { .. }
    ));
    store.close().await;
}
