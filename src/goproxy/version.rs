//! Versions by Go's rules: semantic versions as golang.org/x/mod/semver parses
//! them, canonical module versions (`v1.2.3`, `v1.2.3-pre`, `v2.0.0+incompatible`,
//! pseudo-versions), and the free-form queries `.info` also accepts
//! (`master`, `v1.2`). Pure parsing: no I/O.

use std::fmt;
use std::str::FromStr;

use super::module::{Kind, ModulePath, check_elem, unescape};
use crate::store::VersionKey;

/// Longest version or query accepted (pseudo-versions are about 40 bytes).
pub const MAX_VERSION_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {version:?}: {reason}")]
pub struct InvalidVersion {
    pub version: String,
    pub reason: String,
}

fn invalid(version: &str, reason: impl Into<String>) -> InvalidVersion {
    let shown: String = version.chars().take(80).collect();
    InvalidVersion {
        version: shown,
        reason: reason.into(),
    }
}

/// A semantic version split into parts, as Go's `semver.parse` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Semver<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    /// `-pre.1`, with the dash; empty for none.
    prerelease: &'a str,
    /// `+build`, with the plus; empty for none.
    build: &'a str,
    /// `v1` or `v1.2` rather than the full `v1.2.3`.
    short: bool,
}

fn parse_int(v: &str) -> Option<(&str, &str)> {
    let end = v
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    let (num, rest) = v.split_at(end);
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    Some((num, rest))
}

fn is_bad_num(ident: &str) -> bool {
    ident.len() > 1 && ident.starts_with('0') && ident.bytes().all(|b| b.is_ascii_digit())
}

/// Dot-separated identifiers of `[0-9A-Za-z-]`, none empty; prerelease
/// numbers may not have leading zeros.
fn parse_idents(v: &str, numbers_strict: bool) -> Option<(&str, &str)> {
    let end = v[1..].find('+').map_or(v.len(), |i| i + 1);
    let (part, rest) = v.split_at(end);
    if part.len() < 2 {
        return None;
    }
    for ident in part[1..].split('.') {
        if ident.is_empty()
            || !ident
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || (numbers_strict && is_bad_num(ident))
        {
            return None;
        }
    }
    Some((part, rest))
}

fn parse_semver(v: &str) -> Option<Semver<'_>> {
    let rest = v.strip_prefix('v')?;
    let (major, rest) = parse_int(rest)?;
    let mut parsed = Semver {
        major,
        minor: "0",
        patch: "0",
        prerelease: "",
        build: "",
        short: true,
    };
    if rest.is_empty() {
        return Some(parsed);
    }
    let (minor, rest) = parse_int(rest.strip_prefix('.')?)?;
    parsed.minor = minor;
    if rest.is_empty() {
        return Some(parsed);
    }
    let (patch, mut rest) = parse_int(rest.strip_prefix('.')?)?;
    parsed.patch = patch;
    parsed.short = false;
    if rest.starts_with('-') {
        (parsed.prerelease, rest) = parse_idents(rest, true)?;
    }
    if rest.starts_with('+') {
        if rest.len() > 1 && rest[1..].contains('+') {
            return None;
        }
        (parsed.build, rest) = parse_idents(rest, false)?;
    }
    rest.is_empty().then_some(parsed)
}

/// A canonical module version: full semver, no build suffix other than
/// `+incompatible`. What `.mod` and `.zip` are served for, immutably.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(String);

impl FromStr for Version {
    type Err = InvalidVersion;

    fn from_str(v: &str) -> Result<Version, InvalidVersion> {
        if v.len() > MAX_VERSION_LEN {
            return Err(invalid(v, format!("longer than {MAX_VERSION_LEN} bytes")));
        }
        let parsed = parse_semver(v).ok_or_else(|| invalid(v, "not a semantic version"))?;
        if parsed.short || !(parsed.build.is_empty() || parsed.build == "+incompatible") {
            return Err(invalid(v, "not a canonical version"));
        }
        Ok(Version(v.to_owned()))
    }
}

