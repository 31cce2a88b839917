//! The one spelling of every key the Go mirror writes to the store, its memos
//! and its single-flight maps, and of every path it asks an upstream for. A
//! typo here would split a cache silently, so nothing else builds either.
//! Stored keys must keep their bytes: existing data dirs hold them. Pure: no I/O.

use std::fmt;

use super::chain::encode_path;
use super::module::ModulePath;
use super::route::FileKind;
use super::version::{Query, Version};
use crate::store;

/// What one request names upstream, borrowed from its route.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Resource<'a> {
    List(&'a ModulePath),
    Latest(&'a ModulePath),
    Query(&'a ModulePath, &'a Query),
    File(&'a ModulePath, &'a Version, FileKind),
    /// `path` is what follows `/sumdb/{db}/`.
    Sumdb {
        db: &'a str,
        path: &'a str,
    },
}

impl Resource<'_> {
    /// The percent-encoded path as the go command asks for it: relative to a
    /// GOPROXY base for the module routes, to the database's base for sumdb.
    pub(crate) fn upstream_path(&self) -> String {
        let path = match self {
            Resource::List(module) => format!("{}/@v/list", module.escaped()),
            Resource::Latest(module) => format!("{}/@latest", module.escaped()),
            Resource::Query(module, query) => {
                format!("{}/@v/{}.info", module.escaped(), query.escaped())
            }
            Resource::File(module, version, kind) => format!(
                "{}/@v/{}.{}",
                module.escaped(),
                version.escaped(),
                kind.extension()
            ),
            Resource::Sumdb { path, .. } => (*path).to_owned(),
        };
        encode_path(&path)
    }
}

/// `module@version.kind`, unescaped: a file's memo key and its audit artifact.
pub(crate) struct FileName<'a>(pub &'a ModulePath, pub &'a Version, pub FileKind);

impl fmt::Display for FileName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FileName(module, version, kind) = self;
        write!(f, "{module}@{version}.{}", kind.extension())
    }
}

/// A key, by what it keys.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AnswerKey<'a> {
    /// An answer kept with its fetch time, in the store and the answers memo
    /// (for a file, only its 404/410); a full tile in the tiles memo, and
    /// every refresh of either in the answers' single flight.
    Answer(Resource<'a>),
    /// A stored file in the files memo.
    StoredFile(&'a ModulePath, &'a Version, FileKind),
    /// The one upstream fetch of a small file.
    FileFetch(&'a ModulePath, &'a Version, FileKind),
    /// The one upstream download of a zip, among the store's fills.
    ZipFill(&'a ModulePath, &'a Version),
    /// A file the checksum database contradicted, kept (502, with why) for
    /// `negative_ttl` so later clients are told why, not just cut off.
    Refused(&'a ModulePath, &'a Version, FileKind),
}

impl AnswerKey<'_> {
    pub(crate) fn encode(&self) -> Key {
        Key(self.to_string())
    }
}

impl fmt::Display for AnswerKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AnswerKey::Answer(Resource::List(module)) => write!(f, "list {module}"),
            AnswerKey::Answer(Resource::Latest(module)) => write!(f, "latest {module}"),
            AnswerKey::Answer(Resource::Query(module, query)) => {
                write!(f, "query {module}@{query}")
            }
            AnswerKey::Answer(Resource::File(module, version, kind)) => {
                write!(f, "file {}", FileName(module, version, kind))
            }
            AnswerKey::Answer(Resource::Sumdb { db, path }) => write!(f, "sumdb {db}/{path}"),
            AnswerKey::StoredFile(module, version, kind) => {
                write!(f, "{}", FileName(module, version, kind))
            }
            AnswerKey::FileFetch(module, version, kind) => {
                write!(f, "get {}", FileName(module, version, kind))
            }
            AnswerKey::ZipFill(module, version) => {
                write!(f, "go:{}", FileName(module, version, FileKind::Zip))
            }
            AnswerKey::Refused(module, version, kind) => {
                write!(f, "refused {}", FileName(module, version, kind))
            }
        }
    }
}

