//! The change notices between replicas of one PostgreSQL index, through the
//! public Store API: what one store commits, another's watchers hear, a
//! write that does not commit sends nothing, and a listener whose connection
//! is killed, or whose PostgreSQL restarts, clears every copy and hears
//! again once it listens anew.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::Postgres;
use common::wait_for;
use mirror::store::{
    AnswerKey, Change, IndexChoice, NewManifest, Origin, RepoKey, Storage, Store, TagKey, Watcher,
};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(5);

/// What a watcher heard, in order.
#[derive(Default)]
struct Heard(Mutex<Vec<Change>>);

impl Watcher for Heard {
    fn changed(&self, change: &Change) {
        self.0.lock().unwrap().push(change.clone());
    }
}

impl Heard {
    /// Waits until `change` is heard (the backstop's expiries aside), then
    /// forgets what was heard up to it.
    async fn until(&self, what: &str, change: &Change) {
        wait_for(what, DEADLINE, || async {
            self.0.lock().unwrap().contains(change)
        })
        .await;
        let mut heard = self.0.lock().unwrap();
        let at = heard.iter().position(|c| c == change).unwrap();
        heard.drain(..=at);
    }

    /// What was heard since, the backstop's expiries left out.
    fn since(&self) -> Vec<Change> {
        let heard = self.0.lock().unwrap();
        heard
            .iter()
            .filter(|c| **c != Change::Expire)
            .cloned()
            .collect()
    }
}

async fn store(postgres: &Postgres, dirs: &mut Vec<tempfile::TempDir>) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        &Storage::Files,
        &IndexChoice::Postgres(postgres.url()),
    )
    .await
    .unwrap();
    dirs.push(dir);
    store
}

async fn listeners(admin: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        .fetch_all(admin)
        .await
        .unwrap()
}

fn repo() -> RepoKey {
    RepoKey::new("team/app".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_commits_another_hears_and_a_dropped_listener_clears_everything() {
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let mut dirs = Vec::new();
    let writer = store(&postgres, &mut dirs).await;
    let reader = store(&postgres, &mut dirs).await;
    let heard = Arc::new(Heard::default());
    reader.watch(&heard);
    let stop = CancellationToken::new();
    reader.spawn_upkeep(stop.clone());
    heard.until("the listener to listen", &Change::Reset).await;

    let image = writer
        .blobs()
        .put(b"{\"image\":1}", Origin::Hosted)
        .await
        .unwrap();
    let layer = writer.blobs().put(b"layer", Origin::Hosted).await.unwrap();
    let key = repo();
    let blobs = [(layer.clone(), 5)];
    let manifest = NewManifest {
        repo: &key,
        digest: &image,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: 11,
        subject: None,
        artifact_type: None,
        annotations: None,
        blobs: &blobs,
    };
    writer.oci().put_manifest(&manifest).await.unwrap();
    writer.oci().link_blob(&key, &layer).await.unwrap();
    let tag = Change::Tag {
        repo: repo(),
        tag: "v1".into(),
    };
    writer
        .oci()
        .set_tag(&key, TagKey::new("v1"), &image)
        .await
        .unwrap();
    heard.until("the tag set", &tag).await;
    assert!(
        writer
            .oci()
            .delete_tag(&key, TagKey::new("v1"))
            .await
            .unwrap()
    );
    heard.until("the tag deleted", &tag).await;

    // A write that does not commit sends nothing: a tag on a manifest the
    // repository does not hold fails on its foreign key.
    let absent = writer.blobs().put(b"absent", Origin::Hosted).await.unwrap();
    let refused = writer
        .oci()
        .set_tag(&key, TagKey::new("ghost"), &absent)
        .await;
    assert!(refused.is_err());

    let answer = "list example.com/m";
    writer
        .go()
        .put_answer(AnswerKey::new(answer), 200, b"v1.0.0\n")
        .await
        .unwrap();
    heard
        .until("the Go answer", &Change::Answer(answer.into()))
        .await;
    assert!(writer.oci().unlink_blob(&key, &layer).await.unwrap());
    let unlinked = Change::RepoBlob {
        repo: repo(),
        digest: layer.clone(),
    };
    heard.until("the blob link deleted", &unlinked).await;
    assert!(writer.oci().delete_manifest(&key, &image).await.unwrap());
    let deleted = Change::Manifest {
        repo: repo(),
        digest: image.clone(),
    };
    heard.until("the manifest deleted", &deleted).await;
    // Nothing about the refused tag was heard in between.
    assert!(heard.since().is_empty(), "{:?}", heard.since());

    // Eviction moves the generation, and the reader has it at once, not at its next poll.
    writer.blobs().put(b"cached", Origin::Cached).await.unwrap();
    let before = reader.generation().current();
    assert!(writer.evict_to(0, false).await.unwrap().evicted >= 1);
    wait_for("the generation", DEADLINE, || async {
        heard
            .since()
            .iter()
            .any(|c| matches!(c, Change::Generation(_)))
    })
    .await;
    assert!(reader.generation().current() > before);
    heard.0.lock().unwrap().clear();

    // Kill the listener's connection: every copy is cleared, and notices flow again.
    let admin = sqlx::PgPool::connect(&postgres.admin_url()).await.unwrap();
    let killed = listeners(&admin).await;
    assert_eq!(killed.len(), 1, "one listener: the reader's");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
    )
    .execute(&admin)
    .await
    .unwrap();
    heard
        .until("a reset after the connection dropped", &Change::Reset)
        .await;
    wait_for("a new listener", DEADLINE, || async {
        let now = listeners(&admin).await;
        now.len() == 1 && now != killed
    })
    .await;
    writer.oci().put_manifest(&manifest).await.unwrap();
    writer
        .oci()
        .set_tag(&key, TagKey::new("v1"), &image)
        .await
        .unwrap();
    heard.until("the tag set after reconnecting", &tag).await;

    // PostgreSQL itself restarted: the listener retries until it is back.
    heard.0.lock().unwrap().clear();
    tokio::task::block_in_place(|| postgres.restart());
    heard
        .until("a reset after PostgreSQL restarted", &Change::Reset)
        .await;
    wait_for(
        "the tag set after the restart to be heard",
        DEADLINE * 3,
        || async {
            // The writer's pool reconnects on its own; the listener may still be
            // waiting out its retry, then it has missed this one and resets again.
            let _ = writer.oci().set_tag(&key, TagKey::new("v1"), &image).await;
            heard.0.lock().unwrap().contains(&tag)
        },
    )
    .await;

    stop.cancel();
    admin.close().await;
    writer.close().await;
    reader.close().await;
    postgres.stop();
}
