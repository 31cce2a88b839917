//! The checksum database proxy at `/sumdb/{name}/…` for the configured
//! databases: `supported`, `latest`, `lookup/{module}@{version}` and
//! `tile/{H}/{L|data}/{K}[.p/{W}]`. Full tiles never change and are stored for
//! good; lookups, `latest` and partial tiles are kept for `list_ttl`. A
//! private module is never looked up; a lookup of the verifying database is
//! proven first (`verifier`) and answered from what the proof kept.

use bytes::Bytes;

use super::chain::fetch_one;
use super::error::{GoError, OrInternal};
use super::key::{AnswerKey, Key, Resource};
use super::module::ModulePath;
use super::version::{Query, Version};
use super::{GoProxy, Served, bytes_response};
use crate::store::{Origin, TileKey};
use crate::wire::{Outcome, body};

/// Largest sumdb answer accepted (a data tile of 256 records is far smaller).
pub(super) const MAX_SUMDB_ANSWER: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SumdbPath {
    Supported,
    Latest,
    Lookup(ModulePath, Version),
    Tile(Tile),
}

/// A tile path in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    pub path: String,
    /// The same tile with all 2^H entries (`path` itself when full).
    pub full_path: String,
    /// Entries in this tile.
    pub width: u64,
    pub full: bool,
    /// A record data tile (`tile/H/data/…`) rather than a hash tile.
    pub data: bool,
}

/// Bytes per entry of a hash tile.
pub(super) const HASH_SIZE: u64 = 32;

/// Parses what follows `/sumdb/{name}/`; `None` for anything else.
pub fn parse(rest: &str) -> Option<SumdbPath> {
    match rest {
        "supported" => return Some(SumdbPath::Supported),
        "latest" => return Some(SumdbPath::Latest),
        _ => {}
    }
    if let Some(lookup) = rest.strip_prefix("lookup/") {
        let (module, version) = lookup.split_once('@')?;
        let module = ModulePath::from_escaped(module).ok()?;
        let version = Query::from_escaped(version).ok()?.canonical_for(&module)?;
        return Some(SumdbPath::Lookup(module, version));
    }
    parse_tile(rest)
}

