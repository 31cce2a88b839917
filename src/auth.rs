//! Who is asking (`Identity`, from a verified `PeerCert` or a password) and
//! whether they may (`Policy`). Owns the htpasswd file and the cache of verified
//! passwords; knows nothing of HTTP routes or connections.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::escape::Escaped;
use crate::sync::Unpoisoned;

/// The client behind a request, decided once per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A client certificate that verified against the client CA (and the CRL).
    Cert {
        cn: String,
        serial: String,
    },
    /// HTTP Basic credentials that matched the htpasswd file.
    User(String),
    Anonymous,
}

/// A verified client certificate's CN and serial, as the listener hands them
/// to the dispatcher: what `Identity::Cert` is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub cn: String,
    pub serial: String,
}

impl PeerCert {
    pub fn identity(&self) -> Identity {
        Identity::Cert {
            cn: self.cn.clone(),
            serial: self.serial.clone(),
        }
    }
}

impl Identity {
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Identity::Anonymous)
    }

    /// The name an audit record or a log line gives this client, as sent:
    /// whoever writes it escapes it (`crate::escape`).
    pub fn name(&self) -> &str {
        match self {
            Identity::Cert { cn, .. } => cn,
            Identity::User(user) => user,
            Identity::Anonymous => "-",
        }
    }
}

/// Escaped (see `crate::escape`): a CN or user name may hold a newline or a
/// terminal escape, and this is what log lines print.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cert { cn, serial } => write!(f, "cert:{}/{serial}", Escaped(cn)),
            Identity::User(user) => write!(f, "user:{}", Escaped(user)),
            Identity::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Who may do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Anonymous,
    /// A client certificate or a password.
    Authenticated,
    /// A client certificate and nothing else.
    Cert,
}

/// Why a request is refused: decides between 401 (ask for credentials) and 403.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No credentials, or wrong ones: a challenge may fix it.
    Unauthenticated,
    /// Authenticated, but a client certificate is required.
    CertificateRequired,
}

impl Policy {
    pub fn check(self, identity: &Identity) -> Result<(), Denial> {
        match (self, identity) {
            (Policy::Anonymous, _) => Ok(()),
            (_, Identity::Cert { .. }) => Ok(()),
            (Policy::Authenticated, Identity::User(_)) => Ok(()),
            (Policy::Cert, Identity::User(_)) => Err(Denial::CertificateRequired),
            (_, Identity::Anonymous) => Err(Denial::Unauthenticated),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a `#[source]`: the message already says it all, once.
    #[error("auth.htpasswd {}: {exposed}", exposed.path.display())]
    Exposed { exposed: crate::file_mode::Exposed },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// `user:bcrypt-hash` lines, as `htpasswd -B` writes them.
#[derive(Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// bcrypt cost of the file's entries, so an unknown user can be made to cost
    /// as much as a known one and response times do not reveal who exists.
    cost: u32,
}

impl Htpasswd {
    /// Reads the file, refusing it if other users could change it (and so
    /// add themselves); hashes are not secret, reading it is fine.
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        crate::file_mode::check(path, crate::file_mode::Holds::TrustAnchor)
            .map_err(|exposed| HtpasswdError::Exposed { exposed })?;
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Io {
            path: path.to_owned(),
            source,
        })?;
        Htpasswd::parse(&text).map_err(|(line, reason)| HtpasswdError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    fn parse(text: &str) -> Result<Htpasswd, (usize, String)> {
        let mut users = HashMap::new();
        let mut cost = bcrypt::DEFAULT_COST;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| (index + 1, "expected user:hash".to_owned()))?;
            // Only bcrypt: MD5-crypt and SHA1 entries are too cheap to brute-force.
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err((
                    index + 1,
                    format!("user {user:?}: only bcrypt entries are accepted (htpasswd -B)"),
                ));
            }
            cost = hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(cost);
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users, cost })
    }
}