/// An encoded key: only `AnswerKey::encode` and the prefix constructors make one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(String);

impl Key {
    /// The prefix of every partial version of the tile `full_path` of `db`
    /// (`…/{full_path}.p/{width}`): a scan for a wider one kept.
    pub(crate) fn sumdb_partials(db: &str, full_path: &str) -> Key {
        let full = AnswerKey::Answer(Resource::Sumdb {
            db,
            path: full_path,
        });
        Key(format!("{full}.p/"))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as the store keeps the answer under it.
    pub(crate) fn stored(&self) -> store::AnswerKey<'_> {
        store::AnswerKey::new(&self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> ModulePath {
        "example.com/Upper/m".parse().unwrap()
    }

    fn v() -> Version {
        "v2.0.0-RC.1+incompatible".parse().unwrap()
    }

    /// Each variant as today's databases hold it; changing one orphans every
    /// row written under the old spelling.
    #[test]
    fn every_key_keeps_the_encoding_existing_data_dirs_hold() {
        let (m, v) = (m(), v());
        let q = Query::from_escaped("!main").unwrap();
        let tile = "tile/8/0/x001/002.p/17";
        let cases = [
            (
                AnswerKey::Answer(Resource::List(&m)),
                "list example.com/Upper/m",
            ),
            (
                AnswerKey::Answer(Resource::Latest(&m)),
                "latest example.com/Upper/m",
            ),
            (
                AnswerKey::Answer(Resource::Query(&m, &q)),
                "query example.com/Upper/m@Main",
            ),
            (
                AnswerKey::Answer(Resource::File(&m, &v, FileKind::Mod)),
                "file example.com/Upper/m@v2.0.0-RC.1+incompatible.mod",
            ),
            (
                AnswerKey::Answer(Resource::Sumdb {
                    db: "sum.golang.org",
                    path: tile,
                }),
                "sumdb sum.golang.org/tile/8/0/x001/002.p/17",
            ),
            (
                AnswerKey::StoredFile(&m, &v, FileKind::Info),
                "example.com/Upper/m@v2.0.0-RC.1+incompatible.info",
            ),
            (
                AnswerKey::FileFetch(&m, &v, FileKind::Info),
                "get example.com/Upper/m@v2.0.0-RC.1+incompatible.info",
            ),
            (
                AnswerKey::ZipFill(&m, &v),
                "go:example.com/Upper/m@v2.0.0-RC.1+incompatible.zip",
            ),
            (
                AnswerKey::Refused(&m, &v, FileKind::Zip),
                "refused example.com/Upper/m@v2.0.0-RC.1+incompatible.zip",
            ),
        ];
        for (key, encoded) in cases {
            assert_eq!(key.encode().as_str(), encoded, "{key:?}");
        }
        assert_eq!(
            Key::sumdb_partials("sum.golang.org", "tile/8/0/x001/002").as_str(),
            "sumdb sum.golang.org/tile/8/0/x001/002.p/"
        );
    }

    #[test]
    fn upstream_paths_are_escaped_as_the_go_command_asks() {
        let (m, v) = (m(), v());
        let q = Query::from_escaped("!main").unwrap();
        let cases = [
            (Resource::List(&m), "example.com/%21upper/m/@v/list"),
            (Resource::Latest(&m), "example.com/%21upper/m/@latest"),
            (
                Resource::Query(&m, &q),
                "example.com/%21upper/m/@v/%21main.info",
            ),
            (
                Resource::File(&m, &v, FileKind::Zip),
                "example.com/%21upper/m/@v/v2.0.0-%21r%21c.1+incompatible.zip",
            ),
            (
                Resource::Sumdb {
                    db: "sum.golang.org",
                    path: "lookup/example.com/!upper/m@v1.0.0",
                },
                "lookup/example.com/%21upper/m@v1.0.0",
            ),
        ];
        for (resource, path) in cases {
            assert_eq!(resource.upstream_path(), path, "{resource:?}");
        }
    }
}