/// golang.org/x/mod/sumdb/tlog `ParseTilePath`, which accepts only the
/// canonical form of a tile path.
fn parse_tile(path: &str) -> Option<SumdbPath> {
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 4 || parts[0] != "tile" || parts.len() > 12 {
        return None;
    }
    let height: u32 = parts[1].parse().ok()?;
    if !(1..=30).contains(&height) || parts[1].starts_with('0') {
        return None;
    }
    let data = parts[2] == "data";
    if !data {
        let level: u32 = parts[2].parse().ok()?;
        if parts[2] != level.to_string() {
            return None;
        }
    }
    let full_width = 1u64 << height;
    let mut width = full_width;
    let mut full_path = path.to_owned();
    let second_last = parts[parts.len() - 2];
    let owned_last;
    if let Some(stem) = second_last.strip_suffix(".p") {
        full_path = path[..path.rfind(".p/")?].to_owned();
        let w: u64 = parts[parts.len() - 1].parse().ok()?;
        if w == 0 || w >= full_width || parts[parts.len() - 1] != w.to_string() {
            return None;
        }
        width = w;
        owned_last = stem.to_owned();
        parts.pop();
        let last = parts.len() - 1;
        parts[last] = &owned_last;
    }
    let index = &parts[3..];
    if index.is_empty() {
        return None;
    }
    for (i, element) in index.iter().enumerate() {
        let digits = if i + 1 < index.len() {
            element.strip_prefix('x')?
        } else {
            element
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    // Go renders no leading zero element.
    if index.len() > 1 && index[0] == "x000" {
        return None;
    }
    Some(SumdbPath::Tile(Tile {
        path: path.to_owned(),
        full_path,
        width,
        full: width == full_width,
        data,
    }))
}

impl GoProxy {
    pub(super) async fn sumdb(&self, name: &str, rest: &str) -> Result<Served, GoError> {
        let Some(base) = self.inner.sumdbs.get(name) else {
            return Err(GoError::not_found(format!(
                "not found: checksum database {name:?} is not proxied by this mirror (go.sumdb)"
            )));
        };
        let Some(route) = parse(rest) else {
            return Err(GoError::not_found(format!(
                "not found: {rest:?} is not a checksum database path"
            )));
        };
        let resource = Resource::Sumdb {
            db: name,
            path: rest,
        };
        let upstream = format!("{base}/{}", resource.upstream_path());
        let key = AnswerKey::Answer(resource).encode();
        match route {
            SumdbPath::Supported => Ok(Served::new(
                http::Response::new(body::empty()),
                Outcome::Hit,
                None,
            )),
            SumdbPath::Lookup(module, _) if self.inner.private.matches(module.as_str()) => {
                Err(GoError::not_found(format!(
                    "not found: {module} matches the mirror's private patterns (go.private); \
                     it is never sent to a checksum database (set GONOSUMDB or GOPRIVATE for it)"
                )))
            }
            SumdbPath::Lookup(module, version) if self.verifies_lookup(name, &module) => {
                self.verified_lookup(&module, &version, &key).await
            }
            SumdbPath::Tile(tile) if tile.full => self.full_tile(name, &tile.path, &upstream).await,
            SumdbPath::Tile(tile) if !tile.data => {
                self.partial_tile(name, &tile, &key, upstream).await
            }
            SumdbPath::Latest | SumdbPath::Lookup(..) | SumdbPath::Tile(_) => {
                let client = &self.inner.client;
                let (cached, outcome) = self
                    .cached_answer(&key, fetch_one(client, upstream, MAX_SUMDB_ANSWER))
                    .await?;
                if !cached.found() {
                    return Err(cached.not_found());
                }
                Ok(Served::new(
                    bytes_response(cached.body.clone(), "text/plain; charset=utf-8"),
                    outcome,
                    None,
                ))
            }
        }
    }

    /// A lookup of the verifying database is proven as a fill's is, and
    /// served from what the proof kept: a client sees what the mirror checked,
    /// and a database that forks or rolls back is refused to it too.
    async fn verified_lookup(
        &self,
        module: &ModulePath,
        version: &Version,
        key: &Key,
    ) -> Result<Served, GoError> {
        let was_kept = self.kept(key).await?.is_some_and(|cached| cached.found());
        self.verification(module, version).await?;
        let kept = self.kept(key).await?;
        let body = kept
            .filter(|cached| cached.found())
            .map(|cached| cached.body.clone())
            .ok_or_else(|| GoError::internal(key.as_str(), &"a verified lookup was not kept"))?;
        Ok(Served::new(
            bytes_response(body, "text/plain; charset=utf-8"),
            if was_kept {
                Outcome::Hit
            } else {
                Outcome::Miss
            },
            None,
        ))
    }

    /// A stored full tile, from the memo or the store.
    pub(super) async fn stored_tile(
        &self,
        name: &str,
        tile: &str,
    ) -> Result<Option<Bytes>, GoError> {
        let key = tile_key(name, tile);
        if let Some(bytes) = self.inner.tiles.get(key.as_str()) {
            return Ok(Some(bytes));
        }
        let store = &self.inner.store;
        let Some((digest, _)) = store
            .go()
            .tile(TileKey::new(name, tile))
            .await
            .or_internal(key.as_str())?
        else {
            return Ok(None);
        };
        let read = store
            .blobs()
            .read_small(&digest, MAX_SUMDB_ANSWER as u64)
            .await
            .or_internal(key.as_str())?;
        Ok(read.map(|bytes| {
            let bytes = Bytes::from(bytes);
            let weight = bytes.len();
            self.inner
                .tiles
                .insert(key.to_string(), bytes.clone(), weight);
            bytes
        }))
    }

    /// A partial hash tile is a prefix of every wider version of the same
    /// tile (the log only grows): answered from the stored full tile when
    /// there is one, else from upstream through the TTL cache, else, with
    /// upstream down, from any wider version of it kept.
    async fn partial_tile(
        &self,
        name: &str,
        tile: &Tile,
        key: &Key,
        upstream: String,
    ) -> Result<Served, GoError> {
        let len = tile.width * HASH_SIZE;
        let prefix =
            |bytes: Bytes| (bytes.len() as u64 >= len).then(|| bytes.slice(..len as usize));
        if let Some(bytes) = self
            .stored_tile(name, &tile.full_path)
            .await?
            .and_then(prefix)
        {
            return Ok(Served::new(
                bytes_response(bytes, TILE_TYPE),
                Outcome::Hit,
                None,
            ));
        }
        let fetch = fetch_one(&self.inner.client, upstream, MAX_SUMDB_ANSWER);
        match self.cached_answer(key, fetch).await {
            Ok((cached, outcome)) if cached.found() => Ok(Served::new(
                bytes_response(cached.body.clone(), TILE_TYPE),
                outcome,
                None,
            )),
            Ok((cached, _)) => Err(cached.not_found()),
            Err(GoError::BadGateway) => {
                let under = Key::sumdb_partials(name, &tile.full_path);
                let kept = self
                    .inner
                    .store
                    .go()
                    .answers_under(under.stored())
                    .await
                    .or_internal(key.as_str())?;
                let wider = kept
                    .into_iter()
                    .filter(|(_, answer)| answer.status == 200)
                    .map(|(_, answer)| Bytes::from(answer.body))
                    .find_map(prefix)
                    .ok_or(GoError::BadGateway)?;
                Ok(Served::new(
                    bytes_response(wider, TILE_TYPE),
                    Outcome::Stale,
                    None,
                ))
            }
            Err(error) => Err(error),
        }
    }

    /// A full tile: stored once, served from the store forever.
    async fn full_tile(&self, name: &str, tile: &str, upstream: &str) -> Result<Served, GoError> {
        let key = tile_key(name, tile);
        let store = &self.inner.store;
        if let Some(bytes) = self.stored_tile(name, tile).await? {
            return Ok(Served::new(
                bytes_response(bytes, TILE_TYPE),
                Outcome::Hit,
                None,
            ));
        }
        if let Some(cached) = self.fresh(&key).await? {
            return Err(cached.not_found());
        }
        // Boxed: the fetch and the store writes are kilobytes of future that
        // every tile hit's would carry otherwise.
        let fetched = self
            .inner
            .flights
            .run(key.as_str(), Box::pin(async {
                match fetch_one(&self.inner.client, upstream.to_owned(), MAX_SUMDB_ANSWER).await {
                    super::chain::Answer::Found(bytes) => {
                        // A tile the store cannot take is still served: the
                        // failure is ours, not upstream's.
                        let stored = match store.blobs().put(&bytes, Origin::Cached).await {
                            Ok(digest) => store
                                .go()
                                .put_tile(TileKey::new(name, tile), &digest, bytes.len() as u64)
                                .await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = stored {
                            tracing::error!(target: "mirror::go", key = key.as_str(), %error, "could not store a checksum tile");
                        }
                        Ok(std::sync::Arc::new(super::answers::Cached {
                            status: 200,
                            body: bytes,
                            fetched_at: crate::store::now_secs(),
                        }))
                    }
                    super::chain::Answer::NotFound { gone, reason } => Ok(self
                        .keep(&key, if gone { 410 } else { 404 }, Bytes::from(reason))
                        .await),
                    super::chain::Answer::Failed(error) => Err(error),
                }
            }))
            .await
            .map_err(|error| GoError::upstream(key.as_str(), &error))?;
        if !fetched.found() {
            return Err(fetched.not_found());
        }
        self.inner
            .tiles
            .insert(key.to_string(), fetched.body.clone(), fetched.body.len());
        Ok(Served::new(
            bytes_response(fetched.body.clone(), TILE_TYPE),
            Outcome::Miss,
            None,
        ))
    }
}

const TILE_TYPE: &str = "application/octet-stream";

/// A full tile's key: its kept 404/410, its memo entry and its one fetch.
fn tile_key(db: &str, tile: &str) -> Key {
    AnswerKey::Answer(Resource::Sumdb { db, path: tile }).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_parse_only_in_canonical_form() {
        let full =
            |p: &str| matches!(parse(p), Some(SumdbPath::Tile(t)) if t.full && t.full_path == p);
        let partial = |p: &str| matches!(parse(p), Some(SumdbPath::Tile(t)) if !t.full && p.starts_with(&t.full_path));
        assert!(full("tile/8/0/000"));
        assert!(full("tile/8/1/x001/234"));
        assert!(full("tile/8/data/x123/x456/789"));
        assert!(partial("tile/8/0/000.p/17"));
        assert!(partial("tile/8/data/001.p/255"));
        assert_eq!(
            parse("tile/8/1/x002/003.p/9"),
            Some(SumdbPath::Tile(Tile {
                path: "tile/8/1/x002/003.p/9".into(),
                full_path: "tile/8/1/x002/003".into(),
                width: 9,
                full: false,
                data: false,
            }))
        );
        for bad in [
            "tile/8/0/0",
            "tile/8/0/000.p/256",
            "tile/8/0/000.p/0",
            "tile/8/0/000.p/017",
            "tile/08/0/000",
            "tile/8/01/000",
            "tile/8/0/x000/001",
            "tile/8/0/001/002",
            "tile/8/0/../000",
            "tile/31/0/000",
            "tile/8/0",
            "tile/8/0.p/5",
            "tiles/8/0/000",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn lookups_need_a_valid_module_and_canonical_version() {
        assert!(matches!(
            parse("lookup/example.com/!upper@v1.0.0"),
            Some(SumdbPath::Lookup(m, _)) if m.as_str() == "example.com/Upper"
        ));
        assert!(parse("lookup/example.com/m@master").is_none());
        assert!(parse("lookup/example.com/../m@v1.0.0").is_none());
        assert_eq!(parse("supported"), Some(SumdbPath::Supported));
        assert_eq!(parse("latest"), Some(SumdbPath::Latest));
    }
}
