//! Signed notes as the checksum database signs its tree heads
//! (golang.org/x/mod/sumdb/note, c2sp.org/signed-note): the verifier key
//! `name+hash+base64(0x01 ‖ Ed25519 key)`, and a note's text checked against
//! the one key configured. Signatures by other keys are ignored, as Go does:
//! a database may be co-signed by witnesses.

use std::fmt;

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// The algorithm byte of an Ed25519 key.
const ALG_ED25519: u8 = 1;
/// Go refuses a note with more signature lines, so parsing one stays cheap.
const MAX_SIGNATURES: usize = 100;

/// A checksum database's public key, parsed from its verifier key (the
/// `GOSUMDB` form, `sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ze6y7ZvjaU4SMTpP`).
#[derive(Clone)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed verifier key (want NAME+HASH+KEY)")]
    Malformed,
    #[error("verifier key hash does not match its name and key")]
    HashMismatch,
    #[error("verifier key is not an Ed25519 key")]
    Algorithm,
}

/// Why a note was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note")]
    Malformed,
    #[error("note has no signature by {0}")]
    Unsigned(String),
    #[error("invalid signature for key {0}")]
    BadSignature(String),
}

impl std::str::FromStr for VerifierKey {
    type Err = KeyError;

    fn from_str(vkey: &str) -> Result<VerifierKey, KeyError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed);
        };
        let id = (hash.len() == 8)
            .then(|| u32::from_str_radix(hash, 16).ok())
            .flatten()
            .ok_or(KeyError::Malformed)?;
        let key = STANDARD.decode(key).map_err(|_| KeyError::Malformed)?;
        if !is_valid_name(name) || key.is_empty() {
            return Err(KeyError::Malformed);
        }
        if id != key_id(name, &key) {
            return Err(KeyError::HashMismatch);
        }
        let (&alg, key) = key.split_first().ok_or(KeyError::Malformed)?;
        if alg != ALG_ED25519 {
            return Err(KeyError::Algorithm);
        }
        let key = key.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }
}

impl VerifierKey {
    /// The database name, the key's first part (`sum.golang.org`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of `note` if this key signed it: everything before the blank
    /// line that starts the signature block, final newline included.
    pub fn open<'a>(&self, note: &'a [u8]) -> Result<&'a [u8], NoteError> {
        let text = std::str::from_utf8(note).map_err(|_| NoteError::Malformed)?;
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed);
        }
        let split = text.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let (body, signatures) = (&text[..=split], &text[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed);
        }
        let mut signed = false;
        for (count, line) in signatures.lines().enumerate() {
            if count == MAX_SIGNATURES {
                return Err(NoteError::Malformed);
            }
            let (name, id, signature) = parse_signature(line)?;
            if name != self.name || id != self.id {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, &self.key)
                .verify(body.as_bytes(), signature.as_slice())
                .map_err(|_| NoteError::BadSignature(self.to_string()))?;
            signed = true;
        }
        if !signed {
            return Err(NoteError::Unsigned(self.to_string()));
        }
        Ok(&note[..body.len()])
    }
}

/// The key's name and hash, as Go names a key in errors.
impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:08x}", self.name, self.id)
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `— NAME base64(id ‖ signature)`.
fn parse_signature(line: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let rest = line.strip_prefix("— ").ok_or(NoteError::Malformed)?;
    let (name, encoded) = rest.split_once(' ').ok_or(NoteError::Malformed)?;
    let bytes = STANDARD.decode(encoded).map_err(|_| NoteError::Malformed)?;
    if !is_valid_name(name) || bytes.len() < 5 {
        return Err(NoteError::Malformed);
    }
    let id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok((name, id, bytes[4..].to_vec()))
}

/// Go's key hash: the first four bytes of SHA-256(name ‖ "\n" ‖ key).
fn key_id(name: &str, key: &[u8]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update(key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains('+')
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's own test vectors.
    const PETER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter() -> VerifierKey {
        PETER.parse().unwrap()
    }

    #[test]
    fn note_signed_by_the_key_opens_to_its_text() {
        let note = format!("{TEXT}\n{PETER_SIG}");
        assert_eq!(peter().open(note.as_bytes()).unwrap(), TEXT.as_bytes());
        assert_eq!(peter().name(), "PeterNeumann");
        assert_eq!(peter().to_string(), "PeterNeumann+c74f20a3");
    }

    #[test]
    fn signatures_by_other_keys_are_ignored_but_one_by_ours_is_needed() {
        let cosigned = format!("{TEXT}\n{ENOCH_SIG}{PETER_SIG}");
        assert_eq!(peter().open(cosigned.as_bytes()).unwrap(), TEXT.as_bytes());
        let other = format!("{TEXT}\n{ENOCH_SIG}");
        assert_eq!(
            peter().open(other.as_bytes()),
            Err(NoteError::Unsigned("PeterNeumann+c74f20a3".into()))
        );
    }

    #[test]
    fn changed_text_fails_the_signature() {
        let note = format!("{}\n{PETER_SIG}", TEXT.replace("answer", "ANSWER"));
        assert_eq!(
            peter().open(note.as_bytes()),
            Err(NoteError::BadSignature("PeterNeumann+c74f20a3".into()))
        );
    }

    #[test]
    fn malformed_notes_are_refused() {
        for note in [
            format!("{TEXT}{PETER_SIG}"),
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            format!("{TEXT}\n{}", PETER_SIG.replace("— ", "-- ")),
            format!("{TEXT}\n— PeterNeumann AAAA\n"),
            format!("{}\n{PETER_SIG}", TEXT.replace("problem,", "problem,\r")),
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
        ] {
            assert_eq!(
                peter().open(note.as_bytes()),
                Err(NoteError::Malformed),
                "{note:?}"
            );
        }
    }

    #[test]
    fn verifier_keys_are_checked_like_go_does() {
        let bad = |key: &str| key.parse::<VerifierKey>().err();
        assert_eq!(bad("PeterNeumann+c74f20a3"), Some(KeyError::Malformed));
        assert_eq!(
            bad("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Some(KeyError::Malformed)
        );
        assert_eq!(
            bad("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Some(KeyError::HashMismatch)
        );
        assert_eq!(
            bad("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="),
            Some(KeyError::Malformed)
        );
        assert_eq!(
            bad("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Some(KeyError::Algorithm)
        );
        assert!(bad(PETER).is_none());
    }
}
