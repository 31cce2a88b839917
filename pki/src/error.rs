use std::path::PathBuf;

/// Everything that can go wrong in certificate work; each variant names the file
/// or the input at fault so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0}: a CA already exists here; pass --force to replace it (every certificate it issued stops working)"
    )]
    CaExists(PathBuf),
    #[error("{0}: no CA here; run `mirror pki init --dir {1}` first")]
    NoCa(PathBuf, String),
    #[error("{path}: not a usable {what}: {reason}")]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    BadInput {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("no issued certificate matches {0:?} (see `mirror pki list`)")]
    NotFound(String),
    #[error("{0:?} matches more than one certificate; revoke by serial instead")]
    Ambiguous(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PkiError {
        let path = path.into();
        move |source| PkiError::Io { path, source }
    }
}
