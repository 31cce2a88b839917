//! `[go] verify = "sumdb"`: a `.mod` or `.zip` of a canonical version is
//! proven against the checksum database (the first `go.sumdb` entry) before
//! it is stored or served on a miss. The database's answers come from what
//! the `/sumdb/` proxy keeps (full tiles stored, lookups and partial tiles
//! kept) before the database is asked, so with the database down a module
//! whose record and tiles are kept still verifies; what proved a module is
//! kept there in turn, so a client that verifies sees what the mirror
//! checked. The latest verified tree head is one row in the index: a head
//! that does not extend it (a fork) or is not in it (a rollback) is refused
//! and logged as a security event. Modules matching `go.private` or
//! `go.nosumdb` are never named to the database.

use bytes::Bytes;
use tokio::sync::Mutex;

use super::GoProxy;
use super::chain::{self, fetch_one};
use super::checksum::{Answer, Database, Fetch, FetchError, H1, SignedTree, SumFile, Verified};
use super::checksum::{KeyError, VerifyError};
use super::error::{GoError, OrInternal};
use super::key::{AnswerKey, Key, Resource};
use super::module::ModulePath;
use super::private::{BadPattern, Private};
use super::sumdb::{self, HASH_SIZE, MAX_SUMDB_ANSWER, SumdbPath};
use super::version::Version;
use crate::config::GoConfig;
use crate::escape::escape;
use crate::store::{Origin, TileKey};

