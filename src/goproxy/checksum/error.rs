//! How a check against a checksum database fails, in kinds the fill path maps
//! to the wire: a module the database does not know (404 with the database's
//! own text), a hash that differs from the database's (an audit row), a
//! database that forks or rolls back (a security event), a database that
//! cannot be reached (502) and answers that do not verify (502).

use std::fmt;

use bytes::Bytes;

use super::dirhash::H1;
use super::tlog::Tree;

/// Why the caller's fetcher has no answer for a path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The database answered 404 or 410, with this text.
    #[error("not found: {0}")]
    NotFound(String),
    /// No answer, and nothing kept: a network error, a 5xx, a timeout.
    #[error("{0}")]
    Unreachable(String),
}

/// Which file of a module version a go.sum line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumFile {
    Zip,
    GoMod,
}

impl fmt::Display for SumFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SumFile::Zip => "zip",
            SumFile::GoMod => "go.mod",
        })
    }
}

/// Text from the database, whole or not at all, ends in `Display` and maybe
/// in a client's answer; the caller escapes it before it reaches a log line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{module}@{version}: not found in checksum database {db_name}: {text}")]
    NotInDatabase {
        db_name: String,
        module: String,
        version: String,
        /// The database's own 404 text, for the client.
        text: String,
    },
    #[error(
        "{}@{}: {} has hash {}, but checksum database {} has {}",
        .0.module, .0.version, .0.file, .0.ours, .0.db_name, .0.database
    )]
    HashMismatch(Box<Mismatch>),
    /// A signed head of our size with another hash, or a newer one that does
    /// not extend ours: two histories signed by one key.
    #[error(
        "checksum database {} forked: it signed a {}, which does not extend our {}",
        .0.db_name, .0.theirs, .0.ours
    )]
    Fork(Box<Divergence>),
    /// A signed head older than ours that is not a prefix of ours.
    #[error(
        "checksum database {} rolled back: it signed a {}, which our {} does not contain",
        .0.db_name, .0.theirs, .0.ours
    )]
    Rollback(Box<Divergence>),
    #[error("checksum database {db_name} unreachable for {path}: {reason}")]
    Unreachable {
        db_name: String,
        path: String,
        reason: String,
    },
    /// An answer that does not verify: a bad signature, a record or tile that
    /// does not match the signed head, a malformed answer.
    #[error("checksum database {db_name}: {reason}")]
    Invalid { db_name: String, reason: String },
}

/// Our hash of a file and the database's, which differ.
#[derive(Debug)]
pub struct Mismatch {
    pub db_name: String,
    pub module: String,
    pub version: String,
    pub file: SumFile,
    pub ours: H1,
    pub database: H1,
}

/// Two signed heads of one database that cannot both be true.
#[derive(Debug)]
pub struct Divergence {
    pub db_name: String,
    /// The head verified before.
    pub ours: Tree,
    pub theirs: Tree,
    /// Both signed notes: the proof, to keep with the security event.
    pub ours_note: Bytes,
    pub theirs_note: Bytes,
}

impl VerifyError {
    /// A fork or rollback: log it as a security event and count it.
    pub fn is_security_event(&self) -> bool {
        matches!(self, VerifyError::Fork(_) | VerifyError::Rollback(_))
    }
}
