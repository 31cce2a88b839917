//! A `.zip` miss: one shared fill per zip, however many clients ask. The
//! first becomes the producer and downloads in a task detached from every
//! client; all of them stream the bytes as they land in the temp file. The
//! zip is checked (`zipcheck`) before it is indexed, and the last byte is held
//! back until then, so no client ever gets a complete invalid zip. The fill
//! runs under the store's fill limits (`cache.max_size`, `cache.fill_timeout`,
//! `cache.fill_min_rate`) and `go.max_zip_size`.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::Response;
use http::header::{CONTENT_LENGTH, HeaderValue};

use super::chain::Answer;
use super::checksum::{H1, SumFile, Verified};
use super::error::{GoError, OrInternal};
use super::files::{artifact, with_type};
use super::key::{AnswerKey, Key, Resource};
use super::module::ModulePath;
use super::route::FileKind;
use super::version::Version;
use super::{GoProxy, Reply, Served, zipcheck};
use crate::store::{
    FillError, FillHead, FillProducer, FillReader, GoFile, Refetch, Slot, UpstreamFailure,
    Validator,
};
use crate::sync::Unpoisoned;
use crate::wire::{Body, Outcome, body};

impl GoProxy {
    pub(super) async fn zip_miss(
        &self,
        module: &ModulePath,
        version: &Version,
        key: &Key,
        negative_key: &Key,
        reply: Reply,
    ) -> Result<Served, GoError> {
        let fill_key = AnswerKey::ZipFill(module, version).encode();
        // A fill abandoned before it started (its producer found the zip already
        // stored) leaves its readers to look again; a couple of rounds settle it.
        for _ in 0..3 {
            let slot = self
                .inner
                .store
                .fill_shared(fill_key.as_str(), self.refetch(module, version))
                .await
                .or_internal(key.as_str())?;
            let reader = match slot {
                Slot::Joined(reader) => reader,
                Slot::Producer(producer) => {
                    if let Some(served) = self
                        .stored_file(module, version, FileKind::Zip, key, reply)
                        .await?
                    {
                        producer.withdraw();
                        return Ok(served);
                    }
                    let reader = producer.reader();
                    let proxy = self.clone();
                    let (module, version) = (module.clone(), version.clone());
                    tokio::spawn(async move { proxy.produce_zip(producer, module, version).await });
                    reader
                }
            };
            // A zip the database vouches for is sent once it is proven (its
            // bytes wait in the fill's temp file, not in memory), so a refusal
            // reaches the client as an answer naming both hashes rather than
            // as a cut-off download.
            let filled = if self.verifies(module) {
                self.verified_fill(reader, module, version, key, reply)
                    .await?
            } else {
                stream_fill(reader, reply)
                    .await
                    .map(|response| Served::new(response, Outcome::Miss, None))
            };
            match filled {
                Ok(served) => return Ok(served),
                Err(FillError::Invalid(reason)) => {
                    return Err(self
                        .refusal(&fill_key)
                        .unwrap_or_else(|| GoError::upstream(key.as_str(), &reason)));
                }
                Err(FillError::Abandoned) => {
                    if let Some(served) = self
                        .stored_file(module, version, FileKind::Zip, key, reply)
                        .await?
                    {
                        return Ok(served);
                    }
                }
                Err(FillError::NotFound(UpstreamFailure {
                    message: reason, ..
                })) => {
                    let gone = self
                        .kept(negative_key)
                        .await?
                        .is_some_and(|c| c.status == 410);
                    return Err(GoError::NotFound { gone, reason });
                }
                Err(FillError::Upstream(failure)) => {
                    return self.stale_negative_or(negative_key, &failure).await;
                }
                Err(error) => return Err(GoError::upstream(key.as_str(), &error)),
            }
        }
        Err(GoError::internal(
            key.as_str(),
            &"fill abandoned repeatedly",
        ))
    }

    /// How a replica that takes this zip's fill over from a dead one fetches it again.
    fn refetch(&self, module: &ModulePath, version: &Version) -> Refetch {
        let proxy = self.clone();
        let (module, version) = (module.clone(), version.clone());
        Arc::new(move |producer| {
            let proxy = proxy.clone();
            let (module, version) = (module.clone(), version.clone());
            tokio::spawn(async move { proxy.produce_zip(producer, module, version).await });
        })
    }

