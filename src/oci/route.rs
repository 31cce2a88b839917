//! Parses `/v2/…` request paths and queries into typed routes. Owns the
//! distribution spec's grammar for repository names and references; knows
//! nothing of upstreams or storage.

use std::fmt;
use std::str::FromStr;

use http::Method;
use percent_encoding::percent_decode_str;

use super::error::{Code, OciError};
use crate::store::{Digest, TagKey, UploadId};

/// The distribution spec's limit; registries refuse longer names.
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

/// A repository name (`library/alpine`, `ghcr.io/org/app`), valid by construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component and the rest, if there is more than one.
    pub fn split_first(&self) -> Option<(&str, RepoName)> {
        let (first, rest) = self.0.split_once('/')?;
        Some((first, RepoName(rest.to_owned())))
    }

    pub fn is_single_component(&self) -> bool {
        !self.0.contains('/')
    }

    /// `library/<name>`, Docker Hub's home of official images.
    pub fn in_library(&self) -> RepoName {
        RepoName(format!("library/{}", self.0))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by one
/// separator (`.`, `_`, `__`, or any number of `-`).
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for RepoName {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME || !s.split('/').all(valid_component) {
            let shown: String = s.chars().take(300).collect();
            return Err(OciError::new(
                Code::NameInvalid,
                format!("invalid repository name {shown:?}"),
            ));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag as the store keys it.
    pub fn key(&self) -> TagKey<'_> {
        TagKey::new(&self.0)
    }
}

impl FromStr for Tag {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !first_ok || !rest_ok || s.len() > MAX_TAG {
            let shown: String = s.chars().take(200).collect();
            return Err(
                OciError::new(Code::ManifestInvalid, format!("invalid tag {shown:?}"))
                    .with_status(http::StatusCode::BAD_REQUEST),
            );
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            return parse_digest(s).map(Reference::Digest);
        }
        s.parse().map(Reference::Tag)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

pub fn parse_digest(s: &str) -> Result<Digest, OciError> {
    s.parse::<Digest>()
        .map_err(|e| OciError::new(Code::DigestInvalid, e.to_string()))
}

/// A `/v2/…` endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    /// `…/blobs/uploads/` (start) or `…/blobs/uploads/<id>` (continue).
    Upload(RepoName, Option<UploadId>),
    Referrers(RepoName, Digest),
}

/// A manifest reference that is neither a tag nor a digest names no manifest:
/// a read gets the spec's one failure code for it, 404 `MANIFEST_UNKNOWN`
/// (the conformance suite GETs `.INVALID_MANIFEST_NAME`); a push or a delete
/// is told what is wrong with it (400 `MANIFEST_INVALID` or `DIGEST_INVALID`).
fn manifest_reference(name: &RepoName, text: &str, method: &Method) -> Result<Reference, OciError> {
    text.parse().map_err(|invalid: OciError| match *method {
        Method::GET | Method::HEAD => OciError::new(
            Code::ManifestUnknown,
            format!("manifest unknown in {name}: {}", invalid.message),
        ),
        _ => invalid,
    })
}

impl Route {
    /// Parses a request path (still percent-encoded, as on the wire) of a
    /// request with `method`, which decides how a bad reference is refused.
    pub fn parse(raw_path: &str, method: &Method) -> Result<Route, OciError> {
        // Almost no path has an escape; finding none is a memchr, decoding is
        // a byte-by-byte walk.
        let decoded = if raw_path.contains('%') {
            percent_decode_str(raw_path).decode_utf8_lossy()
        } else {
            std::borrow::Cow::Borrowed(raw_path)
        };
        let path = decoded.as_ref();
        let unknown = || {
            OciError::new(Code::NameUnknown, "no such endpoint")
                .with_status(http::StatusCode::NOT_FOUND)
        };
        let rest = match path.strip_prefix("/v2") {
            Some("" | "/") => return Ok(Route::Base),
            Some(rest) => rest.strip_prefix('/').ok_or_else(unknown)?,
            None => return Err(unknown()),
        };
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(Route::Tags(name.parse()?));
        }
        let (head, last) = rest.rsplit_once('/').ok_or_else(unknown)?;
        if let Some(name) = head.strip_suffix("/blobs/uploads") {
            let id = match last {
                "" => None,
                id => Some(
                    UploadId::parse(id)
                        .ok_or_else(|| OciError::new(Code::BlobUploadUnknown, "unknown upload"))?,
                ),
            };
            return Ok(Route::Upload(name.parse()?, id));
        }
        let (name, kind) = head.rsplit_once('/').ok_or_else(unknown)?;
        match kind {
            "manifests" => {
                let name = name.parse()?;
                let reference = manifest_reference(&name, last, method)?;
                Ok(Route::Manifest(name, reference))
            }
            "blobs" => Ok(Route::Blob(name.parse()?, parse_digest(last)?)),
            "referrers" => Ok(Route::Referrers(name.parse()?, parse_digest(last)?)),
            _ => Err(unknown()),
        }
    }
}

