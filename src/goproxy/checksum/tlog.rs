//! The checksum database's log (golang.org/x/mod/sumdb/tlog, RFC 6962 hashes):
//! tree heads, record and node hashes, and the order the log stores its
//! hashes in. Pure computation; the tiles that carry those hashes are `tile`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// Bytes per hash in a tile.
pub const HASH_SIZE: usize = 32;

/// Largest tree head accepted: far above any real log (sum.golang.org holds
/// tens of millions of records), low enough that no index arithmetic below
/// can overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 40;

/// A tree head: the log's size and its root hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tree {
    pub size: u64,
    pub hash: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    #[error("malformed tree head")]
    MalformedTree,
    #[error("record {index} is not in a tree of {size} records")]
    NotInTree { index: u64, size: u64 },
    /// The tiles do not hash up to the tree head: at least one is wrong.
    #[error("tiles inconsistent with the tree head")]
    InconsistentTile,
    #[error("tile {path} is {len} bytes, not {want}")]
    TileSize {
        path: String,
        len: usize,
        want: usize,
    },
    /// An index that the plan itself computed went missing: a bug, refused
    /// rather than trusted.
    #[error("tile plan: {0}")]
    Plan(&'static str),
}

impl Tree {
    /// The note text of a tree head: `go.sum database tree\nN\nHASH\n`, any
    /// later lines ignored as Go does.
    pub fn parse(text: &[u8]) -> Result<Tree, TlogError> {
        let text = std::str::from_utf8(text).map_err(|_| TlogError::MalformedTree)?;
        let mut lines = text.splitn(4, '\n');
        let (Some("go.sum database tree"), Some(size), Some(hash), Some(_)) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(TlogError::MalformedTree);
        };
        let size = size
            .parse::<i64>()
            .ok()
            .and_then(|size| u64::try_from(size).ok())
            .filter(|&size| size <= MAX_TREE_SIZE)
            .ok_or(TlogError::MalformedTree)?;
        let hash = STANDARD
            .decode(hash)
            .ok()
            .and_then(|hash| Hash::try_from(hash).ok())
            .ok_or(TlogError::MalformedTree)?;
        Ok(Tree { size, hash })
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tree of {} records, root {}",
            self.size,
            STANDARD.encode(self.hash)
        )
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The leaf hash of a record's data.
pub fn record_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0])
        .chain_update(data)
        .finalize()
        .into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Where hash `n` of `level` sits in the log's stored order: level L's n'th
/// hash is written right after level L+1's... as each record completes
/// subtrees, its own hash and then every subtree hash it completes.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut index = 0;
    while n > 0 {
        index += n;
        n >>= 1;
    }
    index + u64::from(level)
}

/// The (level, n) of a stored hash index.
pub(super) fn split_stored_hash_index(index: u64) -> (u32, u64) {
    // stored_hash_index(0, n) < 2n, so n is in [index/2, index/2 + log2(index)].
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    loop {
        // Record n+1 adds its own hash and one per subtree it completes.
        let next = index_n + 1 + u64::from((n + 1).trailing_zeros());
        if next > index {
            break;
        }
        n += 1;
        index_n = next;
    }
    let level = (index - index_n) as u32;
    (level, n >> level)
}

/// The largest power of two below `n` (`n ≥ 2`), and its log.
fn max_pow2_below(n: u64) -> (u64, u32) {
    let level = 63 - (n - 1).leading_zeros();
    (1 << level, level)
}

/// The stored hashes whose combination is the root of records `[lo, hi)`
/// (RFC 6962 section 2.1): the perfect subtrees, largest first.
pub fn subtree_indexes(lo: u64, hi: u64) -> Vec<u64> {
    let mut lo = lo;
    let mut need = Vec::new();
    while lo < hi {
        let (k, level) = max_pow2_below(hi - lo + 1);
        need.push(stored_hash_index(level, lo >> level));
        lo += k;
    }
    need
}

/// Folds the perfect subtrees' hashes (as `subtree_indexes` orders them)
/// into a root, right to left.
pub fn fold_subtrees(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |h, left| node_hash(left, &h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hash_indexes_split_back() {
        for level in 0..10 {
            for n in 0..100 {
                assert_eq!(
                    split_stored_hash_index(stored_hash_index(level, n)),
                    (level, n)
                );
            }
        }
        // Record 0, record 1 then their parent, record 2, record 3, then two parents.
        let order: Vec<u64> = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0)]
            .iter()
            .map(|&(l, n)| stored_hash_index(l, n))
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn tree_heads_parse_as_go_formats_them() {
        let text =
            b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
        let tree = Tree::parse(text).unwrap();
        assert_eq!(tree.size, 123_456_789_012);
        assert_eq!(tree.hash, record_hash(b"hello world"));
        assert_eq!(
            Tree::parse(&[&text[..], b"extra\nlines\n"].concat()).unwrap(),
            tree
        );
        for bad in [
            &b"not-go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"[..],
            b"go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
            b"go.sum database tree\n-1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
            b"go.sum database tree\n1099511627777\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
            b"go.sum database tree\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
            b"go.sum database tree\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        ] {
            assert!(
                Tree::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
