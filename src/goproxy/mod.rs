//! The GOPROXY protocol at the URL root: `/{module}/@v/list`,
//! `/{module}/@v/{version}.info|.mod|.zip`, `/{module}/@latest` and the
//! checksum database proxy `/sumdb/{name}/…`. One pipeline per request:
//! method → parse (Go's rules; nothing invalid goes further) → private check →
//! memo / store → upstream list → respond with what was touched. Handlers call
//! the store and `chain`; they never see SQL or a path on disk.

mod answers;
pub mod chain;
pub mod checksum;
mod error;
mod failure;
mod files;
mod key;
mod memo;
pub mod module;
pub mod private;
pub mod route;
mod sumdb;
mod verifier;
pub mod version;
pub mod zipcheck;
mod zipfill;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;

pub use chain::Chain;
pub use error::GoError;
pub use module::ModulePath;
pub use private::Private;
pub use version::Query;

use self::answers::Refreshed;
use self::files::{FileFetch, Stored};
use self::key::{AnswerKey, Resource};
use self::memo::Memo;
use self::route::Route;
use crate::config::GoConfig;
use crate::metrics::Metrics;
use crate::store::{Change, Digest, Store, Watcher};
use crate::upstream::Singleflight;
use crate::wire::{Action, Body, Outcome, Touched, body, touched};

/// Largest `list` or `@latest` answer accepted from upstream.
const MAX_LIST: usize = 4 << 20;

