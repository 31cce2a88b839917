//! A module version proven against a checksum database, as cmd/go's sumdb
//! client proves it: the lookup's signed tree head checked with the
//! configured key and against the latest head the mirror verified before
//! (consistent in whichever direction it lies), then the record proven to be
//! in the log through hash tiles. Every answer comes through the caller's
//! `Fetch`, which may serve what it kept before asking the database.

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use futures_util::future::try_join_all;

use super::dirhash::H1;
use super::error::{Divergence, FetchError, Mismatch, SumFile, VerifyError};
use super::note::{KeyError, VerifierKey};
use super::tlog::{self, Hash, HashPlan, Tile, TlogError, Tree};
use crate::goproxy::module::ModulePath;
use crate::goproxy::version::Version;

/// The tile height of every Go checksum database.
pub const TILE_HEIGHT: u32 = 8;

/// Longest database text kept in an error: a 404 reason is a line.
const MAX_REASON: usize = 512;

/// Answers from one database, by the path after `/sumdb/{name}/`:
/// `lookup/{escaped module}@{escaped version}`, `latest`, or a tile path
/// (`tile/8/0/x001/234.p/5`). An implementation may answer from what it
/// kept (answers this module handed back as proof, or older ones) and ask
/// the database only for what it lacks.
pub trait Fetch: Sync {
    fn fetch(&self, path: &str) -> impl Future<Output = Result<Bytes, FetchError>> + Send;
}

/// An answer that took part in a proof: what the caller may keep as
/// verified and serve to clients under `/sumdb/{name}/{path}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub path: String,
    pub body: Bytes,
}

/// A tree head whose note the database's key signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTree {
    tree: Tree,
    note: Bytes,
}

impl SignedTree {
    pub fn tree(&self) -> Tree {
        self.tree
    }

    /// The signed note: what the caller stores, and reopens with
    /// `Database::open_head`.
    pub fn note(&self) -> &Bytes {
        &self.note
    }
}

/// The database's hashes for one module version, proven in its log.
#[derive(Clone, Debug)]
pub struct Verified {
    pub db_name: String,
    pub module: ModulePath,
    pub version: Version,
    pub zip: Option<H1>,
    pub go_mod: Option<H1>,
    /// The latest head now verified: store it if it is newer than the one
    /// stored (through `Database::advance` when another fill moved it).
    pub head: SignedTree,
    /// The lookup and the tiles that proved it.
    pub proof: Vec<Answer>,
}

impl Verified {
    /// Ok when `ours` is the database's hash for `file`.
    pub fn check(&self, file: SumFile, ours: H1) -> Result<(), VerifyError> {
        let database = match file {
            SumFile::Zip => self.zip,
            SumFile::GoMod => self.go_mod,
        };
        match database {
            Some(database) if database == ours => Ok(()),
            Some(database) => Err(VerifyError::HashMismatch(Box::new(Mismatch {
                db_name: self.db_name.clone(),
                module: self.module.to_string(),
                version: self.version.to_string(),
                file,
                ours,
                database,
            }))),
            None => Err(VerifyError::Invalid {
                db_name: self.db_name.clone(),
                reason: format!(
                    "the record for {}@{} has no h1: hash for the {file}",
                    self.module, self.version
                ),
            }),
        }
    }
}

/// One checksum database: its name and the key its tree heads are signed with.
#[derive(Clone, Debug)]
pub struct Database {
    key: VerifierKey,
}

impl Database {
    /// From a verifier key in GOSUMDB form, `name+hash+key`.
    pub fn new(verifier_key: &str) -> Result<Database, KeyError> {
        Ok(Database {
            key: verifier_key.parse()?,
        })
    }

    pub fn name(&self) -> &str {
        self.key.name()
    }

    /// Checks a stored (or fetched) tree head note with the key.
    pub fn open_head(&self, note: Bytes) -> Result<SignedTree, VerifyError> {
        let text = self
            .key
            .open(&note)
            .map_err(|e| self.invalid(format!("tree head: {e}")))?;
        let tree = Tree::parse(text).map_err(|e| self.invalid(format!("tree head: {e}")))?;
        Ok(SignedTree { tree, note })
    }

