//! The names the store keys rows by. The protocols own the grammar (what a
//! repository, tag, module path or version may be) and hand their parsed
//! names over as these; the store checks nothing again and only keeps each
//! kind apart, so a tag cannot land where a repository goes. Borrowed where a
//! request already holds the name, so a hit allocates nothing.

use std::fmt;

/// A repository as the store keys it: `<upstream>/<remote>` for a mirrored
/// one, the name for a hosted one. Made once per request, by the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoKey(String);

impl RepoKey {
    pub fn new(key: String) -> RepoKey {
        RepoKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag within a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagKey<'a>(&'a str);

impl<'a> TagKey<'a> {
    pub fn new(tag: &'a str) -> TagKey<'a> {
        TagKey(tag)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// A Go module path, unescaped (`example.com/Upper/m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleKey<'a>(&'a str);

impl<'a> ModuleKey<'a> {
    pub const fn new(module: &'a str) -> ModuleKey<'a> {
        ModuleKey(module)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// A canonical version of a Go module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionKey<'a>(&'a str);

impl<'a> VersionKey<'a> {
    pub const fn new(version: &'a str) -> VersionKey<'a> {
        VersionKey(version)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// The key an expiring Go answer is stored under, or a prefix of such keys.
/// `goproxy` spells every one; the store compares them as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerKey<'a>(&'a str);

impl<'a> AnswerKey<'a> {
    pub fn new(key: &'a str) -> AnswerKey<'a> {
        AnswerKey(key)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// A full tile of a checksum database: the database's name and the tile's
/// path below it (`tile/8/0/x001/002`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileKey<'a> {
    db: &'a str,
    tile: &'a str,
}

impl<'a> TileKey<'a> {
    pub fn new(db: &'a str, tile: &'a str) -> TileKey<'a> {
        TileKey { db, tile }
    }

    pub fn db(self) -> &'a str {
        self.db
    }

    pub fn tile(self) -> &'a str {
        self.tile
    }
}