/// A request's query parameters, decoded (`+` is a space, as in forms).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `n`: a page size; absent or unparsable means "no limit asked".
    pub fn page_size(&self) -> Result<Option<usize>, OciError> {
        match self.get("n") {
            None | Some("") => Ok(None),
            Some(n) => n.parse().map(Some).map_err(|_| {
                OciError::new(Code::Unsupported, format!("invalid page size n={n:?}"))
                    .with_status(http::StatusCode::BAD_REQUEST)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Method = Method::GET;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_follow_the_distribution_grammar() {
        for good in [
            "a",
            "library/alpine",
            "ghcr.io/org/app",
            "a__b",
            "a---b",
            "a.b_c/d-e",
            "0/1/2/3/4/5",
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a___b",
            "a._b",
            "-a",
            "a-",
            "a..b",
            "a:b",
            "a/../b",
            &"a".repeat(256),
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_parse_from_the_right_whatever_the_name_depth() {
        assert_eq!(Route::parse("/v2/", &GET).unwrap(), Route::Base);
        assert_eq!(Route::parse("/v2/_catalog", &GET).unwrap(), Route::Catalog);
        let name = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(
            Route::parse("/v2/a/manifests/b/manifests/latest", &GET).unwrap(),
            Route::Manifest(
                name("a/manifests/b"),
                Reference::Tag("latest".parse().unwrap())
            )
        );
        assert_eq!(
            Route::parse(&format!("/v2/x/y/blobs/{}", D.replace(':', "%3A")), &GET).unwrap(),
            Route::Blob(name("x/y"), D.parse().unwrap())
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/uploads/", &GET).unwrap(),
            Route::Upload(name("x"), None)
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/uploads/0123456789abcdef0123456789abcdef", &GET).unwrap(),
            Route::Upload(
                name("x"),
                UploadId::parse("0123456789abcdef0123456789abcdef")
            )
        );
        assert_eq!(
            Route::parse("/v2/x/tags/list", &GET).unwrap(),
            Route::Tags(name("x"))
        );
        assert_eq!(
            Route::parse(&format!("/v2/x/referrers/{D}"), &GET).unwrap(),
            Route::Referrers(name("x"), D.parse().unwrap())
        );
    }

    #[test]
    fn bad_paths_give_the_spec_error_codes() {
        assert_eq!(
            Route::parse("/v2/UPPER/manifests/x", &GET)
                .unwrap_err()
                .code,
            Code::NameInvalid
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/sha256:zz", &GET)
                .unwrap_err()
                .code,
            Code::DigestInvalid
        );
        for bad in ["/v2/x/manifests/sha256:1234", "/v2/x/manifests/-bad"] {
            let read = Route::parse(bad, &GET).unwrap_err();
            assert_eq!(
                (read.code, read.status.as_u16()),
                (Code::ManifestUnknown, 404)
            );
            let push = Route::parse(bad, &Method::PUT).unwrap_err();
            assert_eq!(push.status, http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            Route::parse("/v2/x/manifests/sha256:1234", &Method::PUT)
                .unwrap_err()
                .code,
            Code::DigestInvalid
        );
        assert_eq!(
            Route::parse("/v2/x/unknown/y", &GET).unwrap_err().code,
            Code::NameUnknown
        );
    }

    #[test]
    fn queries_decode() {
        let q = Query::parse(Some("n=10&last=a%2Fb&artifactType=application%2Fx+y"));
        assert_eq!(q.page_size().unwrap(), Some(10));
        assert_eq!(q.get("last"), Some("a/b"));
        assert_eq!(q.get("artifactType"), Some("application/x y"));
    }
}