    /// The database's hashes for `module@version`, proven against its log
    /// and against `latest`, the newest head verified before (none the
    /// first time).
    pub async fn lookup(
        &self,
        fetch: &impl Fetch,
        latest: Option<&SignedTree>,
        module: &ModulePath,
        version: &Version,
    ) -> Result<Verified, VerifyError> {
        let path = format!("lookup/{}@{}", module.escaped(), version.escaped());
        let body = fetch.fetch(&path).await.map_err(|e| match e {
            FetchError::NotFound(text) => VerifyError::NotInDatabase {
                db_name: self.name().to_owned(),
                module: module.to_string(),
                version: version.to_string(),
                text: bounded(text),
            },
            FetchError::Unreachable(reason) => self.unreachable(&path, reason),
        })?;
        let record = Record::parse(&body).map_err(|reason| self.invalid(reason))?;
        let mut session = Session::new(self, fetch);
        let candidate = self.open_head(body.slice_ref(record.note))?;
        let head = session.merge(latest, candidate).await?;
        session
            .check_record(head.tree, record.id, record.text)
            .await?;
        let (zip, go_mod) = record
            .hashes(module, version)
            .map_err(|reason| self.invalid(reason))?;
        let mut proof = vec![Answer {
            path,
            body: body.clone(),
        }];
        proof.extend(session.into_proof());
        Ok(Verified {
            db_name: self.name().to_owned(),
            module: module.clone(),
            version: version.clone(),
            zip,
            go_mod,
            head,
            proof,
        })
    }

    /// The database's `latest` head, proven consistent with `latest`.
    pub async fn latest(
        &self,
        fetch: &impl Fetch,
        latest: Option<&SignedTree>,
    ) -> Result<(SignedTree, Vec<Answer>), VerifyError> {
        let body = fetch
            .fetch("latest")
            .await
            .map_err(|e| self.unreachable("latest", e.to_string()))?;
        let candidate = self.open_head(body.clone())?;
        let mut session = Session::new(self, fetch);
        let head = session.merge(latest, candidate).await?;
        let mut proof = vec![Answer {
            path: "latest".into(),
            body,
        }];
        proof.extend(session.into_proof());
        Ok((head, proof))
    }

    /// The newer of two verified heads, once proven that one extends the
    /// other: for the caller storing a head when another fill stored one
    /// since it started.
    pub async fn advance(
        &self,
        fetch: &impl Fetch,
        stored: &SignedTree,
        candidate: SignedTree,
    ) -> Result<(SignedTree, Vec<Answer>), VerifyError> {
        let mut session = Session::new(self, fetch);
        let head = session.merge(Some(stored), candidate).await?;
        Ok((head, session.into_proof()))
    }

    fn invalid(&self, reason: String) -> VerifyError {
        VerifyError::Invalid {
            db_name: self.name().to_owned(),
            reason,
        }
    }

    fn unreachable(&self, path: &str, reason: String) -> VerifyError {
        VerifyError::Unreachable {
            db_name: self.name().to_owned(),
            path: path.to_owned(),
            reason: bounded(reason),
        }
    }
}