/// Why `go.verify`, `go.nosumdb` or the verifying database's key is refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("go.nosumdb: {0}")]
    NoSumdb(#[from] BadPattern),
    #[error("go.sumdb[0].key: {0}")]
    Key(#[from] KeyError),
    #[error("go.sumdb[0].key: the key is for {key:?}, not {name:?}")]
    Name { key: String, name: String },
}

/// The database modules are checked against, and how.
pub(super) struct Verifier {
    db: Database,
    /// Its base URL, no trailing slash.
    base: String,
    nosumdb: Private,
    /// Held while the stored head moves: two fills that verified against
    /// different heads are reconciled one at a time.
    head: Mutex<()>,
}

impl Verifier {
    /// `None` with `verify = "off"`.
    pub(super) fn new(config: &GoConfig) -> Result<Option<Verifier>, VerifierError> {
        let nosumdb = Private::parse(&config.nosumdb)?;
        let Some(sumdb) = config.verifying_sumdb() else {
            return Ok(None);
        };
        // Config validation guarantees a key; an absent one is checked there.
        let key = sumdb.verifier_key().unwrap_or_default();
        let db = Database::new(key)?;
        if db.name() != sumdb.name {
            return Err(VerifierError::Name {
                key: db.name().to_owned(),
                name: sumdb.name.clone(),
            });
        }
        Ok(Some(Verifier {
            db,
            base: sumdb.url.trim_end_matches('/').to_owned(),
            nosumdb,
            head: Mutex::new(()),
        }))
    }

    fn exempt(&self, proxy: &GoProxy, module: &ModulePath) -> bool {
        proxy.inner.private.matches(module.as_str()) || self.nosumdb.matches(module.as_str())
    }
}

impl GoProxy {
    /// Whether a `/sumdb/{name}/` lookup of `module` goes through the check.
    pub(super) fn verifies_lookup(&self, name: &str, module: &ModulePath) -> bool {
        self.verifies(module)
            && self
                .inner
                .verifier
                .as_ref()
                .is_some_and(|verifier| verifier.db.name() == name)
    }

    /// Whether `module`'s files are checked against the database.
    pub(super) fn verifies(&self, module: &ModulePath) -> bool {
        self.inner
            .verifier
            .as_ref()
            .is_some_and(|verifier| !verifier.exempt(self, module))
    }

    /// The database's hashes for `module@version`, proven; `None` when
    /// nothing is to be checked (verification off, a private or nosumdb
    /// module). Every refusal is logged and counted here.
    pub(super) async fn verification(
        &self,
        module: &ModulePath,
        version: &Version,
    ) -> Result<Option<Verified>, GoError> {
        let Some(verifier) = &self.inner.verifier else {
            return Ok(None);
        };
        if verifier.exempt(self, module) {
            return Ok(None);
        }
        let kept = Kept {
            proxy: self,
            name: verifier.db.name(),
            base: &verifier.base,
        };
        let refuse = |error| self.refuse(verifier, error, module, version);
        let stored = self.stored_head(verifier).await?.map_err(refuse)?;
        let verified = verifier
            .db
            .lookup(&kept, stored.as_ref(), module, version)
            .await
            .map_err(refuse)?;
        self.record_head(verifier, &kept, stored.as_ref(), &verified)
            .await
            .map_err(|e| match e {
                HeadError::Verify(error) => refuse(error),
                HeadError::Go(error) => error,
            })?;
        kept.keep(&verified.proof).await;
        Ok(Some(verified))
    }

    /// Ok when `ours` is the database's hash for `file` of a verified
    /// version; a mismatch is logged, counted and refused.
    pub(super) fn check_hash(
        &self,
        verified: &Verified,
        file: SumFile,
        ours: H1,
    ) -> Result<(), GoError> {
        let Some(verifier) = &self.inner.verifier else {
            return Ok(());
        };
        match verified.check(file, ours) {
            Ok(()) => {
                self.inner
                    .client
                    .metrics
                    .go_checksum(verifier.db.name(), "verified");
                Ok(())
            }
            Err(error) => Err(self.refuse(verifier, error, &verified.module, &verified.version)),
        }
    }

    async fn stored_head(
        &self,
        verifier: &Verifier,
    ) -> Result<Result<Option<SignedTree>, VerifyError>, GoError> {
        let name = verifier.db.name();
        let note = self
            .inner
            .store
            .go()
            .verified_head(name)
            .await
            .or_internal(&format!("sumdb {name} head"))?;
        Ok(note
            .map(|note| verifier.db.open_head(Bytes::from(note)))
            .transpose())
    }

    /// Stores the head `verified` brought if it is newer than the stored
    /// one, first proving it consistent with a head another fill stored
    /// since this one read it.
    async fn record_head(
        &self,
        verifier: &Verifier,
        kept: &Kept<'_>,
        read: Option<&SignedTree>,
        verified: &Verified,
    ) -> Result<(), HeadError> {
        let _held = verifier.head.lock().await;
        let current = self
            .stored_head(verifier)
            .await?
            .map_err(HeadError::Verify)?;
        let head = match &current {
            Some(current) if Some(current) != read => {
                let (head, proof) = verifier
                    .db
                    .advance(kept, current, verified.head.clone())
                    .await
                    .map_err(HeadError::Verify)?;
                kept.keep(&proof).await;
                head
            }
            _ => verified.head.clone(),
        };
        if current
            .as_ref()
            .is_none_or(|current| head.tree().size > current.tree().size)
        {
            let name = verifier.db.name();
            self.inner
                .store
                .go()
                .put_verified_head(name, head.tree().size, head.note())
                .await
                .or_internal(&format!("sumdb {name} head"))?;
        }
        Ok(())
    }

    /// The client's answer for a failed check, logged (escaped: the text
    /// comes from the database) and counted.
    fn refuse(
        &self,
        verifier: &Verifier,
        error: VerifyError,
        module: &ModulePath,
        version: &Version,
    ) -> GoError {
        let db = verifier.db.name();
        let metrics = &self.inner.client.metrics;
        let text = error.to_string();
        let artifact = format!("{module}@{version}");
        match &error {
            VerifyError::NotInDatabase { .. } => {
                metrics.go_checksum(db, "not_found");
                GoError::not_found(text)
            }
            VerifyError::HashMismatch(_) => {
                metrics.go_checksum(db, "mismatch");
                tracing::warn!(target: "mirror::go", artifact, error = %escape(&text), "refused: the checksum database has another hash");
                GoError::Refused(text)
            }
            VerifyError::Fork(divergence) | VerifyError::Rollback(divergence) => {
                let kind = if matches!(error, VerifyError::Fork(_)) {
                    "fork"
                } else {
                    "rollback"
                };
                metrics.go_checksum(db, kind);
                tracing::error!(
                    target: "mirror::security",
                    event = "checksum_database_divergence",
                    kind,
                    database = db,
                    artifact,
                    ours = %escape(&String::from_utf8_lossy(&divergence.ours_note)),
                    theirs = %escape(&String::from_utf8_lossy(&divergence.theirs_note)),
                    error = %escape(&text),
                    "checksum database signed two histories; refused"
                );
                GoError::Refused(text)
            }
            VerifyError::Unreachable { .. } => {
                metrics.go_checksum(db, "unreachable");
                tracing::warn!(target: "mirror::go", artifact, error = %escape(&text), "not verified: checksum database unreachable");
                GoError::Unverified(format!(
                    "checksum database {db} is unreachable and {artifact} was not verified \
                     before; it is not served unverified"
                ))
            }
            VerifyError::Invalid { .. } => {
                metrics.go_checksum(db, "invalid");
                tracing::warn!(target: "mirror::go", artifact, error = %escape(&text), "not verified: the checksum database's answers do not verify");
                GoError::Refused(text)
            }
        }
    }
}

enum HeadError {
    Verify(VerifyError),
    Go(GoError),
}

impl From<GoError> for HeadError {
    fn from(error: GoError) -> HeadError {
        HeadError::Go(error)
    }
}

/// The database's answers as the `/sumdb/` proxy keeps them, the database
/// asked only for what is not kept.
struct Kept<'a> {
    proxy: &'a GoProxy,
    name: &'a str,
    base: &'a str,
}

