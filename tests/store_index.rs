//! The store's behaviours on either index, each test body run twice: on the
//! embedded SQLite index and on a private PostgreSQL 15 (the index several
//! replicas share), through the public Store API only. Plus what only the
//! shared database has: replicas migrating one fresh database at once, and a
//! deletion on one store seen by another through the generation.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::postgres::Postgres;
use mirror::store::{
    AnswerKey, AuditEntry, AuditQuery, Begun, Digest, GoFile, IndexChoice, ModuleKey, NewManifest,
    Origin, Pushed, RepoKey, Storage, Store, SweepOptions, TagKey, TileKey, UploadId, UploadOwner,
    VersionKey,
};

fn repo(name: &str) -> RepoKey {
    RepoKey::new(name.to_owned())
}

/// Where a test's stores keep their rows; dropped, the database stops.
struct Backend {
    postgres: Option<Postgres>,
    dirs: Vec<tempfile::TempDir>,
}

impl Backend {
    async fn sqlite() -> Backend {
        Backend {
            postgres: None,
            dirs: Vec::new(),
        }
    }

    async fn postgres() -> Backend {
        let postgres = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("postgres start task");
        Backend {
            postgres: Some(postgres),
            dirs: Vec::new(),
        }
    }

    fn choice(&self) -> IndexChoice {
        match &self.postgres {
            Some(postgres) => IndexChoice::Postgres(postgres.url()),
            None => IndexChoice::Sqlite,
        }
    }

    /// A store in a fresh data dir on this backend's index.
    async fn store(&mut self) -> Store {
        let dir = tempfile::tempdir().expect("data dir");
        let store = Store::open_with(dir.path(), &Storage::Files, &self.choice())
            .await
            .expect("open the store");
        self.dirs.push(dir);
        store
    }

    /// A second store on the same index: on SQLite the same data dir, on
    /// PostgreSQL another replica's.
    async fn second_store(&mut self) -> Store {
        match &self.postgres {
            Some(_) => self.store().await,
            None => {
                let dir = self.dirs.first().expect("a first store").path();
                Store::open(dir).await.expect("open the store again")
            }
        }
    }
}

/// `name_on_sqlite` and `name_on_postgres`, running `body(backend)`.
macro_rules! on_both {
    ($($name:ident => $body:ident;)*) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$body(super::Backend::sqlite().await).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$body(super::Backend::postgres().await).await;
            })*
        }
    };
}

on_both! {
    blobs_and_go_rows_round_trip_and_a_row_for_a_missing_blob_is_refused => blobs_and_go_rows;
    manifests_tags_referrers_and_catalog_read_back_in_bytewise_order => oci_rows;
    audit_rows_are_queried_newest_first_and_pruned_by_age => audit_rows;
    upload_sessions_keep_the_quota_under_concurrent_openings_and_commit => upload_sessions;
    eviction_takes_cached_blobs_keeps_hosted_ones_and_verify_is_clean => eviction_and_verify;
    a_deletion_bumps_the_generation_a_second_store_reads => generation_across_stores;
    a_verified_head_only_moves_forward_and_a_second_store_sees_it => verified_heads;
}

async fn verified_heads(mut backend: Backend) {
    let store = backend.store().await;
    assert_eq!(
        store.go().verified_head("sum.golang.org").await.unwrap(),
        None
    );
    store
        .go()
        .put_verified_head("sum.golang.org", 20, b"head of 20")
        .await
        .unwrap();
    // An older head, as a rolled-back database would sign, never replaces it.
    store
        .go()
        .put_verified_head("sum.golang.org", 19, b"head of 19")
        .await
        .unwrap();
    store
        .go()
        .put_verified_head("other.example", 3, b"other head")
        .await
        .unwrap();
    let second = backend.second_store().await;
    assert_eq!(
        second.go().verified_head("sum.golang.org").await.unwrap(),
        Some(b"head of 20".to_vec())
    );
    second
        .go()
        .put_verified_head("sum.golang.org", 21, b"head of 21")
        .await
        .unwrap();
    assert_eq!(
        store.go().verified_head("sum.golang.org").await.unwrap(),
        Some(b"head of 21".to_vec())
    );
    assert_eq!(
        store.go().verified_head("other.example").await.unwrap(),
        Some(b"other head".to_vec())
    );
    second.close().await;
    store.close().await;
}