fn bounded(text: String) -> String {
    if text.len() <= MAX_REASON {
        return text;
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A lookup answer (golang.org/x/mod/sumdb/tlog `ParseRecord`): the record's
/// id, its text, then after a blank line the signed tree head.
struct Record<'a> {
    id: u64,
    text: &'a [u8],
    note: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(body: &'a [u8]) -> Result<Record<'a>, String> {
        let malformed = || "malformed lookup record".to_owned();
        let newline = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(malformed)?;
        let id = std::str::from_utf8(&body[..newline])
            .ok()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(malformed)?;
        let rest = &body[newline + 1..];
        let blank = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(malformed)?;
        let (text, note) = (&rest[..=blank], &rest[blank + 2..]);
        let valid = std::str::from_utf8(text)
            .is_ok_and(|t| !t.chars().any(|c| c < ' ' && c != '\n') && !t.contains("\n\n"));
        if !valid {
            return Err(malformed());
        }
        Ok(Record { id, text, note })
    }

    /// The `M V h1:…` and `M V/go.mod h1:…` hashes for `module@version`.
    fn hashes(
        &self,
        module: &ModulePath,
        version: &Version,
    ) -> Result<(Option<H1>, Option<H1>), String> {
        let text = std::str::from_utf8(self.text).map_err(|_| "record is not UTF-8")?;
        let go_mod_version = format!("{version}/go.mod");
        let (mut zip, mut go_mod) = (None, None);
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(path), Some(file_version), Some(hash), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if path != module.as_str() || !hash.starts_with("h1:") {
                continue;
            }
            let slot = if file_version == version.as_str() {
                &mut zip
            } else if file_version == go_mod_version {
                &mut go_mod
            } else {
                continue;
            };
            let hash: H1 = hash
                .parse()
                .map_err(|e| format!("record for {module}@{version}: {e}"))?;
            if slot.replace(hash).is_some_and(|before| before != hash) {
                return Err(format!(
                    "record for {module}@{version} has two hashes for one file"
                ));
            }
        }
        if zip.is_none() && go_mod.is_none() {
            return Err(format!(
                "the record served for {module}@{version} is not for it"
            ));
        }
        Ok((zip, go_mod))
    }
}

/// The tiles fetched for one verification, each fetched once, and kept for
/// the proof once authenticated.
struct Session<'a, F> {
    db: &'a Database,
    fetch: &'a F,
    tiles: HashMap<Tile, Bytes>,
    proven: Vec<Tile>,
}

