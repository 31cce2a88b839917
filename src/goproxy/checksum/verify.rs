//! A module version proven against a checksum database, as cmd/go's sumdb
//! client proves it: the lookup's signed tree head checked with the
//! configured key and against the latest head the mirror verified before
//! (consistent in whichever direction it lies), then the record proven to be
//! in the log through hash tiles. Every answer comes through the caller's
//! `Fetch`, which may serve what it kept before asking the database.

use std::future::Future;

use bytes::Bytes;

use super::dirhash::H1;
use super::error::{FetchError, Mismatch, SumFile, VerifyError};
use super::note::{KeyError, VerifierKey};
use super::record::Record;
use super::session::Session;
use super::tlog::Tree;
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
        let body = fetch.fetch("latest").await.map_err(|e| match e {
            FetchError::NotFound(text) => self.invalid(format!(
                "the database has no latest head: {}",
                bounded(text)
            )),
            FetchError::Unreachable(reason) => self.unreachable("latest", reason),
        })?;
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

    pub(super) fn invalid(&self, reason: String) -> VerifyError {
        VerifyError::Invalid {
            db_name: self.name().to_owned(),
            reason,
        }
    }

    pub(super) fn unreachable(&self, path: &str, reason: String) -> VerifyError {
        VerifyError::Unreachable {
            db_name: self.name().to_owned(),
            path: path.to_owned(),
            reason: bounded(reason),
        }
    }
}

pub(super) fn bounded(text: String) -> String {
    if text.len() <= MAX_REASON {
        return text;
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goproxy::checksum::fixtures::{MOD, ZIP, module};

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
