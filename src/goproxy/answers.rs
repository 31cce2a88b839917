//! Answers that change upstream (`list`, `@latest`, version queries, sumdb
//! lookups and partial tiles) and every 404/410: kept with a fetch time, used
//! while fresh (`list_ttl`, `negative_ttl`), refreshed through one upstream
//! request however many clients ask at once, and served stale when every
//! upstream fails. Memo first, then one indexed read, then upstream.

use std::sync::Arc;

use bytes::Bytes;

use super::GoProxy;
use super::chain::{Answer, Failure};
use super::error::{GoError, OrInternal};
use super::key::Key;
use crate::store::{StoredAnswer, now_secs};
use crate::wire::Outcome;

/// An answer as kept: a 200 with its body, or a 404/410 with its reason.
#[derive(Clone, Debug)]
pub struct Cached {
    pub status: u16,
    pub body: Bytes,
    /// Unix seconds.
    pub fetched_at: i64,
}

impl Cached {
    pub fn found(&self) -> bool {
        self.status == 200
    }

    /// The answer as an error, when it is a 404/410.
    pub fn not_found(&self) -> GoError {
        GoError::NotFound {
            gone: self.status == 410,
            reason: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

impl From<StoredAnswer> for Cached {
    fn from(stored: StoredAnswer) -> Cached {
        Cached {
            status: stored.status,
            body: Bytes::from(stored.body),
            fetched_at: stored.fetched_at,
        }
    }
}

/// What a refresh produced, shared by every caller that waited on it.
pub type Refreshed = Result<Arc<Cached>, Failure>;

impl GoProxy {
    fn is_fresh(&self, cached: &Cached, now: i64) -> bool {
        let ttl = if cached.found() {
            self.inner.list_ttl
        } else {
            self.inner.negative_ttl
        };
        now.saturating_sub(cached.fetched_at) < ttl
    }

    /// What is kept under `key`, fresh or not, from the memo or the index.
    pub(super) async fn kept(&self, key: &Key) -> Result<Option<Arc<Cached>>, GoError> {
        if let Some(cached) = self.inner.answers.get(key.as_str()) {
            return Ok(Some(cached));
        }
        let read = self.inner.answers.stamp();
        let stored = self
            .inner
            .store
            .go()
            .answer(key.stored())
            .await
            .or_internal(key.as_str())?;
        Ok(stored.map(|stored| {
            let cached = Arc::new(Cached::from(stored));
            self.remember(key, cached.clone(), read);
            cached
        }))
    }

    /// A kept answer if it is fresh: the negative-cache check of misses.
    pub(super) async fn fresh(&self, key: &Key) -> Result<Option<Arc<Cached>>, GoError> {
        Ok(self
            .kept(key)
            .await?
            .filter(|c| self.is_fresh(c, now_secs())))
    }

    /// Memoizes an answer unless another replica replaced it since `read`.
    fn remember(&self, key: &Key, cached: Arc<Cached>, read: u64) {
        let weight = cached.body.len();
        self.inner
            .answers
            .insert_read(read, key.as_str().to_owned(), cached, weight);
    }

    /// Keeps an upstream answer (found or not found) in the index and the
    /// memo. An index that cannot take it is logged, not blamed on upstream:
    /// the answer is in hand and is served (and memoized) all the same.
    pub(super) async fn keep(&self, key: &Key, status: u16, body: Bytes) -> Arc<Cached> {
        let read = self.inner.answers.stamp();
        let fetched_at = match self
            .inner
            .store
            .go()
            .put_answer(key.stored(), status, &body)
            .await
        {
            Ok(fetched_at) => fetched_at,
            Err(error) => {
                tracing::error!(target: "mirror::go", key = key.as_str(), %error, "could not record an upstream answer");
                now_secs()
            }
        };
        let cached = Arc::new(Cached {
            status,
            body,
            fetched_at,
        });
        self.remember(key, cached.clone(), read);
        cached
    }

    /// The answer under `key`: kept and fresh, else fetched by `fetch` (once,
    /// for all concurrent callers), else kept and stale.
    pub(super) async fn cached_answer<F>(
        &self,
        key: &Key,
        fetch: F,
    ) -> Result<(Arc<Cached>, Outcome), GoError>
    where
        F: Future<Output = Answer<Bytes>>,
    {
        let kept = self.kept(key).await?;
        if let Some(cached) = &kept
            && self.is_fresh(cached, now_secs())
        {
            return Ok((
                cached.clone(),
                if cached.found() {
                    Outcome::Hit
                } else {
                    Outcome::NotFound
                },
            ));
        }
        // Boxed: the fetch and the index write are kilobytes of future that
        // every hit's would carry otherwise.
        let refreshed = self
            .inner
            .flights
            .run(
                key.as_str(),
                Box::pin(async {
                    match fetch.await {
                        Answer::Found(body) => Ok(self.keep(key, 200, body).await),
                        Answer::NotFound { gone, reason } => Ok(self
                            .keep(key, if gone { 410 } else { 404 }, Bytes::from(reason))
                            .await),
                        Answer::Failed(error) => Err(error),
                    }
                }),
            )
            .await;
        match (refreshed, kept) {
            (Ok(cached), _) => {
                let outcome = if cached.found() {
                    Outcome::Miss
                } else {
                    Outcome::NotFound
                };
                Ok((cached, outcome))
            }
            (Err(error), Some(stale)) => {
                tracing::warn!(target: "mirror::go", key = key.as_str(), %error, "every upstream failed; serving the stale answer");
                Ok((stale, Outcome::Stale))
            }
            (Err(error), None) => Err(GoError::upstream(key.as_str(), &error)),
        }
    }
}
