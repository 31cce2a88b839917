//! The TOML configuration: its shape, its defaults, and validation whose every
//! error names the key (and the file) at fault. Nothing here opens sockets or
//! reads certificates; `server` does that with the paths resolved here. A
//! leaf below the protocols: what only a protocol can parse (`go.upstream`,
//! `go.private`, the name grammar of `registry.hosted`) that protocol checks
//! (`goproxy::check`, `oci::check`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::auth::Policy;
use crate::store::VerifyOnRead;

mod backends;
mod cluster;
pub use backends::{IndexConfig, StorageBackend, StorageConfig};
pub use cluster::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// A secret from the config (an upstream password): never printed, not even by `{:?}`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub go: GoConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Absent: this process is the only one on its index and storage.
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit records older than this are deleted (checked hourly).
    #[serde(default = "defaults::audit_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: defaults::audit_retention(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Off,
    /// Ask for a certificate, verify one if sent, let the HTTP policy decide
    /// about clients without one (the `go` command never sends one).
    #[default]
    Optional,
    Required,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate and key. Both absent: a PKI is created in `data_dir/pki`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// CA whose client certificates are accepted.
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub crl: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// bcrypt entries as `htpasswd -B` writes them.
    pub htpasswd: Option<PathBuf>,
    #[serde(default = "defaults::authenticated")]
    pub read: Policy,
    #[serde(default = "defaults::authenticated")]
    pub write: Policy,
    /// Who may scrape `/metrics`.
    #[serde(default = "defaults::authenticated")]
    pub metrics: Policy,
    /// How long a verified password is trusted without running bcrypt again.
    #[serde(default = "defaults::credential_ttl", with = "humantime_serde")]
    pub credential_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd: None,
            read: Policy::Authenticated,
            write: Policy::Authenticated,
            metrics: Policy::Authenticated,
            credential_cache_ttl: defaults::credential_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time to send a request's headers, and the idle time allowed between
    /// requests on a kept-alive HTTP/1.1 connection (slowloris).
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(default = "defaults::max_header_size")]
    pub max_header_size: ByteSize,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Share of `max_connections` that only authenticated connections may hold
    /// (a verified client certificate, or a request that authenticated), so
    /// anonymous peers together can never lock real clients out.
    #[serde(default = "defaults::authenticated_reserve")]
    pub authenticated_reserve: f64,
    /// Connections one IP address may hold before they authenticate (in the
    /// TLS handshake, or anonymous); authenticated ones do not count.
    #[serde(default = "defaults::max_anonymous_per_peer")]
    pub max_anonymous_per_peer: usize,
    /// Time from the end of the TLS handshake to a connection's first request.
    #[serde(default = "defaults::first_request_timeout", with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// A connection with no request in progress for this long is closed
    /// (HTTP/2 has no other limit; HTTP/1.1 also closes at `header_timeout`).
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long open requests may run on after a shutdown signal.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often certificate, CA, CRL and htpasswd files are checked for changes
    /// (SIGHUP reloads at once).
    #[serde(default = "defaults::reload_poll", with = "humantime_serde")]
    pub reload_poll: Duration,
    /// The longest a request body (a pushed chunk, blob or manifest) may send
    /// nothing before it is cut off (a stalled push would hold its session).
    #[serde(default = "defaults::body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout: defaults::handshake_timeout(),
            header_timeout: defaults::header_timeout(),
            max_header_size: defaults::max_header_size(),
            max_connections: defaults::max_connections(),
            authenticated_reserve: defaults::authenticated_reserve(),
            max_anonymous_per_peer: defaults::max_anonymous_per_peer(),
            first_request_timeout: defaults::first_request_timeout(),
            idle_timeout: defaults::idle_timeout(),
            shutdown_grace: defaults::shutdown_grace(),
            reload_poll: defaults::reload_poll(),
            body_timeout: defaults::body_timeout(),
        }
    }
}