async fn blobs_and_go_rows(mut backend: Backend) {
    let store = backend.store().await;
    let digest = store
        .blobs()
        .put(b"module zip bytes", Origin::Cached)
        .await
        .unwrap();
    assert_eq!(store.blobs().size(&digest).await.unwrap(), Some(16));

    store
        .go()
        .put_file(
            ModuleKey::new("example.com/m"),
            VersionKey::new("v1.0.0"),
            GoFile::Zip,
            &digest,
            16,
        )
        .await
        .unwrap();
    let found = store
        .go()
        .file(
            ModuleKey::new("example.com/m"),
            VersionKey::new("v1.0.0"),
            GoFile::Zip,
        )
        .await;
    assert_eq!(found.unwrap(), Some((digest.clone(), 16)));
    assert_eq!(
        store
            .go()
            .file(
                ModuleKey::new("example.com/m"),
                VersionKey::new("v1.0.0"),
                GoFile::Mod
            )
            .await
            .unwrap(),
        None
    );

    let absent = Digest::sha256_of(b"never stored");
    let refused = store
        .go()
        .put_file(
            ModuleKey::new("example.com/m"),
            VersionKey::new("v1.0.0"),
            GoFile::Mod,
            &absent,
            3,
        )
        .await
        .expect_err("a go file naming no blob row");
    assert!(refused.is_missing_reference(), "{refused}");

    for (key, body) in [
        ("list example.com/m", &b"v1.0.0\n"[..]),
        ("list example.com/m/v2", b"v2.0.0\n"),
        ("list example.com/n", b""),
    ] {
        store
            .go()
            .put_answer(AnswerKey::new(key), 200, body)
            .await
            .unwrap();
    }
    store
        .go()
        .put_answer(AnswerKey::new("list example.com/n"), 404, b"not found")
        .await
        .unwrap();
    let answer = store
        .go()
        .answer(AnswerKey::new("list example.com/n"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((answer.status, &answer.body[..]), (404, &b"not found"[..]));
    let under: Vec<String> = store
        .go()
        .answers_under(AnswerKey::new("list example.com/m"))
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(under, ["list example.com/m/v2", "list example.com/m"]);

    let tile = store
        .blobs()
        .put(b"tile bytes", Origin::Cached)
        .await
        .unwrap();
    store
        .go()
        .put_tile(TileKey::new("sum.golang.org", "tile/8/0/001"), &tile, 10)
        .await
        .unwrap();
    assert_eq!(
        store
            .go()
            .tile(TileKey::new("sum.golang.org", "tile/8/0/001"))
            .await
            .unwrap(),
        Some((tile, 10))
    );
    store
        .go()
        .forget_file(
            ModuleKey::new("example.com/m"),
            VersionKey::new("v1.0.0"),
            GoFile::Zip,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .go()
            .file(
                ModuleKey::new("example.com/m"),
                VersionKey::new("v1.0.0"),
                GoFile::Zip
            )
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

fn manifest<'a>(
    repo: &'a RepoKey,
    digest: &'a Digest,
    subject: Option<&'a Digest>,
    blobs: &'a [(Digest, u64)],
) -> NewManifest<'a> {
    NewManifest {
        repo,
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: 11,
        subject,
        artifact_type: Some("application/example"),
        annotations: Some("{\"a\":\"b\"}"),
        blobs,
    }
}

async fn oci_rows(mut backend: Backend) {
    let store = backend.store().await;
    let layer = store.blobs().put(b"layer", Origin::Cached).await.unwrap();
    let image = store
        .blobs()
        .put(b"{\"image\":1}", Origin::Cached)
        .await
        .unwrap();
    let signature = store
        .blobs()
        .put(b"{\"signature\":1}", Origin::Cached)
        .await
        .unwrap();
    let blobs = [(layer.clone(), 5)];
    for name in ["hub/library/b", "hub/library/a", "Hub/z"] {
        let key = repo(name);
        store
            .oci()
            .put_manifest(&manifest(&key, &image, None, &blobs))
            .await
            .unwrap();
    }
    let key = repo("hub/library/a");
    store
        .oci()
        .put_manifest(&manifest(&key, &signature, Some(&image), &blobs))
        .await
        .unwrap();
    // Idempotent, as a retried push is.
    store
        .oci()
        .put_manifest(&manifest(&key, &image, None, &blobs))
        .await
        .unwrap();

    let row = store
        .oci()
        .manifest(&repo("hub/library/a"), &image)
        .await
        .unwrap();
    assert_eq!(row.map(|row| row.size), Some(11));
    assert_eq!(
        store
            .oci()
            .described_size(&repo("hub/library/a"), &layer)
            .await
            .unwrap(),
        Some(5)
    );
    for tag in ["latest", "Latest", "1.0", "latest-1"] {
        store
            .oci()
            .set_tag(&repo("hub/library/a"), TagKey::new(tag), &image)
            .await
            .unwrap();
    }
    let tags = store
        .oci()
        .tags(&repo("hub/library/a"), None, 10)
        .await
        .unwrap();
    assert_eq!(tags, ["1.0", "Latest", "latest", "latest-1"]);
    let page = store
        .oci()
        .tags(&repo("hub/library/a"), Some("Latest"), 2)
        .await
        .unwrap();
    assert_eq!(page, ["latest", "latest-1"]);
    let (tagged, _) = store
        .oci()
        .tag(&repo("hub/library/a"), TagKey::new("latest"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.digest, image);

    let missing = Digest::sha256_of(b"no such manifest");
    let refused = store
        .oci()
        .set_tag(&repo("hub/library/a"), TagKey::new("ghost"), &missing)
        .await
        .expect_err("a tag on no manifest");
    assert!(refused.is_missing_reference(), "{refused}");

    let catalog = store.oci().catalog(None, 10).await.unwrap();
    assert_eq!(catalog, ["Hub/z", "hub/library/a", "hub/library/b"]);
    assert_eq!(
        store.oci().catalog(Some("Hub/z"), 1).await.unwrap(),
        ["hub/library/a"]
    );

    let referrers = store
        .oci()
        .referrers(&repo("hub/library/a"), &image)
        .await
        .unwrap();
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0].digest, signature);
    assert_eq!(
        referrers[0].artifact_type.as_deref(),
        Some("application/example")
    );

    assert!(!store.oci().has_repo(&repo("hosted/app")).await.unwrap());
    store
        .oci()
        .link_blob(&repo("hosted/app"), &layer)
        .await
        .unwrap();
    assert!(store.oci().has_repo(&repo("hosted/app")).await.unwrap());
    assert_eq!(
        store
            .oci()
            .blob_size(&repo("hosted/app"), &layer)
            .await
            .unwrap(),
        Some(5)
    );
    assert!(
        store
            .oci()
            .unlink_blob(&repo("hosted/app"), &layer)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .oci()
            .blob_size(&repo("hosted/app"), &layer)
            .await
            .unwrap(),
        None
    );

    assert!(
        store
            .oci()
            .delete_tag(&repo("hub/library/a"), TagKey::new("1.0"))
            .await
            .unwrap()
    );
    assert!(
        store
            .oci()
            .delete_manifest(&repo("hub/library/a"), &image)
            .await
            .unwrap()
    );
    // The tags and the blobs it named go with the manifest.
    assert!(
        store
            .oci()
            .tags(&repo("hub/library/a"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .oci()
            .described_size(&repo("hub/library/a"), &layer)
            .await
            .unwrap(),
        Some(5),
        "the signature still names the layer"
    );
    store.close().await;
}

const SECOND: i64 = 1_000;

fn entry<'a>(at_ms: i64, subject: &'a str, artifact: &'a str) -> AuditEntry<'a> {
    AuditEntry {
        at_ms,
        identity: "cert",
        subject,
        serial: Some("0a"),
        peer: "127.0.0.1:5000",
        protocol: "oci",
        action: "read",
        artifact,
        digest: None,
        outcome: "hit",
        status: 200,
    }
}

async fn audit_rows(mut backend: Backend) {
    let store = backend.store().await;
    let (log, writer) = store.start_audit();
    for second in 0..5 {
        let at_ms = SECOND * (10 + second);
        log.record(entry(at_ms, "alice", "hub/library/alpine:3"))
            .await;
        log.record(entry(at_ms, "bob", "hub/library/busybox:1"))
            .await;
    }
    // The same request within the same second folds into one row when the
    // writer has not taken the first away yet; either way it is counted.
    log.record(entry(SECOND * 14 + 500, "alice", "hub/library/alpine:3"))
        .await;
    drop(log);
    writer.await.expect("the audit writer ends");

    let alice = store
        .audit()
        .query(&AuditQuery {
            subject: Some("alice".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let mut per_second = std::collections::BTreeMap::<i64, u64>::new();
    for row in &alice {
        *per_second.entry(row.at_ms / SECOND).or_default() += row.count;
    }
    assert_eq!(
        per_second.into_iter().rev().collect::<Vec<_>>(),
        [(14, 2), (13, 1), (12, 1), (11, 1), (10, 1)]
    );
    assert!(
        alice.windows(2).all(|pair| pair[0].at_ms >= pair[1].at_ms),
        "newest first"
    );
    let busybox = store
        .audit()
        .query(&AuditQuery {
            artifact: Some("busy".into()),
            since_ms: Some(12 * SECOND),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(busybox.len(), 3);
    assert!(busybox.iter().all(|r| r.subject == "bob"));

    assert_eq!(store.audit().prune(13 * SECOND).await.unwrap(), 6);
    let left = store
        .audit()
        .query(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    // Seconds 13 and 14 stay: alice 1 + 2 and bob 1 + 1 requests, in four
    // rows or five (the folding above is a matter of timing).
    assert_eq!(left.iter().map(|row| row.count).sum::<u64>(), 5);
    assert!((4..=5).contains(&left.len()), "{} rows", left.len());
    assert!(left.iter().all(|row| row.at_ms >= 13 * SECOND));

    // A replica's rows name it ([cluster] replica); a single node's name none.
    let replica = backend.second_store().await;
    replica.set_replica("m2");
    let (log, writer) = replica.start_audit();
    log.record(entry(SECOND * 20, "carol", "hub/library/alpine:3"))
        .await;
    drop(log);
    writer.await.expect("the audit writer ends");
    let rows = store
        .audit()
        .query(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let named: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.subject.as_str(), r.replica.as_deref()))
        .collect();
    assert_eq!(named.len(), left.len() + 1);
    assert_eq!(named[0], ("carol", Some("m2")));
    assert!(named[1..].iter().all(|(_, replica)| replica.is_none()));
    replica.close().await;
    store.close().await;
}

fn upload_id(n: u32) -> UploadId {
    UploadId::parse(&format!("{n:032x}")).expect("an upload id")
}

async fn upload_sessions(mut backend: Backend) {
    let store = backend.store().await;
    let owner = UploadOwner::new("alice".to_owned());
    let openings = (0..10).map(|n| {
        let store = store.clone();
        let owner = owner.clone();
        tokio::spawn(async move {
            store
                .uploads()
                .begin(&upload_id(n), &repo("hosted/app"), &owner, 3)
                .await
                .unwrap()
        })
    });
    let mut opened = Vec::new();
    for (n, opening) in openings.enumerate() {
        if opening.await.unwrap() == Begun::Opened {
            opened.push(upload_id(n as u32));
        }
    }
    assert_eq!(opened.len(), 3, "the quota holds under concurrent openings");
    let other = UploadOwner::new("bob".to_owned());
    assert_eq!(
        store
            .uploads()
            .begin(&upload_id(100), &repo("hosted/app"), &other, 3)
            .await
            .unwrap(),
        Begun::Opened
    );

    let id = &opened[0];
    let uploads = store.uploads();
    let row = uploads.find(id).await.unwrap().expect("session row");
    assert_eq!(row.size, 0);
    let mut file = uploads.resume(id, &row).await.unwrap().expect("file");
    file.write(b"pushed ").await.unwrap();
    file.flush().await.unwrap();
    assert!(uploads.progress(id, &mut file).await.unwrap());
    drop(file);
    let row = uploads.find(id).await.unwrap().expect("session row");
    assert_eq!(row.size, 7);
    let mut file = uploads.resume(id, &row).await.unwrap().expect("resumed");
    file.write(b"bytes").await.unwrap();
    file.flush().await.unwrap();
    let digest = Digest::sha256_of(b"pushed bytes");
    assert_eq!(
        uploads.commit(file, &digest).await.unwrap(),
        Pushed::Stored { size: 12 }
    );
    uploads.end(id).await.unwrap();
    assert!(uploads.find(id).await.unwrap().is_none());
    assert_eq!(store.blobs().size(&digest).await.unwrap(), Some(12));
    // A freed place in the quota can be taken again.
    assert_eq!(
        uploads
            .begin(&upload_id(200), &repo("hosted/app"), &owner, 3)
            .await
            .unwrap(),
        Begun::Opened
    );
    store.close().await;
}

async fn eviction_and_verify(mut backend: Backend) {
    let store = backend.store().await;
    let cached: Vec<Digest> = [&b"one"[..], b"two", b"three"]
        .into_iter()
        .map(Digest::sha256_of)
        .collect();
    for bytes in [&b"one"[..], b"two", b"three"] {
        store.blobs().put(bytes, Origin::Cached).await.unwrap();
    }
    let hosted = store.blobs().put(b"pushed", Origin::Hosted).await.unwrap();
    let totals = store.totals().await.unwrap();
    assert_eq!((totals.blobs, totals.bytes), (4, 3 + 3 + 5 + 6));
    assert_eq!((totals.hosted_blobs, totals.hosted_bytes), (1, 6));
    let stats = store.stats().await.unwrap();
    assert!(!stats.groups.is_empty());

    let before = store.generation().current();
    let report = store.evict_to(0, false).await.unwrap();
    assert_eq!((report.evicted, report.freed), (3, 11));
    assert!(store.generation().current() > before);
    for digest in &cached {
        assert_eq!(store.blobs().size(digest).await.unwrap(), None);
    }
    assert_eq!(store.blobs().size(&hosted).await.unwrap(), Some(6));

    let verify = store.verify(false).await.unwrap();
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!(verify.checked, 1);
    store.close().await;
}

async fn generation_across_stores(mut backend: Backend) {
    let first = backend.store().await;
    let digest = first
        .blobs()
        .put(b"evicted elsewhere", Origin::Cached)
        .await
        .unwrap();
    let second = backend.second_store().await;
    second.refresh_generation().await.unwrap();
    let seen = second.generation().current();
    assert_eq!(first.evict_to(0, false).await.unwrap().evicted, 1);
    second.refresh_generation().await.unwrap();
    assert!(second.generation().current() > seen);
    assert_eq!(first.blobs().size(&digest).await.unwrap(), None);
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_a_fresh_database_exactly_once() {
    let postgres = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres start task");
    let url = Arc::new(postgres.url());
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let starts: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let dir = dir.path().to_owned();
            let url = url.clone();
            tokio::spawn(async move {
                Store::open_with(
                    &dir,
                    &Storage::Files,
                    &IndexChoice::Postgres((*url).clone()),
                )
                .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().expect("every replica starts"));
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i64, bool)> = migration_versions("migrations/postgres")
        .into_iter()
        .map(|version| (version, true))
        .collect();
    assert_eq!(applied, expected);
    // Every replica works on the one schema.
    let digest = stores[0]
        .blobs()
        .put(b"shared row", Origin::Cached)
        .await
        .unwrap();
    stores[0]
        .go()
        .put_file(
            ModuleKey::new("example.com/m"),
            VersionKey::new("v1.0.0"),
            GoFile::Info,
            &digest,
            10,
        )
        .await
        .unwrap();
    for store in &stores {
        let found = store
            .go()
            .file(
                ModuleKey::new("example.com/m"),
                VersionKey::new("v1.0.0"),
                GoFile::Info,
            )
            .await
            .unwrap();
        assert_eq!(found, Some((digest.clone(), 10)));
        store.close().await;
    }
    pool.close().await;
}

#[tokio::test]
async fn the_sqlite_index_applies_only_its_own_migrations() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).await.unwrap().close().await;
    let url = format!("sqlite://{}", dir.path().join("mirror.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, migration_versions("migrations"));
    let tables: HashSet<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(tables.contains("generation") && tables.contains("uploads"));
    pool.close().await;
}

/// The versions of the `.sql` files directly in `dir`, as sqlx numbers them.
fn migration_versions(dir: &str) -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut versions: Vec<i64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let (version, _) = name.strip_suffix(".sql")?.split_once('_')?;
            version.parse().ok()
        })
        .collect();
    versions.sort();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_on_another_replica_leaves_the_push_sessions_it_has_no_file_for() {
    let mut backend = Backend::postgres().await;
    let first = backend.store().await;
    let second = backend.store().await;
    let owner = UploadOwner::new("alice".to_owned());
    let id = upload_id(7);
    let begun = first
        .uploads()
        .begin(&id, &repo("hosted/app"), &owner, 8)
        .await;
    assert_eq!(begun.unwrap(), Begun::Opened);
    let report = second.sweep(SweepOptions::shared()).await.unwrap();
    assert_eq!(report.abandoned_uploads, 0);
    assert!(first.uploads().find(&id).await.unwrap().is_some());
    first.close().await;
    second.close().await;
}
