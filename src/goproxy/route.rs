//! Turns a request path into a typed GOPROXY route, or a refusal. Everything a
//! handler receives has passed Go's rules here: nothing invalid ever reaches
//! the store or an upstream. Pure parsing: no I/O.

use super::module::ModulePath;
use super::version::{Query, Version};

/// Longest request path considered at all.
pub const MAX_REQUEST_PATH: usize = 1024;

/// One of a canonical version's immutable files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Info,
    Mod,
    Zip,
}

impl FileKind {
    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Info => "info",
            FileKind::Mod => "mod",
            FileKind::Zip => "zip",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            FileKind::Info => "application/json",
            FileKind::Mod => "text/plain; charset=utf-8",
            FileKind::Zip => "application/zip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/{module}/@v/list`
    List(ModulePath),
    /// `/{module}/@latest`
    Latest(ModulePath),
    /// `/{module}/@v/{version}.info|.mod|.zip` for a canonical version the module may have.
    File(ModulePath, Version, FileKind),
    /// `/{module}/@v/{query}.info` for anything else (`master`, `v1.2`).
    Query(ModulePath, Query),
    /// `/sumdb/{name}/{rest}`; `rest` is checked by the sumdb handler, which knows the names.
    Sumdb { name: String, rest: String },
}

/// Why a path is refused, before anything is looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed: a 400.
    BadRequest(String),
    /// Well formed but cannot exist (not a GOPROXY path, a version the module cannot have): a 404.
    NotFound(String),
}

/// Parses the raw (still percent-encoded) path of a request.
pub fn parse(raw: &str) -> Result<Route, Refusal> {
    if raw.len() > MAX_REQUEST_PATH * 3 {
        return Err(Refusal::BadRequest("request path too long".into()));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Refusal::BadRequest("request path is not UTF-8".into()))?;
    if decoded.len() > MAX_REQUEST_PATH {
        return Err(Refusal::BadRequest("request path too long".into()));
    }
    if decoded.contains('\0') {
        return Err(Refusal::BadRequest("request path contains NUL".into()));
    }
    let path = decoded
        .strip_prefix('/')
        .ok_or_else(|| Refusal::BadRequest("request path must start with /".into()))?;
    if let Some(rest) = path.strip_prefix("sumdb/") {
        let (name, rest) = rest
            .split_once('/')
            .ok_or_else(|| Refusal::NotFound("not found: no checksum database path".into()))?;
        return Ok(Route::Sumdb {
            name: name.to_owned(),
            rest: rest.to_owned(),
        });
    }
    if let Some(module) = path.strip_suffix("/@latest") {
        return Ok(Route::Latest(module_path(module)?));
    }
    let Some((module, file)) = path.split_once("/@v/") else {
        return Err(Refusal::NotFound(
            "not found: not a GOPROXY path (/{module}/@v/…, /{module}/@latest or /sumdb/…)".into(),
        ));
    };
    let module = module_path(module)?;
    if file == "list" {
        return Ok(Route::List(module));
    }
    let (version, kind) = if let Some(v) = file.strip_suffix(".info") {
        (v, FileKind::Info)
    } else if let Some(v) = file.strip_suffix(".mod") {
        (v, FileKind::Mod)
    } else if let Some(v) = file.strip_suffix(".zip") {
        (v, FileKind::Zip)
    } else {
        return Err(Refusal::NotFound(format!(
            "not found: {module}/@v/ serves list, .info, .mod and .zip only"
        )));
    };
    let query = Query::from_escaped(version).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    match (query.canonical_for(&module), kind) {
        (Some(version), kind) => Ok(Route::File(module, version, kind)),
        (None, FileKind::Info) => Ok(Route::Query(module, query)),
        (None, _) => Err(Refusal::NotFound(format!(
            "not found: {module}@{query}: .mod and .zip are served for canonical versions of the module only"
        ))),
    }
}

fn module_path(escaped: &str) -> Result<ModulePath, Refusal> {
    ModulePath::from_escaped(escaped).map_err(|e| Refusal::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> ModulePath {
        s.parse().unwrap()
    }

    #[test]
    fn routes_parse_with_percent_and_case_decoding() {
        assert_eq!(
            parse("/example.com/acc/%21camel%21case/@v/v0.3.0-%21r%21c.1.info").unwrap(),
            Route::File(
                m("example.com/acc/CamelCase"),
                "v0.3.0-RC.1".parse().unwrap(),
                FileKind::Info
            )
        );
        assert_eq!(
            parse("/example.com/m/@v/list").unwrap(),
            Route::List(m("example.com/m"))
        );
        assert_eq!(
            parse("/example.com/m/@latest").unwrap(),
            Route::Latest(m("example.com/m"))
        );
        assert_eq!(
            parse("/example.com/m/@v/v2.0.0+incompatible.zip").unwrap(),
            Route::File(
                m("example.com/m"),
                "v2.0.0+incompatible".parse().unwrap(),
                FileKind::Zip
            )
        );
        assert!(matches!(
            parse("/example.com/m/@v/master.info").unwrap(),
            Route::Query(..)
        ));
        assert!(matches!(
            parse("/example.com/m/@v/v1.2.info").unwrap(),
            Route::Query(..)
        ));
        assert!(matches!(
            parse("/example.com/m/@v/v2.0.0.info").unwrap(),
            Route::Query(..)
        ));
        assert_eq!(
            parse("/sumdb/sum.golang.org/lookup/x.io/m@v1.0.0").unwrap(),
            Route::Sumdb {
                name: "sum.golang.org".into(),
                rest: "lookup/x.io/m@v1.0.0".into()
            }
        );
    }

    #[test]
    fn traversal_and_garbage_are_refused() {
        for bad in [
            "/example.com/../etc/@v/list",
            "/example.com/%2e%2e/etc/@v/list",
            "/example.com/%2E%2E/@v/list",
            "/example.com/m/@v/..%2f..%2fetc.info",
            "/example.com/m/@v/%2e%2e.info",
            "/example.com/m/@v/v1.0.0.info/../x.info",
            "/example.com/m%00/@v/list",
            "/example.com/m/@v/v1.0.0%00.zip",
            "/example.com/m/@v/%ff.info",
            "/Example.com/m/@v/list",
            "//example.com/m/@v/list",
            "/example.com/m/@v/master.zip",
            "/example.com/m/@v/v2.0.0.mod",
            "/",
            "/favicon.ico",
            "/example.com/m/@v/v1.0.0.tar",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("/example.com/{}/@v/list", "a".repeat(5000));
        assert!(matches!(parse(&long), Err(Refusal::BadRequest(_))));
    }
}