impl Version {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version as the store keys it.
    pub fn key(&self) -> VersionKey<'_> {
        VersionKey::new(&self.0)
    }

    fn major(&self) -> &str {
        // Parsed in `from_str`; the major is the digits after `v`.
        let digits = self.0[1..].split('.').next().unwrap_or("");
        &self.0[..=digits.len()]
    }

    fn incompatible(&self) -> bool {
        self.0.ends_with("+incompatible")
    }

    /// Go's `CheckPathMajor`: may `module` have this version at all?
    /// (`example.com/m/v2` only has v2.x.y; `example.com/m` has v0, v1 and `+incompatible`.)
    pub fn fits(&self, module: &ModulePath) -> bool {
        let mut suffix = module.major_suffix();
        if suffix.starts_with(".v") {
            suffix = suffix.strip_suffix("-unstable").unwrap_or(suffix);
        }
        if self.0.starts_with("v0.0.0-") && suffix == ".v1" {
            return true;
        }
        let major = self.major();
        if suffix.is_empty() {
            return major == "v0" || major == "v1" || self.incompatible();
        }
        &suffix[1..] == major
    }

    /// The `!`-encoded form, for upstream URLs (`v1.0.0-!r!c.1`).
    pub fn escaped(&self) -> String {
        super::module::escape(&self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What may stand before `.info`: a canonical version or a query such as a
/// branch name or `v1.2`, whose answer changes over time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query(String);

impl Query {
    /// Parses the `!`-encoded element of a URL, as Go's `UnescapeVersion`.
    pub fn from_escaped(escaped: &str) -> Result<Query, InvalidVersion> {
        if escaped.len() > MAX_VERSION_LEN {
            return Err(invalid(
                escaped,
                format!("longer than {MAX_VERSION_LEN} bytes"),
            ));
        }
        let plain = unescape(escaped).ok_or_else(|| invalid(escaped, "bad case encoding"))?;
        check_elem(&plain, Kind::File).map_err(|reason| invalid(&plain, reason.to_string()))?;
        Ok(Query(plain))
    }

    /// The canonical version this query names exactly, if it is one that the module may have.
    pub fn canonical_for(&self, module: &ModulePath) -> Option<Version> {
        self.0.parse::<Version>().ok().filter(|v| v.fits(module))
    }

    pub fn escaped(&self) -> String {
        super::module::escape(&self.0)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_follows_go() {
        for good in [
            "v1",
            "v1.2",
            "v1.2.3",
            "v0.0.0-20230101000000-abcdefabcdef",
            "v1.2.3-pre.1+meta.01",
            "v10.20.30",
        ] {
            assert!(parse_semver(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "1.2.3",
            "v",
            "v01.2.3",
            "v1.02.3",
            "v1.2.03",
            "v1.2.3-",
            "v1.2.3-01",
            "v1.2.3-a..b",
            "v1.2.3+",
            "v1.2.3+a+b",
            "v1-pre",
            "v1.2.3.4",
            "v1.2.3-é",
            "V1.2.3",
        ] {
            assert!(parse_semver(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_versions_include_pseudo_and_incompatible() {
        for good in [
            "v1.2.3",
            "v0.3.0-RC.1",
            "v2.0.0+incompatible",
            "v0.0.0-20230101000000-abcdefabcdef",
            "v1.2.4-0.20230101000000-abcdefabcdef",
        ] {
            assert!(good.parse::<Version>().is_ok(), "{good}");
        }
        for bad in [
            "v1",
            "v1.2",
            "v1.2.3+build",
            "master",
            "v1.2.3+incompatible+x",
            "latest",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_must_fit_the_path_major() {
        let plain: ModulePath = "example.com/m".parse().unwrap();
        let v2: ModulePath = "example.com/m/v2".parse().unwrap();
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("v1.0.0").fits(&plain));
        assert!(v("v0.1.0").fits(&plain));
        assert!(!v("v2.0.0").fits(&plain));
        assert!(v("v2.0.0+incompatible").fits(&plain));
        assert!(v("v2.1.0").fits(&v2));
        assert!(!v("v1.0.0").fits(&v2));
        let gopkg: ModulePath = "gopkg.in/yaml.v2".parse().unwrap();
        assert!(v("v2.4.0").fits(&gopkg));
    }

    #[test]
    fn queries_unescape_and_refuse_traversal() {
        assert_eq!(
            Query::from_escaped("v0.3.0-!r!c.1").unwrap().0,
            "v0.3.0-RC.1"
        );
        assert_eq!(Query::from_escaped("master").unwrap().0, "master");
        for bad in [
            "..", ".", "a/b", "a\0b", "Master", "a!", "", "a*b", "a:b", "a\\b",
        ] {
            assert!(Query::from_escaped(bad).is_err(), "{bad:?}");
        }
        assert!(Query::from_escaped(&"v".repeat(200)).is_err());
    }
}
