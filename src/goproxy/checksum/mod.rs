//! Proof that a module version is what the checksum database committed to,
//! computed here rather than left to the client: the `h1:` hashes cmd/go
//! computes (`dirhash`), the database's signed tree heads (`note`), its log
//! (`tlog`) and hash tiles (`tile`), its lookup records (`record`), and the
//! check of a lookup against all of them (`verify`, `session`). Knows no
//! store and no HTTP client: the fill path hands in a `Fetch` for the
//! database's answers and the latest verified head, and keeps what comes
//! back.
//!
//! From the fill path, for `module@version` of database `db`:
//! 1. `let head = stored_note.map(|n| db.open_head(n)).transpose()?;`
//! 2. `let verified = db.lookup(&fetch, head.as_ref(), &module, &version).await?;`
//! 3. `verified.check(SumFile::GoMod, H1::go_mod(&mod_bytes))?`, and for the
//!    zip, on a blocking thread after `zipcheck::check`,
//!    `verified.check(SumFile::Zip, H1::zip_file(&tmp)?)?`;
//! 4. store `verified.head.note()` if its tree is larger than the stored one
//!    (`db.advance` first if another fill stored a head meanwhile), and keep
//!    `verified.proof` as the verified `/sumdb/` answers.
//!
//! `VerifyError::is_security_event` marks a fork or rollback.

mod dirhash;
mod error;
mod note;
mod record;
mod session;
mod tile;
mod tlog;
mod verify;

pub use super::module::ModulePath;
pub use super::version::Version;
pub use dirhash::{BadH1, H1, HashError};
pub use error::{Divergence, FetchError, Mismatch, SumFile, VerifyError};
pub use note::{KeyError, NoteError, VerifierKey};
pub use tlog::{Hash, MAX_TREE_SIZE, Tree};
pub use verify::{Answer, Database, Fetch, SignedTree, TILE_HEIGHT, Verified};

/// One module version and its two hashes, as the unit tests' records name them.
#[cfg(test)]
mod fixtures {
    use super::{ModulePath, Version};

    pub(super) const ZIP: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    pub(super) const MOD: &str = "h1:Xb6L6wTjOLvErL6swEsVpVmwTRdv2Ue1iNUb9G3Ap04=";

    pub(super) fn module() -> (ModulePath, Version) {
        (
            "example.com/Upper/Mod".parse().unwrap(),
            "v1.0.0".parse().unwrap(),
        )
    }
}
