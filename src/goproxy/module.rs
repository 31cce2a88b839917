//! Module paths by Go's rules (golang.org/x/mod/module `CheckPath`) and the
//! `!`-case encoding of the GOPROXY protocol, both ways. Pure parsing: no I/O.

use std::fmt;
use std::str::FromStr;

use crate::store::ModuleKey;

/// Longest module path accepted. Go sets no limit; real paths are far shorter,
/// and a bound keeps keys, logs and upstream URLs sane.
pub const MAX_PATH_LEN: usize = 512;

/// A valid module path, unescaped (`example.com/Upper/Mod`). Built only by
/// `FromStr` (from the plain form) or `from_escaped` (from a URL).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModulePath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid module path {path:?}: {reason}")]
pub struct InvalidPath {
    pub path: String,
    pub reason: String,
}

fn invalid(path: &str, reason: impl Into<String>) -> InvalidPath {
    let mut shown: String = path.chars().take(80).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    InvalidPath {
        path: shown,
        reason: reason.into(),
    }
}

impl FromStr for ModulePath {
    type Err = InvalidPath;

    fn from_str(path: &str) -> Result<ModulePath, InvalidPath> {
        check_path(path).map_err(|reason| invalid(path, reason.to_string()))?;
        Ok(ModulePath(path.to_owned()))
    }
}

impl ModulePath {
    /// Parses the `!`-encoded form a client puts in a URL (`example.com/!upper/!mod`).
    pub fn from_escaped(escaped: &str) -> Result<ModulePath, InvalidPath> {
        let path = unescape(escaped).ok_or_else(|| invalid(escaped, "bad case encoding"))?;
        path.parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as the store keys it.
    pub fn key(&self) -> ModuleKey<'_> {
        ModuleKey::new(&self.0)
    }

    /// The `!`-encoded form, for upstream URLs.
    pub fn escaped(&self) -> String {
        escape(&self.0)
    }

    /// The `/vN` (or gopkg.in `.vN`) suffix, `""` for none.
    pub fn major_suffix(&self) -> &str {
        split_path_version(&self.0).map_or("", |(_, major)| major)
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Uppercase `X` becomes `!x`, so paths survive case-insensitive file systems.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of `escape`; `None` for an uppercase letter, a `!` not followed
/// by a lowercase letter, or anything non-ASCII (as Go's `unescapeString`).
pub fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if !c.is_ascii() {
            return None;
        }
        if bang {
            bang = false;
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
        } else if c == '!' {
            bang = true;
        } else if c.is_ascii_uppercase() {
            return None;
        } else {
            out.push(c);
        }
    }
    (!bang).then_some(out)
}

/// Which characters an element may hold: module paths are stricter than the
/// file names versions and zip entries may use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Module,
    File,
}

fn module_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fn file_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&()+,-.=@[]^_{}~ ".contains(c)
        || (!c.is_ascii() && c.is_alphabetic())
}

const BAD_WINDOWS_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Why a module path or one of its elements breaks Go's rules; the text is Go's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("empty path element")]
    EmptyElement,
    #[error("invalid path element {0:?}")]
    DotsOnly(String),
    #[error("leading dot in path element")]
    LeadingDot,
    #[error("trailing dot in path element")]
    TrailingDot,
    #[error("invalid char {0:?}")]
    InvalidChar(char),
    #[error("{0:?} disallowed as path element component on Windows")]
    WindowsName(String),
    #[error("trailing tilde and digits in path element")]
    TildeDigits,
    #[error("empty string")]
    Empty,
    #[error("longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("leading dash")]
    LeadingDash,
    #[error("double slash")]
    DoubleSlash,
    #[error("trailing slash")]
    TrailingSlash,
    #[error("leading slash")]
    LeadingSlash,
    #[error("missing dot in first path element")]
    NoDotInFirst,
    #[error("invalid char {0:?} in first path element")]
    InvalidCharInFirst(char),
    #[error("invalid version suffix")]
    VersionSuffix,
}

/// Go's `checkElem`: one path element.
pub(crate) fn check_elem(elem: &str, kind: Kind) -> Result<(), PathError> {
    if elem.is_empty() {
        return Err(PathError::EmptyElement);
    }
    if elem.bytes().all(|b| b == b'.') {
        return Err(PathError::DotsOnly(elem.to_owned()));
    }
    if kind == Kind::Module && elem.starts_with('.') {
        return Err(PathError::LeadingDot);
    }
    if elem.ends_with('.') {
        return Err(PathError::TrailingDot);
    }
    let ok = match kind {
        Kind::Module => module_char_ok,
        Kind::File => file_char_ok,
    };
    if let Some(c) = elem.chars().find(|&c| !ok(c)) {
        return Err(PathError::InvalidChar(c));
    }
    let short = elem.split('.').next().unwrap_or(elem);
    if BAD_WINDOWS_NAMES
        .iter()
        .any(|bad| bad.eq_ignore_ascii_case(short))
    {
        return Err(PathError::WindowsName(short.to_owned()));
    }
    if kind == Kind::Module
        && let Some(tilde) = short.rfind('~')
        && tilde < short.len() - 1
        && short[tilde + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PathError::TildeDigits);
    }
    Ok(())
}

