//! `Digest`: an `algorithm:hex` content address, valid by construction.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use sha2::digest::common::hazmat::SerializableState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A content digest as the OCI spec writes it: `sha256:` + 64 lower-case hex.
/// Kept in its written form, since that is what headers, paths and the index
/// need on every request.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// `algorithm:hex`.
    text: Box<str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
pub struct InvalidDigest(pub String);

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// `algorithm:hex`, as `Display` writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut hasher = Algorithm::Sha256.hasher();
        hasher.update(bytes);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidDigest(s.chars().take(200).collect());
        let (algorithm, hex) = s.split_once(':').ok_or_else(bad)?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad()),
        };
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if hex.len() != algorithm.hex_len() || !hex.as_bytes().iter().all(lower_hex) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            text: s.into(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The first byte of a saved hash state: which algorithm the rest belongs to.
const SAVED_SHA256: u8 = 1;
const SAVED_SHA512: u8 = 2;

/// Incremental hashing for the algorithm a digest names.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The state after the bytes hashed so far, to go on from later with
    /// [`Hasher::restore`]: a push session keeps it in the index so that
    /// continuing never re-reads the bytes already acknowledged.
    pub fn save(&self) -> Vec<u8> {
        let (tag, state) = match self {
            Hasher::Sha256(h) => (SAVED_SHA256, h.serialize().to_vec()),
            Hasher::Sha512(h) => (SAVED_SHA512, h.serialize().to_vec()),
        };
        [&[tag][..], &state].concat()
    }

    /// A hasher from [`Hasher::save`]; `None` for a state this build cannot
    /// read (sha2 keeps the format only within one minor version), which the
    /// caller answers by hashing the bytes again.
    pub fn restore(saved: &[u8]) -> Option<Hasher> {
        let (tag, state) = saved.split_first()?;
        match *tag {
            SAVED_SHA256 => sha2::Sha256::deserialize(state.try_into().ok()?)
                .ok()
                .map(Hasher::Sha256),
            SAVED_SHA512 => sha2::Sha512::deserialize(state.try_into().ok()?)
                .ok()
                .map(Hasher::Sha512),
            _ => None,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.as_str()).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_digests_parse_and_print_back() {
        let text = format!("sha256:{}", "a".repeat(64));
        assert_eq!(text.parse::<Digest>().unwrap().to_string(), text);
        assert_eq!(
            Digest::sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_saved_hash_state_goes_on_where_it_stopped() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut whole = algorithm.hasher();
            whole.update(b"first part, second part");
            let mut first = algorithm.hasher();
            first.update(b"first part, ");
            let mut resumed = Hasher::restore(&first.save()).unwrap();
            resumed.update(b"second part");
            assert_eq!(resumed.finish(), whole.finish());
        }
    }

    #[test]
    fn a_state_that_is_not_a_saved_one_is_refused() {
        let saved = Algorithm::Sha256.hasher().save();
        assert!(Hasher::restore(&saved[..saved.len() - 1]).is_none());
        assert!(Hasher::restore(&[]).is_none());
        let mut foreign = saved.clone();
        foreign[0] = 9;
        assert!(Hasher::restore(&foreign).is_none());
    }

    #[test]
    fn malformed_digests_are_rejected() {
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("md5:{}", "a".repeat(32)),
            &format!("sha256:{}/../x", "a".repeat(60)),
            &format!("sha256:{}", "a".repeat(65)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }
}
