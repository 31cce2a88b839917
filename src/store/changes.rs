//! What other replicas changed, told to the in-memory copies of index rows
//! (`Watcher`s: the OCI metadata cache, the Go memos) so none serves a row
//! another replica replaced or deleted. On a shared index the writing
//! transaction notifies and one listener per process hears it (the index's
//! `Feed`); the hit paths never see any of this, the listener does the work.
//! When the listener may have missed notices (its connection dropped, it
//! reconnected) every copy is cleared, and a backstop expires what only a
//! notice would invalidate. SQLite has no feed: one process writes there,
//! and the generation poll covers `mirror cache gc` beside it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::index::Heard;
use super::{Digest, RepoKey, Store};
use crate::sync::Unpoisoned;

/// How old a copy that only a notice would invalidate (a hosted tag, a
/// manifest or blob link a DELETE removes) may get on a shared index, should
/// a notice be lost without the listener noticing.
const BACKSTOP: Duration = Duration::from_secs(10);

/// A committed change to rows that processes keep copies of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A tag was pointed at a manifest or deleted.
    Tag { repo: RepoKey, tag: String },
    /// A manifest was deleted from a repository, with the tags naming it.
    Manifest { repo: RepoKey, digest: Digest },
    /// A repository's link to a blob was deleted.
    RepoBlob { repo: RepoKey, digest: Digest },
    /// A Go answer (list, latest, query, 404/410) was replaced.
    Answer(String),
    /// Blob rows were deleted: the deletion generation moved to this.
    Generation(i64),
    /// Notices may have been missed: drop every copy.
    Reset,
    /// The backstop: drop every copy only a notice would invalidate.
    Expire,
}

/// An in-memory copy of index rows that follows the changes.
pub trait Watcher: Send + Sync {
    /// Called by the listener, never on a request path: it may take locks.
    fn changed(&self, change: &Change);
}

/// The watchers of one store; a watcher that is dropped drops out.
#[derive(Default)]
pub(crate) struct Watchers(Mutex<Vec<Weak<dyn Watcher>>>);

impl Watchers {
    fn tell(&self, change: &Change) {
        let live: Vec<Arc<dyn Watcher>> = {
            let mut watchers = self.0.lock().unpoisoned();
            watchers.retain(|w| w.strong_count() > 0);
            watchers.iter().filter_map(Weak::upgrade).collect()
        };
        for watcher in live {
            watcher.changed(change);
        }
    }
}

impl Store {
    /// Tells `watcher` of every change the listener hears, while it lives.
    pub fn watch<W: Watcher + 'static>(&self, watcher: &Arc<W>) {
        let weak: Weak<W> = Arc::downgrade(watcher);
        self.inner
            .watchers
            .0
            .lock()
            .unpoisoned()
            .push(weak as Weak<dyn Watcher>);
    }

    /// Listens for the index's notices, if it sends any, and runs the backstop.
    pub(crate) fn spawn_change_listener(&self, stop: CancellationToken) {
        let Some(mut feed) = self.inner.index.feed() else {
            return;
        };
        let store = self.clone();
        let listening = stop.clone();
        // The feed alone in its task: a notice half read is never dropped
        // for another branch of a select.
        tokio::spawn(async move {
            loop {
                let heard = tokio::select! {
                    _ = listening.cancelled() => return,
                    heard = feed.next() => heard,
                };
                let change = match heard {
                    Heard::Change(change) => change,
                    Heard::Missed => Change::Reset,
                    Heard::Closed => return,
                };
                if let Change::Generation(value) = change {
                    // Before the watchers: a copy refilled under the old
                    // generation from now on is refused.
                    store.inner.generation.advance_to(value);
                }
                store.inner.watchers.tell(&change);
            }
        });
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(BACKSTOP);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => store.inner.watchers.tell(&Change::Expire),
                }
            }
        });
    }
}