/// How long a wrong password is remembered as wrong: clients retry, and each
/// retry would otherwise cost a full bcrypt.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
const CACHE_LIMIT: usize = 10_000;

struct Cached {
    user: Option<String>,
    expires: Instant,
}

/// Verifies Basic credentials against the htpasswd file. bcrypt takes tens of
/// milliseconds on purpose; verified pairs are cached by a salted hash (never
/// the password itself) so a pull of 100 layers pays it once.
pub struct Authenticator {
    htpasswd: RwLock<Arc<Htpasswd>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    ttl: Duration,
    salt: [u8; 16],
    /// bcrypt runs on blocking threads; this bounds how many at once so a flood
    /// of wrong passwords cannot take every thread.
    bcrypt_slots: Semaphore,
}

impl Authenticator {
    pub fn new(htpasswd: Htpasswd, ttl: Duration) -> Authenticator {
        let mut salt = [0u8; 16];
        let seed = format!("{:?}{}", Instant::now(), std::process::id());
        salt.copy_from_slice(&Sha256::digest(seed.as_bytes())[..16]);
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            htpasswd: RwLock::new(Arc::new(htpasswd)),
            cache: Mutex::new(HashMap::new()),
            ttl,
            salt,
            bcrypt_slots: Semaphore::new(slots),
        }
    }

    /// Swaps in a reloaded htpasswd file and forgets every cached verdict.
    pub fn replace(&self, htpasswd: Htpasswd) {
        *self.htpasswd.write().unpoisoned() = Arc::new(htpasswd);
        self.cache.lock().unpoisoned().clear();
    }

    /// The user named by a valid `Authorization: Basic …` header, or `None`
    /// when the header is malformed or the credentials are wrong.
    pub async fn verify_basic(&self, header: &str) -> Option<String> {
        // Decoded on the stack: a cached verdict costs no allocation but the
        // user name it returns.
        let mut decoded = [0u8; MAX_CREDENTIALS];
        let (user, password) = parse_basic(header, &mut decoded)?;
        let key = self.cache_key(user, password);
        if let Some(verdict) = self.cached(&key) {
            return verdict;
        }
        let (user, password) = (user.to_owned(), password.to_owned());
        let file = self.htpasswd.read().unpoisoned().clone();
        let (hash, cost) = (file.users.get(&user).cloned(), file.cost);
        let permit = self.bcrypt_slots.acquire().await.ok()?;
        let matches = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => bcrypt::verify(password, &hash).unwrap_or(false),
            None => {
                let _same_cost_as_a_real_check = bcrypt::hash(password, cost);
                false
            }
        })
        .await
        .unwrap_or(false);
        drop(permit);
        let verdict = matches.then_some(user);
        let ttl = if verdict.is_some() {
            self.ttl
        } else {
            NEGATIVE_TTL
        };
        self.remember(&file, key, verdict.clone(), ttl);
        verdict
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Option<String>> {
        let cache = self.cache.lock().unpoisoned();
        cache
            .get(key)
            .filter(|entry| entry.expires > Instant::now())
            .map(|entry| entry.user.clone())
    }

    /// Caches a verdict reached against `file`, unless a reload replaced the
    /// file meanwhile (checked under the cache lock, which `replace` takes to
    /// clear the cache after swapping the file): a removed user or an old
    /// password must not outlive the reload.
    fn remember(&self, file: &Arc<Htpasswd>, key: [u8; 32], user: Option<String>, ttl: Duration) {
        let mut cache = self.cache.lock().unpoisoned();
        let current = self.htpasswd.read().unpoisoned();
        if !Arc::ptr_eq(&current, file) {
            return;
        }
        drop(current);
        if cache.len() >= CACHE_LIMIT {
            let now = Instant::now();
            cache.retain(|_, entry| entry.expires > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                user,
                expires: Instant::now() + ttl,
            },
        );
    }
}