    /// The one upstream download of a zip, detached from any client.
    async fn produce_zip(
        self,
        mut producer: Box<FillProducer>,
        module: ModulePath,
        version: Version,
    ) {
        let key = artifact(&module, &version, FileKind::Zip);
        let fill_key = AnswerKey::ZipFill(&module, &version).encode();
        self.set_refusal(&fill_key, None);
        producer.limit(self.inner.max_zip);
        let path = Resource::File(&module, &version, FileKind::Zip).upstream_path();
        let response = match self.inner.chain.open(&self.inner.client, &path).await {
            Answer::Found(response) => response,
            Answer::NotFound { gone, reason } => {
                let status = if gone { 410 } else { 404 };
                self.keep(
                    &AnswerKey::Answer(Resource::File(&module, &version, FileKind::Zip)).encode(),
                    status,
                    Bytes::from(reason.clone()),
                )
                .await;
                producer.fail(FillError::NotFound(UpstreamFailure::new(
                    Some(status),
                    reason,
                )));
                return;
            }
            Answer::Failed(error) => {
                let failure = UpstreamFailure::new(error.status(), error.to_string());
                producer.fail(FillError::Upstream(failure));
                return;
            }
        };
        // Once upstream has it and before any byte is sent: a version the
        // database does not know, or cannot prove, is refused with why.
        let verified = match self.verification(&module, &version).await {
            Ok(verified) => verified,
            Err(refusal) => {
                let reason = format!("{refusal:?}");
                self.set_refusal(&fill_key, Some(refusal));
                producer.fail(FillError::Invalid(reason));
                return;
            }
        };
        let head = FillHead {
            total: response.content_length(),
            media_type: Some(FileKind::Zip.content_type().to_owned()),
        };
        if let Err(error) = producer.start(head) {
            producer.fail(error);
            return;
        }
        let body = response.bytes_stream().map_err(reqwest::Error::without_url);
        if let Err(error) = producer.pump(body).await {
            tracing::warn!(target: "mirror::go", artifact = key, %error, "zip download failed");
            producer.fail(error);
            return;
        }
        let validator = self.zip_validator(&module, &version, verified);
        let committed = match producer.commit(None, Some(validator)).await {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(target: "mirror::go", artifact = key, %error, "zip from upstream refused");
                if let Some(GoError::Refused(text)) = self.refusal(&fill_key) {
                    let key = AnswerKey::Refused(&module, &version, FileKind::Zip).encode();
                    self.keep(&key, 502, Bytes::from(text)).await;
                }
                return;
            }
        };
        let indexed = self
            .inner
            .store
            .go()
            .put_file(
                module.key(),
                version.key(),
                GoFile::Zip,
                &committed.digest,
                committed.size,
            )
            .await;
        if let Err(error) = indexed {
            tracing::error!(target: "mirror::go", artifact = key, %error, "could not index the zip");
        }
        committed.publish();
    }
}

impl GoProxy {
    /// Why the current fill `fill_key` was refused by the checksum check,
    /// for its readers: set before the fill fails, cleared when one starts.
    fn set_refusal(&self, fill_key: &Key, refusal: Option<GoError>) {
        let mut refusals = self.inner.zip_refusals.lock().unpoisoned();
        match refusal {
            Some(refusal) => refusals.insert(fill_key.as_str().to_owned(), refusal),
            None => refusals.remove(fill_key.as_str()),
        };
    }

    fn refusal(&self, fill_key: &Key) -> Option<GoError> {
        let refusals = self.inner.zip_refusals.lock().unpoisoned();
        refusals.get(fill_key.as_str()).cloned()
    }

    /// The zip's checks on its temp file, before anything is committed and
    /// while its last byte is held back from every client: a valid module
    /// zip, then (unless exempt) the checksum database's `h1:` hash, computed
    /// in a stream from the file.
    fn zip_validator(
        &self,
        module: &ModulePath,
        version: &Version,
        verified: Option<Verified>,
    ) -> Validator {
        let (m, v) = (module.as_str().to_owned(), version.as_str().to_owned());
        let fill_key = AnswerKey::ZipFill(module, version).encode();
        let proxy = self.clone();
        Box::new(move |path| {
            zipcheck::check(path, &m, &v)?;
            let Some(verified) = verified else {
                return Ok(());
            };
            let ours = H1::zip_file(path)?;
            match proxy.check_hash(&verified, SumFile::Zip, ours) {
                Ok(()) => Ok(()),
                Err(refusal) => {
                    let reason = format!("{refusal:?}");
                    proxy.set_refusal(&fill_key, Some(refusal));
                    Err(reason.into())
                }
            }
        })
    }
}

impl GoProxy {
    /// Waits for the whole fill (validated, hashed, committed), then serves
    /// the stored zip as a miss.
    async fn verified_fill(
        &self,
        mut reader: FillReader,
        module: &ModulePath,
        version: &Version,
        key: &Key,
        reply: Reply,
    ) -> Result<Result<Served, FillError>, GoError> {
        if let Err(error) = reader.finished().await {
            return Ok(Err(error));
        }
        let served = self
            .stored_file(module, version, FileKind::Zip, key, reply)
            .await?;
        Ok(match served {
            Some(mut served) => {
                served.outcome = Outcome::Miss;
                Ok(served)
            }
            None => Err(FillError::Abandoned),
        })
    }
}

/// Waits for upstream's answer, then streams the fill as it arrives.
async fn stream_fill(mut reader: FillReader, reply: Reply) -> Result<Response<Body>, FillError> {
    let head: Arc<FillHead> = reader.head().await?;
    let mut response = match reply {
        Reply::HeadOnly => Response::new(body::empty()),
        Reply::Full => Response::new(body::stream(reader.stream(0, None))),
    };
    if let Some(total) = head.total {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(total));
    }
    Ok(with_type(response, FileKind::Zip))
}
