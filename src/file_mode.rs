//! Refuses the files the server trusts when other users could read a secret in
//! them or change them: a private key others can read is a stolen identity; a
//! key, htpasswd, CA or CRL others can write lets them mint identities or undo
//! a revocation. A leaf, called wherever such a file is loaded (start and
//! reload alike), so a reload onto an exposed file fails and the old
//! configuration stays.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a file holds, which decides who else may read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A private key: the owner (and its group, as Debian's `ssl-cert` group
    /// reads keys) may read it; nobody else may read it or anyone change it.
    PrivateKey,
    /// Public but trusted (htpasswd hashes, a CA, a CRL, a certificate): anyone
    /// may read it, only the owner change it.
    TrustAnchor,
}

/// A file others could read or change, with the command that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{who} (mode {mode:04o}); run chmod {fix} {path}", path = path.display())]
pub struct Exposed {
    pub path: PathBuf,
    who: &'static str,
    mode: u32,
    fix: &'static str,
}

/// `Ok` when `path` is private enough for what it holds. A file that cannot be
/// examined is left to the loader, whose error already names it.
pub fn check(path: &Path, holds: Holds) -> Result<(), Exposed> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    let who = if mode & 0o002 != 0 {
        "writable by every user"
    } else if mode & 0o020 != 0 {
        "writable by its group"
    } else if mode & 0o004 != 0 && holds == Holds::PrivateKey {
        "readable by every user"
    } else {
        return Ok(());
    };
    Err(Exposed {
        path: path.to_owned(),
        who,
        mode,
        fix: match holds {
            Holds::PrivateKey => "600",
            Holds::TrustAnchor => "go-w",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn keys_must_be_unreadable_by_others_and_trust_files_unwritable() {
        for (mode, holds, refused) in [
            (0o600, Holds::PrivateKey, false),
            (0o640, Holds::PrivateKey, false),
            (0o400, Holds::PrivateKey, false),
            (0o644, Holds::PrivateKey, true),
            (0o660, Holds::PrivateKey, true),
            (0o602, Holds::PrivateKey, true),
            (0o644, Holds::TrustAnchor, false),
            (0o664, Holds::TrustAnchor, true),
            (0o646, Holds::TrustAnchor, true),
        ] {
            let (_dir, path) = with_mode(mode);
            assert_eq!(check(&path, holds).is_err(), refused, "{mode:o} {holds:?}");
        }
    }

    #[test]
    fn the_refusal_names_the_file_and_the_fix() {
        let (_dir, path) = with_mode(0o644);
        let message = check(&path, Holds::PrivateKey).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "readable by every user (mode 0644); run chmod 600 {}",
                path.display()
            )
        );
    }

    #[test]
    fn a_missing_file_is_left_to_the_loader() {
        assert!(check(Path::new("/nonexistent/key"), Holds::PrivateKey).is_ok());
    }
}