/// Memory for copies of hot metadata: `.info`/`.mod` bytes and zip locations,
/// expiring answers, full sumdb tiles.
const FILES_MEMO: usize = 64 << 20;
const ANSWERS_MEMO: usize = 32 << 20;
const TILES_MEMO: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("go.upstream: {0}")]
    Upstream(#[from] chain::ChainError),
    #[error("go.private: {0}")]
    Private(#[from] private::BadPattern),
    #[error("go upstream client: {0}")]
    Client(#[from] crate::upstream::ClientError),
    #[error(transparent)]
    Verifier(#[from] verifier::VerifierError),
}

/// Checks `go.upstream` and `go.private` as `GoProxy::new` will parse them, so
/// a start can refuse them before it changes anything on disk.
pub fn check(config: &GoConfig) -> Result<(), SetupError> {
    parse_settings(config)?;
    verifier::Verifier::new(config)?;
    Ok(())
}

fn parse_settings(config: &GoConfig) -> Result<(Chain, Private), SetupError> {
    let chain = config.upstream.parse()?;
    Ok((chain, Private::parse(&config.private)?))
}

/// The Go module mirror. Cheap to clone (one `Arc`), so a zip download can
/// outlive the request that started it.
#[derive(Clone)]
pub struct GoProxy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: chain::Client,
    chain: Chain,
    private: Private,
    /// `None` with `go.verify = "off"`.
    verifier: Option<verifier::Verifier>,
    /// Checksum database name → base URL (no trailing slash).
    sumdbs: HashMap<String, String>,
    list_ttl: i64,
    negative_ttl: i64,
    max_zip: u64,
    files: Memo<Stored>,
    answers: Memo<Arc<answers::Cached>>,
    tiles: Memo<Bytes>,
    flights: Singleflight<Refreshed>,
    file_flights: Singleflight<FileFetch>,
    /// Zip fills (by fill key) the checksum check refused, and why: what
    /// their readers answer.
    zip_refusals: std::sync::Mutex<HashMap<String, GoError>>,
}

/// Another replica's answer replaces the one kept here; when notices may
/// have been missed, everything goes. Files and tiles are immutable: only
/// deletions, which move the generation they follow, take them out.
impl Watcher for Inner {
    fn changed(&self, change: &Change) {
        match change {
            Change::Answer(key) => self.answers.forget(key),
            Change::Reset => {
                self.files.clear();
                self.answers.clear();
                self.tiles.clear();
            }
            // Answers expire by their own TTLs, which the backstop would not shorten.
            Change::Expire
            | Change::Generation(_)
            | Change::Tag { .. }
            | Change::Manifest { .. }
            | Change::RepoBlob { .. } => {}
        }
    }
}

/// What a request asks to be sent: HEAD wants GET's headers and no body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Full,
    HeadOnly,
}

/// A response and what it touched.
pub(crate) struct Served {
    response: Response<Body>,
    outcome: Outcome,
    digest: Option<Digest>,
}

impl Served {
    fn new(response: Response<Body>, outcome: Outcome, digest: Option<Digest>) -> Served {
        Served {
            response,
            outcome,
            digest,
        }
    }
}

fn bytes_response(bytes: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(bytes));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl GoProxy {
    pub fn new(
        config: &GoConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<GoProxy, SetupError> {
        let (chain, private) = parse_settings(config)?;
        let sumdbs: HashMap<String, String> = config
            .sumdb
            .iter()
            .map(|s| (s.name.clone(), s.url.trim_end_matches('/').to_owned()))
            .collect();
        let upstreams = chain.proxies().chain(sumdbs.values().map(String::as_str));
        let http = crate::upstream::Clients::new(upstreams, config.ca.as_deref())?;
        let verifier = verifier::Verifier::new(config)?;
        let generation = store.generation();
        let inner = Arc::new(Inner {
            store,
            client: chain::Client { http, metrics },
            chain,
            private,
            verifier,
            sumdbs,
            list_ttl: config.list_ttl.as_secs() as i64,
            negative_ttl: config.negative_ttl.as_secs() as i64,
            max_zip: config.max_zip_size.as_u64(),
            files: Memo::following(FILES_MEMO, generation.clone()),
            answers: Memo::new(ANSWERS_MEMO),
            tiles: Memo::following(TILES_MEMO, generation),
            flights: Singleflight::default(),
            file_flights: Singleflight::default(),
            zip_refusals: std::sync::Mutex::default(),
        });
        inner.store.watch(&inner);
        Ok(GoProxy { inner })
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let reply = match *request.method() {
            Method::GET => Reply::Full,
            Method::HEAD => Reply::HeadOnly,
            _ => return answer("-".into(), Err(GoError::MethodNotAllowed), Reply::Full),
        };
        let route = match route::parse(request.uri().path()) {
            Ok(route) => route,
            Err(refusal) => return answer("-".into(), Err(refusal.into()), reply),
        };
        let artifact = artifact(&route);
        let result = match route {
            Route::List(module)
            | Route::Latest(module)
            | Route::File(module, ..)
            | Route::Query(module, _)
                if self.inner.private.matches(module.as_str()) =>
            {
                Err(GoError::not_found(format!(
                    "not found: {module} matches the mirror's private patterns (go.private); \
                     it is never requested from an upstream"
                )))
            }
            Route::List(module) => self.list(&module).await,
            Route::Latest(module) => self.latest(&module).await,
            Route::File(module, version, kind) => self.file(&module, &version, kind, reply).await,
            Route::Query(module, query) => self.query(&module, &query).await,
            Route::Sumdb { name, rest } => self.sumdb(&name, &rest).await,
        };
        answer(artifact, result, reply)
    }

    async fn list(&self, module: &ModulePath) -> Result<Served, GoError> {
        self.moving(Resource::List(module), "text/plain; charset=utf-8")
            .await
    }

    async fn latest(&self, module: &ModulePath) -> Result<Served, GoError> {
        self.moving(Resource::Latest(module), "application/json")
            .await
    }

    async fn query(&self, module: &ModulePath, query: &Query) -> Result<Served, GoError> {
        self.moving(Resource::Query(module, query), "application/json")
            .await
    }

    /// An answer that changes upstream, through the TTL cache.
    async fn moving(
        &self,
        resource: Resource<'_>,
        content_type: &'static str,
    ) -> Result<Served, GoError> {
        let path = resource.upstream_path();
        let fetch = self.inner.chain.fetch(&self.inner.client, &path, MAX_LIST);
        let key = AnswerKey::Answer(resource).encode();
        let (cached, outcome) = self.cached_answer(&key, fetch).await?;
        if !cached.found() {
            return Err(cached.not_found());
        }
        Ok(Served::new(
            bytes_response(cached.body.clone(), content_type),
            outcome,
            None,
        ))
    }
}

/// What a route touches, for the access log and audit.
fn artifact(route: &Route) -> String {
    match route {
        Route::List(module) => format!("{module}/@v/list"),
        Route::Latest(module) => format!("{module}/@latest"),
        Route::File(module, version, kind) => files::artifact(module, version, *kind),
        Route::Query(module, query) => format!("{module}@{query}.info"),
        Route::Sumdb { name, rest } => format!("sumdb/{name}/{rest}"),
    }
}

/// The response with what it touched attached; HEAD keeps the headers only.
fn answer(artifact: String, result: Result<Served, GoError>, reply: Reply) -> Response<Body> {
    let (mut response, outcome, digest) = match result {
        Ok(served) => (served.response, served.outcome, served.digest),
        Err(error) => {
            let outcome = error.outcome();
            (error.into_response(), outcome, None)
        }
    };
    if reply == Reply::HeadOnly {
        let length = response.body().size_hint().exact();
        if let Some(length) = length
            && !response.headers().contains_key(CONTENT_LENGTH)
        {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        *response.body_mut() = body::empty();
    }
    touched(
        response,
        Touched {
            action: Action::Read,
            artifact,
            digest: digest.map(|d| d.to_string()),
            outcome,
        },
    )
}