/// Longest `user:password` accepted (decoded); longer headers are refused.
const MAX_CREDENTIALS: usize = 512;

/// `user` and `password` of a Basic header, decoded into `buf`.
fn parse_basic<'b>(header: &str, buf: &'b mut [u8]) -> Option<(&'b str, &'b str)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(encoded.trim(), buf)
        .ok()?;
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn authenticator() -> Authenticator {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let htpasswd = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        Authenticator::new(htpasswd, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn right_password_verifies_and_wrong_one_does_not() {
        let auth = authenticator();
        assert_eq!(
            auth.verify_basic(&header("alice", "s3cret"))
                .await
                .as_deref(),
            Some("alice")
        );
        assert_eq!(auth.verify_basic(&header("alice", "nope")).await, None);
        assert_eq!(auth.verify_basic(&header("mallory", "s3cret")).await, None);
        assert_eq!(auth.verify_basic("Bearer abc").await, None);
        let overlong = "x".repeat(MAX_CREDENTIALS);
        assert_eq!(auth.verify_basic(&header("alice", &overlong)).await, None);
        assert_eq!(auth.verify_basic("Basic !!!").await, None);
    }

    #[tokio::test]
    async fn verified_credentials_are_cached_until_the_file_is_replaced() {
        let auth = authenticator();
        assert!(
            auth.verify_basic(&header("alice", "s3cret"))
                .await
                .is_some()
        );
        let key = auth.cache_key("alice", "s3cret");
        assert!(matches!(auth.cached(&key), Some(Some(_))));
        auth.replace(Htpasswd::default());
        assert!(auth.cached(&key).is_none());
        assert_eq!(auth.verify_basic(&header("alice", "s3cret")).await, None);
    }

    #[tokio::test]
    async fn a_verdict_reached_against_the_old_file_is_not_cached_after_a_reload() {
        let auth = authenticator();
        let old = auth.htpasswd.read().unpoisoned().clone();
        // The reload lands while bcrypt was running against `old`.
        auth.replace(Htpasswd::default());
        let key = auth.cache_key("alice", "s3cret");
        auth.remember(&old, key, Some("alice".into()), Duration::from_secs(60));
        assert!(auth.cached(&key).is_none());
    }

    #[test]
    fn non_bcrypt_entries_are_refused_with_the_line_number() {
        let err = Htpasswd::parse("bob:$apr1$abc$def\n").err().unwrap();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("bcrypt"));
    }

    #[test]
    fn identities_display_escaped_so_a_name_cannot_break_a_log_line() {
        let cert = Identity::Cert {
            cn: "evil\n2026-01-01 INFO forged\x1b[31m".into(),
            serial: "ab".into(),
        };
        assert_eq!(
            cert.to_string(),
            "cert:evil\\n2026-01-01 INFO forged\\u{1b}[31m/ab"
        );
        let user = Identity::User("odd\ruser".into());
        assert_eq!(user.to_string(), "user:odd\\ruser");
    }

    #[test]
    fn an_htpasswd_file_others_can_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = Htpasswd::load(&path).err().unwrap().to_string();
        assert!(error.starts_with("auth.htpasswd "), "{error}");
        assert!(
            error.ends_with(&format!("run chmod go-w {}", path.display())),
            "{error}"
        );
    }

    #[test]
    fn policies_admit_the_right_identities() {
        let cert = Identity::Cert {
            cn: "a".into(),
            serial: "1".into(),
        };
        let user = Identity::User("b".into());
        assert!(Policy::Anonymous.check(&Identity::Anonymous).is_ok());
        assert_eq!(
            Policy::Authenticated.check(&Identity::Anonymous),
            Err(Denial::Unauthenticated)
        );
        assert!(Policy::Authenticated.check(&user).is_ok());
        assert_eq!(Policy::Cert.check(&user), Err(Denial::CertificateRequired));
        assert!(Policy::Cert.check(&cert).is_ok());
    }
}
