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
use super::error::{GoError, OrInternal};
use super::files::{artifact, with_type};
use super::key::{AnswerKey, Key, Resource};
use super::module::ModulePath;
use super::route::FileKind;
use super::version::Version;
use super::{GoProxy, Reply, Served, zipcheck};
use crate::store::{
    FillError, FillHead, FillProducer, FillReader, GoFile, Slot, UpstreamFailure, Validator,
};
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
                .fill(fill_key.as_str())
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
            match stream_fill(reader, reply).await {
                Ok(response) => return Ok(Served::new(response, Outcome::Miss, None)),
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

    /// The one upstream download of a zip, detached from any client.
    async fn produce_zip(
        self,
        mut producer: Box<FillProducer>,
        module: ModulePath,
        version: Version,
    ) {
        let key = artifact(&module, &version, FileKind::Zip);
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
        let (m, v) = (module.as_str().to_owned(), version.as_str().to_owned());
        let validator: Validator = Box::new(move |path| Ok(zipcheck::check(path, &m, &v)?));
        let committed = match producer.commit(None, Some(validator)).await {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(target: "mirror::go", artifact = key, %error, "zip from upstream refused");
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