impl<'a, F: Fetch> Session<'a, F> {
    fn new(db: &'a Database, fetch: &'a F) -> Session<'a, F> {
        Session {
            db,
            fetch,
            tiles: HashMap::new(),
            proven: Vec::new(),
        }
    }

    /// `older` and `candidate` agree: the older is a prefix of the newer.
    /// Returns the newer.
    async fn merge(
        &mut self,
        older: Option<&SignedTree>,
        candidate: SignedTree,
    ) -> Result<SignedTree, VerifyError> {
        let Some(ours) = older else {
            return Ok(candidate);
        };
        let (our_tree, their_tree) = (ours.tree, candidate.tree);
        if their_tree.size >= our_tree.size {
            let root = if their_tree.size == our_tree.size {
                Some(their_tree.hash)
            } else {
                self.prefix_root(our_tree.size, their_tree).await?
            };
            return match root {
                Some(root) if root == our_tree.hash => Ok(candidate),
                Some(_) => Err(self.divergence(ours, candidate, false)),
                None => Err(self
                    .db
                    .invalid(format!("tiles do not match the signed {their_tree}"))),
            };
        }
        // An older head must be in our tree, proven from tiles of our head:
        // tiles that no longer match a head the database signed are as much
        // a rollback as a root that differs.
        match self.prefix_root(their_tree.size, our_tree).await? {
            Some(root) if root == their_tree.hash => Ok(ours.clone()),
            _ => Err(self.divergence(ours, candidate, true)),
        }
    }

    fn divergence(&self, ours: &SignedTree, theirs: SignedTree, rollback: bool) -> VerifyError {
        let divergence = Box::new(Divergence {
            db_name: self.db.name().to_owned(),
            ours: ours.tree,
            theirs: theirs.tree,
            ours_note: ours.note.clone(),
            theirs_note: theirs.note,
        });
        if rollback {
            VerifyError::Rollback(divergence)
        } else {
            VerifyError::Fork(divergence)
        }
    }

    /// The root of the first `size` records of `tree`, from its tiles;
    /// `None` when the tiles do not hash up to `tree`.
    async fn prefix_root(&mut self, size: u64, tree: Tree) -> Result<Option<Hash>, VerifyError> {
        if size == 0 {
            return Ok(Some(Hash::default()));
        }
        match self.proven(tree, &tlog::subtree_indexes(0, size)).await? {
            Ok(hashes) => Ok(tlog::fold_subtrees(&hashes)),
            Err(TlogError::InconsistentTile) => Ok(None),
            Err(error) => Err(self.tlog_invalid(error, tree)),
        }
    }

    /// The record `id` of `tree` is `text`.
    async fn check_record(&mut self, tree: Tree, id: u64, text: &[u8]) -> Result<(), VerifyError> {
        if id >= tree.size {
            return Err(self
                .db
                .invalid(format!("record {id} is not in the signed {tree}")));
        }
        let leaf = self.hashes(tree, &[tlog::stored_hash_index(0, id)]).await?;
        if leaf.first() != Some(&tlog::record_hash(text)) {
            return Err(self
                .db
                .invalid(format!("record {id} does not match the log's {tree}")));
        }
        Ok(())
    }

    /// Stored hashes of `tree`, proven through its tiles.
    async fn hashes(&mut self, tree: Tree, indexes: &[u64]) -> Result<Vec<Hash>, VerifyError> {
        self.proven(tree, indexes)
            .await?
            .map_err(|error| self.tlog_invalid(error, tree))
    }

    /// Fetch failures outside, proof failures inside.
    async fn proven(
        &mut self,
        tree: Tree,
        indexes: &[u64],
    ) -> Result<Result<Vec<Hash>, TlogError>, VerifyError> {
        let plan = match HashPlan::new(tree, TILE_HEIGHT, indexes) {
            Ok(plan) => plan,
            Err(error) => return Ok(Err(error)),
        };
        self.load(plan.tiles()).await?;
        let data: Vec<&[u8]> = plan
            .tiles()
            .iter()
            .map(|tile| self.tiles.get(tile).map_or(&[][..], |b| &b[..]))
            .collect();
        let hashes = plan.authenticate(&data);
        if hashes.is_ok() {
            self.proven.extend_from_slice(plan.tiles());
        }
        Ok(hashes)
    }

    fn tlog_invalid(&self, error: TlogError, tree: Tree) -> VerifyError {
        self.db.invalid(format!("{error} ({tree})"))
    }

    /// Fetches the tiles not fetched yet in this session, concurrently.
    async fn load(&mut self, tiles: &[Tile]) -> Result<(), VerifyError> {
        let missing: Vec<Tile> = tiles
            .iter()
            .filter(|tile| !self.tiles.contains_key(tile))
            .copied()
            .collect();
        let fetched = try_join_all(missing.iter().map(|&tile| self.tile(tile))).await?;
        self.tiles.extend(missing.into_iter().zip(fetched));
        Ok(())
    }

    /// A tile's bytes, from its own path or else as a prefix of the full
    /// tile (a partial tile may be gone once the tile is complete).
    async fn tile(&self, tile: Tile) -> Result<Bytes, VerifyError> {
        let path = tile.path();
        let first = match self.fetch.fetch(&path).await {
            Ok(body) => return self.sized(tile, &path, body),
            Err(error) => error,
        };
        if !tile.is_full()
            && let Ok(full) = self.fetch.fetch(&tile.full().path()).await
        {
            return self.sized(tile, &path, full);
        }
        Err(match first {
            FetchError::NotFound(text) => self
                .db
                .invalid(format!("the database has no {path}: {}", bounded(text))),
            FetchError::Unreachable(reason) => self.db.unreachable(&path, reason),
        })
    }

    fn sized(&self, tile: Tile, path: &str, body: Bytes) -> Result<Bytes, VerifyError> {
        if body.len() < tile.len() {
            return Err(self.db.invalid(format!(
                "{path} is {} bytes, not {}",
                body.len(),
                tile.len()
            )));
        }
        Ok(body.slice(..tile.len()))
    }

    fn into_proof(self) -> Vec<Answer> {
        let mut seen = std::collections::HashSet::new();
        self.proven
            .into_iter()
            .filter(|tile| seen.insert(*tile))
            .filter_map(|tile| {
                let body = self.tiles.get(&tile)?.clone();
                Some(Answer {
                    path: tile.path(),
                    body,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZIP: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    const MOD: &str = "h1:Xb6L6wTjOLvErL6swEsVpVmwTRdv2Ue1iNUb9G3Ap04=";

    fn module() -> (ModulePath, Version) {
        (
            "example.com/Upper/Mod".parse().unwrap(),
            "v1.0.0".parse().unwrap(),
        )
    }

    #[test]
    fn lookup_records_parse_as_go_parses_them() {
        let body = b"123456789012\nhello, world\n\njunk on end\x01\xff";
        let record = Record::parse(body).unwrap();
        assert_eq!(
            (record.id, record.text, record.note),
            (
                123_456_789_012,
                &b"hello, world\n"[..],
                &b"junk on end\x01\xff"[..]
            )
        );
        for bad in [
            &b"not-123\nhello, world\n\n"[..],
            b"123\nhello\x01world\n\n",
            b"123\nhello\xffworld\n\n",
            b"123\nhello world\n",
            b"0x123\nhello world\n\n",
            b"-1\nhello world\n\n",
        ] {
            assert!(
                Record::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn record_hashes_are_those_of_the_module_asked_for() {
        let (module, version) = module();
        let text = format!(
            "example.com/Upper/Mod v1.0.0 {ZIP}\nexample.com/Upper/Mod v1.0.0/go.mod {MOD}\n"
        );
        let record = Record {
            id: 0,
            text: text.as_bytes(),
            note: b"",
        };
        let (zip, go_mod) = record.hashes(&module, &version).unwrap();
        assert_eq!(zip.map(|h| h.to_string()).as_deref(), Some(ZIP));
        assert_eq!(go_mod.map(|h| h.to_string()).as_deref(), Some(MOD));

        let other = format!("example.com/upper/mod v1.0.0 {ZIP}\n");
        let record = Record {
            id: 0,
            text: other.as_bytes(),
            note: b"",
        };
        assert!(
            record
                .hashes(&module, &version)
                .unwrap_err()
                .contains("is not for it")
        );

        let twice =
            format!("example.com/Upper/Mod v1.0.0 {ZIP}\nexample.com/Upper/Mod v1.0.0 {MOD}\n");
        let record = Record {
            id: 0,
            text: twice.as_bytes(),
            note: b"",
        };
        assert!(
            record
                .hashes(&module, &version)
                .unwrap_err()
                .contains("two hashes")
        );

        // A line of a future hash algorithm is not ours to read.
        let future = format!(
            "example.com/Upper/Mod v1.0.0 h2:abc\nexample.com/Upper/Mod v1.0.0/go.mod {MOD}\n"
        );
        let record = Record {
            id: 0,
            text: future.as_bytes(),
            note: b"",
        };
        assert_eq!(record.hashes(&module, &version).unwrap().0, None);
    }

    #[test]
    fn check_names_both_hashes_and_the_database() {
        let (module, version) = module();
        let head = SignedTree {
            tree: Tree {
                size: 1,
                hash: [0; 32],
            },
            note: Bytes::new(),
        };
        let verified = Verified {
            db_name: "sum.example".into(),
            module,
            version,
            zip: Some(ZIP.parse().unwrap()),
            go_mod: None,
            head,
            proof: Vec::new(),
        };
        assert!(verified.check(SumFile::Zip, ZIP.parse().unwrap()).is_ok());
        let error = verified
            .check(SumFile::Zip, MOD.parse().unwrap())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "example.com/Upper/Mod@v1.0.0: zip has hash {MOD}, but checksum database sum.example has {ZIP}"
            )
        );
        assert!(matches!(
            verified.check(SumFile::GoMod, MOD.parse().unwrap()),
            Err(VerifyError::Invalid { .. })
        ));
    }
}