impl Fetch for Kept<'_> {
    async fn fetch(&self, path: &str) -> Result<Bytes, FetchError> {
        match sumdb::parse(path) {
            Some(SumdbPath::Tile(tile)) if tile.full => {
                if let Some(bytes) = self.stored_tile(path).await? {
                    return Ok(bytes);
                }
                self.upstream(path).await
            }
            Some(SumdbPath::Tile(tile)) => {
                let len = (tile.width * HASH_SIZE) as usize;
                let prefix = |bytes: Bytes| (bytes.len() >= len).then(|| bytes.slice(..len));
                if !tile.data
                    && let Some(bytes) = self.stored_tile(&tile.full_path).await?.and_then(prefix)
                {
                    return Ok(bytes);
                }
                if let Some(bytes) = self.kept(path).await? {
                    return Ok(bytes);
                }
                match self.upstream(path).await {
                    Err(FetchError::Unreachable(reason)) if !tile.data => {
                        let under = Key::sumdb_partials(self.name, &tile.full_path);
                        let wider = self
                            .proxy
                            .inner
                            .store
                            .go()
                            .answers_under(under.stored())
                            .await
                            .map_err(|e| FetchError::Unreachable(format!("store: {e}")))?
                            .into_iter()
                            .filter(|(_, answer)| answer.status == 200)
                            .find_map(|(_, answer)| prefix(Bytes::from(answer.body)));
                        wider.ok_or(FetchError::Unreachable(reason))
                    }
                    answer => answer,
                }
            }
            // A lookup's record never changes once logged: a kept one, of
            // any age, proves as well as a fresh one.
            _ => match self.kept(path).await? {
                Some(bytes) => Ok(bytes),
                None => self.upstream(path).await,
            },
        }
    }
}

impl Kept<'_> {
    fn key(&self, path: &str) -> Key {
        AnswerKey::Answer(Resource::Sumdb {
            db: self.name,
            path,
        })
        .encode()
    }

    async fn stored_tile(&self, path: &str) -> Result<Option<Bytes>, FetchError> {
        self.proxy
            .stored_tile(self.name, path)
            .await
            .map_err(|_| FetchError::Unreachable("the store could not read a kept tile".into()))
    }

    /// A kept 200 answer, fresh or not.
    async fn kept(&self, path: &str) -> Result<Option<Bytes>, FetchError> {
        let kept = self.proxy.kept(&self.key(path)).await.map_err(|_| {
            FetchError::Unreachable("the store could not read a kept answer".into())
        })?;
        Ok(kept.filter(|c| c.found()).map(|c| c.body.clone()))
    }

    async fn upstream(&self, path: &str) -> Result<Bytes, FetchError> {
        let resource = Resource::Sumdb {
            db: self.name,
            path,
        };
        let url = format!("{}/{}", self.base, resource.upstream_path());
        match fetch_one(&self.proxy.inner.client, url, MAX_SUMDB_ANSWER).await {
            chain::Answer::Found(bytes) => Ok(bytes),
            chain::Answer::NotFound { reason, .. } => Err(FetchError::NotFound(reason)),
            chain::Answer::Failed(failure) => Err(FetchError::Unreachable(failure.to_string())),
        }
    }

    /// Keeps answers that took part in a proof where the `/sumdb/` proxy
    /// answers from: full tiles in the store for good, the rest as answers.
    /// A store that cannot take one is logged; the proof stands.
    async fn keep(&self, proof: &[Answer]) {
        let store = &self.proxy.inner.store;
        for answer in proof {
            let key = self.key(&answer.path);
            if matches!(sumdb::parse(&answer.path), Some(SumdbPath::Tile(tile)) if tile.full) {
                let stored = match store.blobs().put(&answer.body, Origin::Cached).await {
                    Ok(digest) => {
                        let tile = TileKey::new(self.name, &answer.path);
                        let size = answer.body.len() as u64;
                        store.go().put_tile(tile, &digest, size).await
                    }
                    Err(error) => Err(error),
                };
                match stored {
                    Ok(()) => self.proxy.inner.tiles.insert(
                        key.to_string(),
                        answer.body.clone(),
                        answer.body.len(),
                    ),
                    Err(error) => {
                        tracing::error!(target: "mirror::go", key = key.as_str(), %error, "could not store a verified checksum tile");
                    }
                }
            } else {
                self.proxy.keep(&key, 200, answer.body.clone()).await;
            }
        }
    }
}