impl LimitsConfig {
    /// Connections that have not authenticated may hold at most this many of
    /// `max_connections` together.
    pub fn max_anonymous(&self) -> usize {
        let reserved = (self.max_connections as f64 * self.authenticated_reserve).ceil() as usize;
        self.max_connections.saturating_sub(reserved)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("limits.max_connections: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.authenticated_reserve) {
            return Err(
                "limits.authenticated_reserve: a share of max_connections, from 0 up to (not including) 1"
                    .into(),
            );
        }
        if self.max_anonymous_per_peer == 0 {
            return Err("limits.max_anonymous_per_peer: must be at least 1".into());
        }
        let timeouts = [
            ("limits.first_request_timeout", self.first_request_timeout),
            ("limits.idle_timeout", self.idle_timeout),
        ];
        if let Some((key, _)) = timeouts.iter().find(|(_, timeout)| timeout.is_zero()) {
            return Err(format!("{key}: must be more than 0"));
        }
        if self.max_header_size.as_u64() < 8 * 1024 {
            return Err("limits.max_header_size: must be at least 8KiB".into());
        }
        if self.body_timeout < Duration::from_secs(1) {
            return Err("limits.body_timeout: must be at least 1s".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `mirror=debug`, …; `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: defaults::log_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoConfig {
    /// GOPROXY syntax: `,` falls through on 404/410 only, `|` on any error.
    /// `off` ends the list (serve only what is cached); `direct` is refused:
    /// this server never fetches from version control.
    #[serde(default = "defaults::go_upstream")]
    pub upstream: String,
    /// GOPRIVATE syntax: such modules never reach an upstream or a sumdb.
    #[serde(default)]
    pub private: Vec<String>,
    /// GONOSUMDB syntax: modules fetched from upstream but never checked
    /// against (nor named to) a checksum database.
    #[serde(default)]
    pub nosumdb: Vec<String>,
    /// `sumdb`: every `.mod` and `.zip` is proven against the first
    /// `go.sumdb` entry before it is stored or served; `off`: not checked.
    #[serde(default)]
    pub verify: GoVerify,
    /// Overrides `auth.read` for Go routes.
    pub read: Option<Policy>,
    /// TTL of `list`, `@latest`, non-canonical queries, and of the checksum
    /// database's `latest`, lookups and partial tiles.
    #[serde(default = "defaults::go_list_ttl", with = "humantime_serde")]
    pub list_ttl: Duration,
    /// TTL of 404/410 answers (`go get a/b/c` probes every prefix).
    #[serde(default = "defaults::go_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Largest module zip accepted from upstream (Go's own limit is 500 MiB).
    #[serde(default = "defaults::go_max_zip")]
    pub max_zip_size: ByteSize,
    /// Checksum databases proxied at `/sumdb/NAME/`: these, and sum.golang.org
    /// unless `default_sumdb` is false (an entry of that name replaces it).
    #[serde(default)]
    pub sumdb: Vec<SumdbConfig>,
    /// Proxy sum.golang.org besides the `sumdb` entries. Adding an internal
    /// database must not silently drop the public one; dropping it is a choice.
    #[serde(default = "defaults::yes")]
    pub default_sumdb: bool,
    /// Extra CA (PEM) to trust for Go upstreams and checksum databases, for a
    /// GOPROXY inside the company (an Athens, or another mirror).
    pub ca: Option<PathBuf>,
}

impl Default for GoConfig {
    fn default() -> Self {
        GoConfig {
            upstream: defaults::go_upstream(),
            private: Vec::new(),
            nosumdb: Vec::new(),
            verify: GoVerify::default(),
            read: None,
            list_ttl: defaults::go_list_ttl(),
            negative_ttl: defaults::go_negative_ttl(),
            max_zip_size: defaults::go_max_zip(),
            sumdb: vec![defaults::sum_golang_org()],
            default_sumdb: true,
            ca: None,
        }
    }
}

impl GoConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max_zip_size.as_u64() == 0 {
            return Err("go.max_zip_size: must be more than 0".into());
        }
        for (i, sumdb) in self.sumdb.iter().enumerate() {
            if sumdb.name.is_empty() || sumdb.name.contains('/') || sumdb.name.starts_with('.') {
                return Err(format!(
                    "go.sumdb[{i}].name: {:?} is not a host name",
                    sumdb.name
                ));
            }
            check_url(&format!("go.sumdb[{i}].url"), &sumdb.url)?;
            if self.sumdb[..i].iter().any(|s| s.name == sumdb.name) {
                return Err(format!(
                    "go.sumdb[{i}].name: {:?} is used twice",
                    sumdb.name
                ));
            }
            if let Some(key) = &sumdb.key
                && key.split('+').next() != Some(sumdb.name.as_str())
            {
                return Err(format!(
                    "go.sumdb[{i}].key: names another database than {:?}",
                    sumdb.name
                ));
            }
        }
        if self.verify == GoVerify::Sumdb {
            match self.sumdb.first() {
                None => {
                    return Err(
                        "go.verify: \"sumdb\" needs a go.sumdb entry to verify against \
                         (or default_sumdb = true), or set verify = \"off\""
                            .into(),
                    );
                }
                Some(first) if first.verifier_key().is_none() => {
                    return Err(format!(
                        "go.sumdb[0].key: go.verify = \"sumdb\" verifies against {:?}, which needs its key",
                        first.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SumdbConfig {
    pub name: String,
    pub url: String,
    /// Verifier key in GOSUMDB form (`NAME+HASH+KEY`); sum.golang.org's is
    /// built in. Needed for the database that verifies (the first entry).
    pub key: Option<String>,
}

/// Whether Go modules are proven against a checksum database before caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GoVerify {
    #[default]
    Sumdb,
    Off,
}

/// sum.golang.org's verifier key, as cmd/go has it built in.
pub const SUM_GOLANG_ORG_KEY: &str =
    "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";

impl SumdbConfig {
    /// The configured key, or the built-in one for sum.golang.org.
    pub fn verifier_key(&self) -> Option<&str> {
        match &self.key {
            Some(key) => Some(key),
            None if self.name == "sum.golang.org" => Some(SUM_GOLANG_ORG_KEY),
            None => None,
        }
    }
}

impl GoConfig {
    /// The database every module is verified against: the first entry (the
    /// built-in sum.golang.org when the file names none); `None` when off.
    pub fn verifying_sumdb(&self) -> Option<&SumdbConfig> {
        match self.verify {
            GoVerify::Sumdb => self.sumdb.first(),
            GoVerify::Off => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Overrides `auth.read` / `auth.write` for `/v2/` routes.
    pub read: Option<Policy>,
    pub write: Option<Policy>,
    /// Absent: Docker Hub, as the default upstream, so a first run mirrors
    /// something. Listing upstreams replaces it (a list that names no default
    /// keeps every other name hosted); `upstream = []` mirrors nothing.
    #[serde(default = "defaults::registry_upstream")]
    pub upstream: Vec<UpstreamRegistry>,
    /// Repository namespaces hosted here even when a default upstream would
    /// take them: `hosted = ["internal"]` hosts `internal/app` and `internal`.
    #[serde(default)]
    pub hosted: Vec<String>,
    /// Push sessions one identity may hold open at once (counted in the index,
    /// so across restarts); the next one is refused with 429.
    #[serde(default = "defaults::max_upload_sessions_per_identity")]
    pub max_upload_sessions_per_identity: u32,
    /// Largest blob taken from an upstream; a blob is also cut off at the size
    /// its repository's manifests give it.
    #[serde(default = "defaults::max_blob_size")]
    pub max_blob_size: ByteSize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            read: None,
            write: None,
            upstream: defaults::registry_upstream(),
            hosted: Vec::new(),
            max_upload_sessions_per_identity: defaults::max_upload_sessions_per_identity(),
            max_blob_size: defaults::max_blob_size(),
        }
    }
}

impl RegistryConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max_upload_sessions_per_identity == 0 {
            return Err("registry.max_upload_sessions_per_identity: must be at least 1".into());
        }
        if self.max_blob_size.as_u64() == 0 {
            return Err("registry.max_blob_size: must be more than 0".into());
        }
        let mut defaults = 0;
        for (i, upstream) in self.upstream.iter().enumerate() {
            upstream.validate(i)?;
            if self.upstream[..i].iter().any(|u| u.name == upstream.name) {
                return Err(format!(
                    "registry.upstream[{i}].name: {:?} is used twice",
                    upstream.name
                ));
            }
            defaults += usize::from(upstream.default);
        }
        if defaults > 1 {
            return Err("registry.upstream: at most one upstream may have default = true".into());
        }
        // Their grammar is checked by `oci::check`, which owns it.
        for (i, prefix) in self.hosted.iter().enumerate() {
            let first = prefix.split('/').next().unwrap_or_default();
            if self.upstream.iter().any(|u| u.name == first) {
                return Err(format!(
                    "registry.hosted[{i}]: {prefix:?} is the name of an upstream"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRegistry {
    /// What clients call it: the first path component (`mirror:5000/ghcr.io/…`)
    /// and containerd's `?ns=`.
    pub name: String,
    pub url: String,
    /// Receives names that match no other upstream (Docker Hub style).
    #[serde(default)]
    pub default: bool,
    /// Single-component names get `library/` (`alpine` → `library/alpine`), as
    /// on Docker Hub. Unset: only when `url` is Docker Hub's.
    pub library_prefix: Option<bool>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Extra CA (PEM) to trust for this upstream, for private registries.
    pub ca: Option<PathBuf>,
    /// How long a tag→manifest answer is used before it is revalidated upstream.
    #[serde(default = "defaults::tag_ttl", with = "humantime_serde")]
    pub tag_ttl: Duration,
    /// Hosts besides the upstream's own whose token realms may receive the
    /// configured credentials (over https). Unset: `["auth.docker.io"]` for
    /// Docker Hub's URL, none otherwise.
    pub token_realms: Option<Vec<String>>,
}

/// The hosts of Docker Hub's registry API: where `library/` is the rule, what
/// a reference's `docker.io/` means; its token service is `auth.docker.io`.
pub const DOCKER_HUB_HOSTS: [&str; 4] = [
    "registry-1.docker.io",
    "index.docker.io",
    "docker.io",
    "registry.hub.docker.com",
];

impl UpstreamRegistry {
    /// `token_realms` as set, or its default for this upstream's URL.
    pub fn token_realms(&self) -> Vec<String> {
        match &self.token_realms {
            Some(hosts) => hosts.clone(),
            None if self.is_docker_hub() => vec!["auth.docker.io".to_owned()],
            None => Vec::new(),
        }
    }

    /// Whether the URL is Docker Hub's.
    pub fn is_docker_hub(&self) -> bool {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .is_some_and(|host| DOCKER_HUB_HOSTS.contains(&host.as_str()))
    }

    /// Whether single-component names get `library/` on this upstream.
    pub fn adds_library(&self) -> bool {
        self.library_prefix.unwrap_or_else(|| self.is_docker_hub())
    }

    /// The checks on `registry.upstream[i]` that need no other entry.
    fn validate(&self, i: usize) -> Result<(), String> {
        let key = |field: &str| format!("registry.upstream[{i}].{field}");
        check_url(&key("url"), &self.url)?;
        if self.name.is_empty()
            || self.name.contains('/')
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        {
            return Err(format!(
                "{}: {:?} must be a host name such as docker.io",
                key("name"),
                self.name
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(format!("{}: a password needs a username", key("password")));
        }
        if let Some(ca) = &self.ca
            && !ca.is_file()
        {
            return Err(format!("{}: no such file: {}", key("ca"), ca.display()));
        }
        for (j, host) in self.token_realms.iter().flatten().enumerate() {
            check_host(&format!("{}[{j}]", key("token_realms")), host)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Evict least-recently-used cached content above this size; unset = unbounded.
    pub max_size: Option<ByteSize>,
    /// Eviction stops at this fraction of `max_size`.
    #[serde(default = "defaults::low_water")]
    pub low_water: f64,
    /// How often orphans and abandoned temp files are swept.
    #[serde(default = "defaults::sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A fill from upstream (blob, module zip) must be complete within this.
    #[serde(default = "defaults::fill_timeout", with = "humantime_serde")]
    pub fill_timeout: Duration,
    /// ... and bring at least this many bytes per second over every
    /// `fill_rate_window`; 0 turns the check off.
    #[serde(default = "defaults::fill_min_rate")]
    pub fill_min_rate: ByteSize,
    #[serde(default = "defaults::fill_rate_window", with = "humantime_serde")]
    pub fill_rate_window: Duration,
    /// Which hits re-hash what they serve: `small` (blobs read whole, up to
    /// 64 KiB) or `all` (streamed blobs too).
    #[serde(default)]
    pub verify_on_read: VerifyOnRead,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: None,
            low_water: defaults::low_water(),
            sweep_interval: defaults::sweep_interval(),
            fill_timeout: defaults::fill_timeout(),
            fill_min_rate: defaults::fill_min_rate(),
            fill_rate_window: defaults::fill_rate_window(),
            verify_on_read: VerifyOnRead::default(),
        }
    }
}

impl CacheConfig {
    fn validate(&self) -> Result<(), String> {
        if !(0.1..=1.0).contains(&self.low_water) {
            return Err("cache.low_water: must be between 0.1 and 1.0".into());
        }
        if self.fill_timeout.is_zero() {
            return Err("cache.fill_timeout: must be more than 0".into());
        }
        if self.fill_rate_window < Duration::from_secs(1) {
            return Err("cache.fill_rate_window: must be at least 1s".into());
        }
        Ok(())
    }

    /// What every fill runs under.
    pub fn fill_limits(&self) -> crate::store::FillLimits {
        let min_rate = (self.fill_min_rate.as_u64() > 0).then(|| crate::store::MinRate {
            bytes_per_second: self.fill_min_rate.as_u64(),
            window: self.fill_rate_window,
        });
        crate::store::FillLimits {
            max_size: self.max_size.map(|m| m.as_u64()),
            timeout: Some(self.fill_timeout),
            min_rate,
        }
    }
}

mod defaults {
    use super::*;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 5000))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("mirror-data")
    }
    pub fn authenticated() -> Policy {
        Policy::Authenticated
    }
    pub fn credential_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_size() -> ByteSize {
        ByteSize::kib(64)
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn authenticated_reserve() -> f64 {
        0.25
    }
    pub fn max_anonymous_per_peer() -> usize {
        64
    }
    pub fn first_request_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn reload_poll() -> Duration {
        Duration::from_secs(5)
    }
    pub fn body_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_upload_sessions_per_identity() -> u32 {
        128
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn go_upstream() -> String {
        "https://proxy.golang.org".to_owned()
    }
    pub fn go_list_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn go_negative_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn go_max_zip() -> ByteSize {
        ByteSize::mib(500)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn sum_golang_org() -> SumdbConfig {
        SumdbConfig {
            name: "sum.golang.org".to_owned(),
            url: "https://sum.golang.org".to_owned(),
            key: None,
        }
    }
    pub fn registry_upstream() -> Vec<UpstreamRegistry> {
        vec![UpstreamRegistry {
            name: "docker.io".to_owned(),
            url: "https://registry-1.docker.io".to_owned(),
            default: true,
            library_prefix: None,
            username: None,
            password: None,
            ca: None,
            tag_ttl: tag_ttl(),
            token_realms: None,
        }]
    }
    pub fn tag_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn low_water() -> f64 {
        0.9
    }
    pub fn audit_retention() -> Duration {
        Duration::from_secs(90 * 24 * 3600)
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(600)
    }
    /// ECR caps a layer at 52,000 MiB; real images' largest layers (CUDA, baked-in
    /// models) are 10–20 GB. README argues it.
    pub fn max_blob_size() -> ByteSize {
        ByteSize::gib(64)
    }
    pub fn fill_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn fill_min_rate() -> ByteSize {
        ByteSize::kib(64)
    }
    pub fn fill_rate_window() -> Duration {
        Duration::from_secs(30)
    }
}

impl Default for Config {
    fn default() -> Self {
        // An empty document takes every default; parsing it cannot fail.
        Config::parse("", Path::new("."), "<defaults>").unwrap_or_else(|_| unreachable!())
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it are taken
    /// relative to the file's own folder, so a config and its PKI can move together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, base, &file)
    }

    /// Parses TOML text; `base` resolves relative paths, `file` names the source in errors.
    pub fn parse(text: &str, base: &Path, file: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            file: file.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        config.resolve_paths(base);
        config.add_default_sumdb();
        config.validate().map_err(|message| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        for path in [
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.tls.client_ca,
            &mut self.tls.crl,
            &mut self.auth.htpasswd,
            &mut self.go.ca,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        for upstream in &mut self.registry.upstream {
            if let Some(ca) = &mut upstream.ca {
                resolve(ca);
            }
        }
    }

    /// Appended, so `go.sumdb[i]` in errors still counts the file's own entries.
    fn add_default_sumdb(&mut self) {
        let builtin = defaults::sum_golang_org();
        let go = &mut self.go;
        if go.default_sumdb && !go.sumdb.iter().any(|s| s.name == builtin.name) {
            go.sumdb.push(builtin);
        }
    }

    /// Checks what the types cannot, one section at a time: combinations,
    /// and that named files exist.
    fn validate(&self) -> Result<(), String> {
        self.validate_tls()?;
        self.validate_files()?;
        self.validate_policies()?;
        self.limits.validate()?;
        self.go.validate()?;
        self.registry.validate()?;
        self.index.validate()?;
        self.storage.validate(&self.index)?;
        if let Some(cluster) = &self.cluster {
            cluster.validate(&self.index, &self.storage)?;
        }
        self.cache.validate()
    }

    fn validate_tls(&self) -> Result<(), String> {
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(
                "tls.cert and tls.key: set both or neither (neither creates a PKI in data_dir)"
                    .into(),
            );
        }
        if tls.cert.is_some() && tls.client_auth != ClientAuth::Off && tls.client_ca.is_none() {
            return Err(format!(
                "tls.client_ca: required when tls.client_auth = {:?} (or set tls.client_auth = \"off\")",
                format!("{:?}", tls.client_auth).to_lowercase()
            ));
        }
        if tls.crl.is_some() && tls.client_ca.is_none() && tls.cert.is_some() {
            return Err("tls.crl: needs tls.client_ca (a CRL revokes client certificates)".into());
        }
        Ok(())
    }

    /// Every file a key names is there.
    fn validate_files(&self) -> Result<(), String> {
        let tls = &self.tls;
        let files = [
            ("tls.cert", &tls.cert),
            ("tls.key", &tls.key),
            ("tls.client_ca", &tls.client_ca),
            ("tls.crl", &tls.crl),
            ("auth.htpasswd", &self.auth.htpasswd),
            ("go.ca", &self.go.ca),
        ];
        for (key, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(format!("{key}: no such file: {}", path.display()));
            }
        }
        Ok(())
    }

    /// A `cert` policy needs a listener that asks for certificates.
    fn validate_policies(&self) -> Result<(), String> {
        let needs_cert = [
            ("auth.read", Some(self.auth.read)),
            ("auth.write", Some(self.auth.write)),
            ("go.read", self.go.read),
            ("registry.read", self.registry.read),
            ("registry.write", self.registry.write),
        ];
        for (key, policy) in needs_cert {
            if policy == Some(Policy::Cert) && self.tls.client_auth == ClientAuth::Off {
                return Err(format!(
                    "{key}: \"cert\" needs tls.client_auth = \"optional\" or \"required\""
                ));
            }
        }
        Ok(())
    }

    /// The read policy for Go routes.
    pub fn go_read(&self) -> Policy {
        self.go.read.unwrap_or(self.auth.read)
    }

    pub fn registry_read(&self) -> Policy {
        self.registry.read.unwrap_or(self.auth.read)
    }

    pub fn registry_write(&self) -> Policy {
        self.registry.write.unwrap_or(self.auth.write)
    }
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(format!("{key}: {url:?} is not an http(s) URL")),
    }
}

/// A bare host name or IP address: no scheme, port or path.
fn check_host(key: &str, host: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(&format!("https://{host}/")).ok();
    let bare = parsed.as_ref().is_some_and(|u| {
        u.port().is_none()
            && u.path() == "/"
            && u.username().is_empty()
            && u.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host))
    });
    if bare {
        Ok(())
    } else {
        Err(format!(
            "{key}: {host:?} is not a host name such as auth.docker.io"
        ))
    }
}

/// toml points at the offending span; turn that into the dotted key an
/// operator searches for (`tls.client_auth`) plus the line number.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_owned();
    let Some(span) = error.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let mut table = String::new();
    for line in before.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        }
    }
    let line_text = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let dotted = match (table.is_empty(), key) {
        (_, None) if !table.is_empty() => table,
        (true, Some(key)) => key,
        (false, Some(key)) => format!("{table}.{key}"),
        _ => return format!("line {line_no}: {message}"),
    };
    format!("line {line_no}: {dotted}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/mirror"), "mirror.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn hosted_namespaces_must_be_names_and_not_upstreams() {
        let config = parse("[registry]\nhosted = [\"internal\", \"team/apps\"]\n").unwrap();
        assert_eq!(config.registry.hosted, ["internal", "team/apps"]);
        let err = parse(
            "[registry]\nhosted = [\"ghcr.io\"]\n[[registry.upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n",
        )
        .unwrap_err();
        assert!(err.contains("registry.hosted[0]"), "{err}");
    }

    #[test]
    fn empty_config_takes_the_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:5000");
        assert_eq!(config.data_dir, Path::new("/etc/mirror/mirror-data"));
        assert_eq!(config.tls.client_auth, ClientAuth::Optional);
        assert_eq!(config.auth.read, Policy::Authenticated);
        assert_eq!(config.go.upstream, "https://proxy.golang.org");
        assert_eq!(config.limits.body_timeout, Duration::from_secs(60));
        assert_eq!(config.registry.max_upload_sessions_per_identity, 128);
        assert_eq!(config.cache.verify_on_read, VerifyOnRead::Small);
    }

    #[test]
    fn push_limits_must_leave_room_to_push() {
        let err = parse("[limits]\nbody_timeout = \"0s\"\n").unwrap_err();
        assert!(err.contains("limits.body_timeout"), "{err}");
        let err = parse("[registry]\nmax_upload_sessions_per_identity = 0\n").unwrap_err();
        assert!(
            err.contains("registry.max_upload_sessions_per_identity"),
            "{err}"
        );
        let config = parse("[registry]\nmax_upload_sessions_per_identity = 4\n").unwrap();
        assert_eq!(config.registry.max_upload_sessions_per_identity, 4);
    }

    #[test]
    fn connection_limits_reserve_a_share_for_authenticated_peers() {
        let limits = parse("").unwrap().limits;
        assert_eq!(limits.max_anonymous(), 3072);
        assert_eq!(limits.max_anonymous_per_peer, 64);
        let odd = parse("[limits]\nmax_connections = 10\nauthenticated_reserve = 0.25\n").unwrap();
        assert_eq!(odd.limits.max_anonymous(), 7, "the reserve rounds up");
        for bad in [
            "authenticated_reserve = 1.0",
            "authenticated_reserve = -0.1",
            "max_anonymous_per_peer = 0",
            "idle_timeout = \"0s\"",
        ] {
            let err = parse(&format!("[limits]\n{bad}\n")).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(err.contains(&format!("limits.{key}")), "{bad}: {err}");
        }
    }

    #[test]
    fn verify_on_read_takes_small_or_all() {
        let config = parse("[cache]\nverify_on_read = \"all\"\n").unwrap();
        assert_eq!(config.cache.verify_on_read, VerifyOnRead::All);
        let err = parse("[cache]\nverify_on_read = \"some\"\n").unwrap_err();
        assert!(err.contains("cache.verify_on_read"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse("[tls]\nclient_auht = \"optional\"\n").unwrap_err();
        assert!(err.contains("tls.client_auht"), "{err}");
        assert!(err.contains("mirror.toml"), "{err}");
        let err = parse("lisen = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        let err = parse("[tls]\nclient_auth = \"sometimes\"\n").unwrap_err();
        assert!(
            err.contains("tls.client_auth") && err.contains("sometimes"),
            "{err}"
        );
        let err = parse("listen = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = parse("[limits]\nheader_timeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("limits.header_timeout"), "{err}");
        let err = parse("[auth]\nread = \"everyone\"\n").unwrap_err();
        assert!(err.contains("auth.read"), "{err}");
    }

    #[test]
    fn missing_files_name_the_key_and_the_path() {
        let err = parse(
            "[tls]\ncert = \"pki/server.crt\"\nkey = \"pki/server.key\"\nclient_auth = \"off\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("tls.cert") && err.contains("/etc/mirror/pki/server.crt"),
            "{err}"
        );
        let err = parse("[go]\nca = \"corp-ca.pem\"\n").unwrap_err();
        assert!(
            err.contains("go.ca") && err.contains("/etc/mirror/corp-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_settings_are_rejected() {
        let err = parse("[tls]\ncert = \"/x\"\n").unwrap_err();
        assert!(err.contains("tls.cert and tls.key"), "{err}");
        let err = parse("[tls]\nclient_auth = \"off\"\n[auth]\nread = \"cert\"\n").unwrap_err();
        assert!(err.contains("auth.read"), "{err}");
        let err = parse("[[registry.upstream]]\nname = \"a\"\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(err.contains("registry.upstream[0].url"), "{err}");
    }

    #[test]
    fn go_settings_are_checked_and_name_the_key() {
        let err = parse("[go]\nlist_ttl = \"often\"\n").unwrap_err();
        assert!(err.contains("go.list_ttl"), "{err}");
        let config = parse(
            "[go]\nupstream = \"https://a.example|https://b.example,off\"\nprivate = [\"*.corp.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(config.go.private, vec!["*.corp.example.com".to_owned()]);
        assert!(parse("[go]\nupstream = \"off\"\n").is_ok());
        let err = parse(
            "[[go.sumdb]]\nname = \"s.example\"\nurl = \"https://a.example\"\n\
             [[go.sumdb]]\nname = \"s.example\"\nurl = \"https://b.example\"\n",
        )
        .unwrap_err();
        assert!(err.contains("go.sumdb[1].name"), "{err}");
    }

    #[test]
    fn fill_limits_take_their_defaults_and_are_checked() {
        let config = parse("").unwrap();
        assert_eq!(config.registry.max_blob_size, ByteSize::gib(64));
        let limits = config.cache.fill_limits();
        assert_eq!(limits.max_size, None);
        assert_eq!(limits.timeout, Some(Duration::from_secs(3600)));
        let rate = limits.min_rate.unwrap();
        assert_eq!(rate.bytes_per_second, 64 * 1024);
        assert_eq!(rate.per_window(), 30 * 64 * 1024);
        let config = parse("[cache]\nmax_size = \"1GiB\"\nfill_min_rate = \"0\"\n").unwrap();
        assert_eq!(config.cache.fill_limits().min_rate, None, "0 turns it off");
        assert_eq!(config.cache.fill_limits().max_size, Some(1 << 30));
        for (text, key) in [
            ("[cache]\nfill_timeout = \"0s\"\n", "cache.fill_timeout"),
            (
                "[cache]\nfill_rate_window = \"10ms\"\n",
                "cache.fill_rate_window",
            ),
            (
                "[registry]\nmax_blob_size = \"0\"\n",
                "registry.max_blob_size",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn token_realms_are_hosts_and_default_to_auth_docker_io_for_docker_hub() {
        let upstream = |url: &str, extra: &str| {
            parse(&format!(
                "[[registry.upstream]]\nname = \"u\"\nurl = \"{url}\"\n{extra}"
            ))
            .map(|c| c.registry.upstream[0].token_realms())
        };
        assert_eq!(
            upstream("https://registry-1.docker.io", "").unwrap(),
            ["auth.docker.io"]
        );
        assert!(upstream("https://ghcr.io", "").unwrap().is_empty());
        assert!(
            upstream("https://registry-1.docker.io", "token_realms = []\n")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            upstream("https://r.example", "token_realms = [\"auth.example\"]\n").unwrap(),
            ["auth.example"]
        );
        for bad in [
            "https://auth.example",
            "auth.example:443",
            "auth.example/token",
            "",
        ] {
            let err =
                upstream("https://r.example", &format!("token_realms = [{bad:?}]\n")).unwrap_err();
            assert!(
                err.contains("registry.upstream[0].token_realms[0]"),
                "{err}"
            );
        }
    }

    #[test]
    fn no_registry_upstream_means_docker_hub_and_an_empty_list_means_none() {
        let config = parse("").unwrap();
        let names: Vec<(&str, &str, bool)> = config
            .registry
            .upstream
            .iter()
            .map(|u| (u.name.as_str(), u.url.as_str(), u.default))
            .collect();
        assert_eq!(names, [("docker.io", "https://registry-1.docker.io", true)]);
        let hosted_only = parse("[registry]\nupstream = []\n").unwrap();
        assert!(hosted_only.registry.upstream.is_empty());
        let own = parse("[[registry.upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n")
            .unwrap();
        assert_eq!(
            own.registry.upstream.len(),
            1,
            "a listed upstream replaces the default"
        );
    }

    #[test]
    fn verifying_needs_a_database_with_its_key() {
        let config = parse("").unwrap();
        let first = config.go.verifying_sumdb().unwrap();
        assert_eq!(first.verifier_key(), Some(SUM_GOLANG_ORG_KEY));
        let err = parse("[go]\ndefault_sumdb = false\n").unwrap_err();
        assert!(err.contains("go.verify"), "{err}");
        let corp =
            "[[go.sumdb]]\nname = \"sum.corp.example\"\nurl = \"https://sum.corp.example\"\n";
        let err = parse(corp).unwrap_err();
        assert!(err.contains("go.sumdb[0].key"), "{err}");
        let keyed = format!("{corp}key = \"sum.corp.example+01234567+AAAA\"\n");
        let config = parse(&keyed).unwrap();
        assert_eq!(
            config.go.verifying_sumdb().unwrap().name,
            "sum.corp.example"
        );
        let err = parse(&format!("{corp}key = \"other.example+01234567+AAAA\"\n")).unwrap_err();
        assert!(err.contains("names another database"), "{err}");
        let off = parse(&format!("[go]\nverify = \"off\"\n{corp}")).unwrap();
        assert!(off.go.verifying_sumdb().is_none());
    }

    #[test]
    fn a_sumdb_entry_adds_to_sum_golang_org() {
        let names = |config: &Config| -> Vec<String> {
            config.go.sumdb.iter().map(|s| s.name.clone()).collect()
        };
        let config = parse(
            "[[go.sumdb]]\nname = \"sum.corp.example\"\nurl = \"https://sum.corp.example\"\n\
             key = \"sum.corp.example+01234567+AAAA\"\n",
        )
        .unwrap();
        assert_eq!(names(&config), ["sum.corp.example", "sum.golang.org"]);
        let config = parse(
            "[go]\ndefault_sumdb = false\nverify = \"off\"\n[[go.sumdb]]\nname = \"sum.corp.example\"\nurl = \"https://sum.corp.example\"\n",
        )
        .unwrap();
        assert_eq!(names(&config), ["sum.corp.example"]);
        let config = parse("[go]\ndefault_sumdb = false\nverify = \"off\"\n").unwrap();
        assert!(config.go.sumdb.is_empty());
        let config = parse(
            "[[go.sumdb]]\nname = \"sum.golang.org\"\nurl = \"https://sumdb.corp.example\"\n",
        )
        .unwrap();
        assert_eq!(
            config.go.sumdb,
            [SumdbConfig {
                name: "sum.golang.org".into(),
                url: "https://sumdb.corp.example".into(),
                key: None,
            }],
            "an entry of that name replaces the built-in one"
        );
    }

    #[test]
    fn library_is_added_for_docker_hub_unless_said_otherwise() {
        let upstreams = |text: &str| -> Vec<bool> {
            parse(text)
                .unwrap()
                .registry
                .upstream
                .iter()
                .map(UpstreamRegistry::adds_library)
                .collect()
        };
        assert_eq!(upstreams(""), [true]);
        let both = "[[registry.upstream]]\nname = \"hub\"\nurl = \"https://index.docker.io/\"\n\
                    [[registry.upstream]]\nname = \"corp\"\nurl = \"https://registry.corp.example\"\n";
        assert_eq!(upstreams(both), [true, false]);
        let flipped = "[[registry.upstream]]\nname = \"hub\"\nurl = \"https://registry-1.docker.io\"\nlibrary_prefix = false\n\
                       [[registry.upstream]]\nname = \"corp\"\nurl = \"https://registry.corp.example\"\nlibrary_prefix = true\n";
        assert_eq!(upstreams(flipped), [false, true]);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config = parse(
            "[[registry.upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n\
             username = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