/// Go's `checkPath` for module paths plus `CheckPath`'s extra rules.
fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.starts_with('-') {
        return Err(PathError::LeadingDash);
    }
    if path.contains("//") {
        return Err(PathError::DoubleSlash);
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    for elem in path.split('/') {
        check_elem(elem, Kind::Module)?;
    }
    let first = path.split('/').next().unwrap_or("");
    if first.is_empty() {
        return Err(PathError::LeadingSlash);
    }
    if !first.contains('.') {
        return Err(PathError::NoDotInFirst);
    }
    if let Some(c) = first
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(PathError::InvalidCharInFirst(c));
    }
    if split_path_version(path).is_none() {
        return Err(PathError::VersionSuffix);
    }
    Ok(())
}

/// Go's `SplitPathVersion`: `(prefix, major suffix)`, `None` when the suffix is malformed.
fn split_path_version(path: &str) -> Option<(&str, &str)> {
    if path.starts_with("gopkg.in/") {
        return split_gopkg_in(path);
    }
    let bytes = path.as_bytes();
    let mut i = bytes.len();
    let mut dot = false;
    while i > 0 && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.') {
        dot |= bytes[i - 1] == b'.';
        i -= 1;
    }
    if i <= 1 || i == bytes.len() || bytes[i - 1] != b'v' || bytes[i - 2] != b'/' {
        return Some((path, ""));
    }
    let (prefix, major) = path.split_at(i - 2);
    if dot || major.len() <= 2 || major.as_bytes()[2] == b'0' || major == "/v1" {
        return None;
    }
    Some((prefix, major))
}

fn split_gopkg_in(path: &str) -> Option<(&str, &str)> {
    let bytes = path.as_bytes();
    let mut i = bytes.len();
    if path.ends_with("-unstable") {
        i -= "-unstable".len();
    }
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i <= 1 || bytes[i - 1] != b'v' || bytes[i - 2] != b'.' {
        return None;
    }
    let (prefix, major) = path.split_at(i - 2);
    if major.len() <= 2 || (major.as_bytes()[2] == b'0' && major != ".v0") {
        return None;
    }
    Some((prefix, major))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> bool {
        path.parse::<ModulePath>().is_ok()
    }

    #[test]
    fn module_paths_follow_go_rules() {
        for good in [
            "example.com",
            "example.com/m",
            "example.com/Upper/Mod",
            "example.com/m/v2",
            "golang.org/x/mod",
            "gopkg.in/yaml.v3",
            "gopkg.in/check.v1",
            "my-host.io/a_b/c~d/e.f",
        ] {
            assert!(ok(good), "{good} should be valid");
        }
        for bad in [
            "",
            "example",
            "Example.com/m",
            "-example.com",
            "example.com/",
            "/example.com",
            "example.com//m",
            "example.com/../m",
            "example.com/./m",
            "example.com/..",
            "example.com/.hidden",
            "example.com/m.",
            "example.com/m/v1",
            "example.com/m/v0",
            "example.com/m/v02",
            "example.com/m/v2.1",
            "example.com/a b",
            "example.com/a\0b",
            "example.com/a%2e",
            "example.com/a+b",
            "example.com/a@b",
            "example.com/con",
            "example.com/LPT1.txt",
            "example.com/abc~1",
            "gopkg.in/yaml",
            "exämple.com/m",
        ] {
            assert!(!ok(bad), "{bad:?} should be invalid");
        }
        assert!(!ok(&format!("example.com/{}", "a".repeat(600))));
    }

    #[test]
    fn case_encoding_round_trips_and_rejects_ambiguity() {
        let path: ModulePath = "example.com/Upper/Mod".parse().unwrap();
        assert_eq!(path.escaped(), "example.com/!upper/!mod");
        assert_eq!(
            ModulePath::from_escaped("example.com/!upper/!mod").unwrap(),
            path
        );
        for bad in [
            "example.com/Upper",
            "example.com/!",
            "example.com/!!a",
            "example.com/!1",
            "example.com/é",
        ] {
            assert!(
                ModulePath::from_escaped(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn major_suffix_is_found() {
        let v2: ModulePath = "example.com/m/v2".parse().unwrap();
        assert_eq!(v2.major_suffix(), "/v2");
        let v1: ModulePath = "example.com/m".parse().unwrap();
        assert_eq!(v1.major_suffix(), "");
        let gopkg: ModulePath = "gopkg.in/yaml.v3".parse().unwrap();
        assert_eq!(gopkg.major_suffix(), ".v3");
    }
}
