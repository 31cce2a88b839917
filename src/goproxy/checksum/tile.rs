//! Hash tiles of the checksum database's log (golang.org/x/mod/sumdb/tlog
//! `Tile`): which tiles hold a stored hash, their paths, and the plan of which
//! tiles prove a set of stored hashes against a tree head. Pure computation:
//! the caller fetches the tiles between `HashPlan::new` and
//! `HashPlan::authenticate`.

use std::collections::HashMap;

use super::tlog::{
    HASH_SIZE, Hash, TlogError, Tree, fold_subtrees, node_hash, split_stored_hash_index,
    stored_hash_index, subtree_indexes,
};

/// A hash tile: 2^height hashes (or `width` of them, partial) of tree level
/// `level × height`, the `index`-th such run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub height: u32,
    pub level: u32,
    pub index: u64,
    pub width: u64,
}

impl Tile {
    /// The tile that holds stored hash `index`, just wide enough for it,
    /// and the byte range in it of the entries that hash up to it.
    fn for_index(height: u32, index: u64) -> (Tile, usize, usize) {
        let (level, n) = split_stored_hash_index(index);
        let tile_level = level / height;
        let within = level - tile_level * height;
        let tile_index = (n << within) >> height;
        let n = n - ((tile_index << height) >> within);
        let tile = Tile {
            height,
            level: tile_level,
            index: tile_index,
            width: (n + 1) << within,
        };
        let start = (n << within) as usize * HASH_SIZE;
        let end = ((n + 1) << within) as usize * HASH_SIZE;
        (tile, start, end)
    }

    /// The `k`-th ancestor tile as it exists in a tree of `size` records
    /// (partial at the right edge); `None` past the tree.
    fn parent(self, k: u32, size: u64) -> Option<Tile> {
        let level = self.level + k;
        let index = self.index >> (k * self.height);
        let max = size.checked_shr(level * self.height).unwrap_or(0);
        let start = index << self.height;
        if start >= max {
            return None;
        }
        Some(Tile {
            level,
            index,
            width: (max - start).min(1 << self.height),
            ..self
        })
    }

    pub fn is_full(&self) -> bool {
        self.width == 1 << self.height
    }

    pub fn full(self) -> Tile {
        Tile {
            width: 1 << self.height,
            ..self
        }
    }

    /// Bytes of this tile's data.
    pub fn len(&self) -> usize {
        self.width as usize * HASH_SIZE
    }

    /// `tile/H/L/x123/456[.p/W]`, as the database serves it.
    pub fn path(&self) -> String {
        let mut n = self.index;
        let mut digits = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            digits = format!("x{:03}/{digits}", n % 1000);
        }
        let partial = if self.is_full() {
            String::new()
        } else {
            format!(".p/{}", self.width)
        };
        format!("tile/{}/{}/{digits}{partial}", self.height, self.level)
    }

    /// Stored hash `index` from this tile's `data`.
    fn hash_at(&self, data: &[u8], index: u64) -> Result<Hash, TlogError> {
        let (holder, start, end) = Tile::for_index(self.height, index);
        if holder.level != self.level || holder.index != self.index || holder.width > self.width {
            return Err(TlogError::Plan("hash is not in the tile planned for it"));
        }
        subtree_hash(
            data.get(start..end)
                .ok_or(TlogError::Plan("tile too short"))?,
        )
    }
}

/// The root of the perfect subtree whose leaves are the hashes in `data`.
fn subtree_hash(data: &[u8]) -> Result<Hash, TlogError> {
    if data.len() == HASH_SIZE {
        return Hash::try_from(data).map_err(|_| TlogError::Plan("hash size"));
    }
    if data.is_empty() || !data.len().is_multiple_of(2 * HASH_SIZE) {
        return Err(TlogError::Plan("subtree is not a power of two"));
    }
    let (left, right) = data.split_at(data.len() / 2);
    Ok(node_hash(&subtree_hash(left)?, &subtree_hash(right)?))
}

/// Which tiles prove some stored hashes against a tree head, in the order
/// they authenticate: first those that hash up to the root, then each other
/// tile after its parent (golang.org/x/mod/sumdb/tlog `TileHashReader`).
pub struct HashPlan {
    tree: Tree,
    tiles: Vec<Tile>,
    /// The root's perfect subtrees and the tile each is read from.
    roots: Vec<(u64, usize)>,
    /// The requested hashes and the tile each is read from.
    wanted: Vec<(u64, usize)>,
}

impl HashPlan {
    pub fn new(tree: Tree, height: u32, indexes: &[u64]) -> Result<HashPlan, TlogError> {
        let mut plan = HashPlan {
            tree,
            tiles: Vec::new(),
            roots: Vec::new(),
            wanted: Vec::new(),
        };
        let mut order = HashMap::new();
        for x in subtree_indexes(0, tree.size) {
            let tile = Tile::for_index(height, x).0.parent(0, tree.size);
            let tile = tile.ok_or(TlogError::Plan("root subtree outside the tree"))?;
            let at = *order.entry(tile).or_insert_with(|| {
                plan.tiles.push(tile);
                plan.tiles.len() - 1
            });
            plan.roots.push((x, at));
        }
        for &x in indexes {
            let at = plan.tile_for(height, x, &mut order)?;
            plan.wanted.push((x, at));
        }
        Ok(plan)
    }

    /// Plans the tile holding stored hash `x` and every ancestor tile up to
    /// one already planned (which authenticates the rest, top down).
    fn tile_for(
        &mut self,
        height: u32,
        x: u64,
        order: &mut HashMap<Tile, usize>,
    ) -> Result<usize, TlogError> {
        let size = self.tree.size;
        if x >= stored_hash_index(0, size) {
            let (_, n) = split_stored_hash_index(x);
            return Err(TlogError::NotInTree { index: n, size });
        }
        let tile = Tile::for_index(height, x).0;
        let levels = 64 / height + 1;
        let known = (0..=levels)
            .find(|&k| tile.parent(k, size).is_some_and(|p| order.contains_key(&p)))
            .ok_or(TlogError::Plan("no planned ancestor tile"))?;
        let mut at = None;
        for k in (0..known).rev() {
            let parent = tile
                .parent(k, size)
                .ok_or(TlogError::Plan("ancestor tile outside the tree"))?;
            // A tile with a tile above it is complete: only full tiles have parents.
            if !parent.is_full() {
                return Err(TlogError::Plan("partial tile below another"));
            }
            order.insert(parent, self.tiles.len());
            self.tiles.push(parent);
            at = Some(self.tiles.len() - 1);
        }
        match at {
            Some(at) => Ok(at),
            None => tile
                .parent(0, size)
                .and_then(|t| order.get(&t).copied())
                .ok_or(TlogError::Plan("lost the tile of a hash")),
        }
    }

    /// The tiles to fetch, with exactly `Tile::len` bytes each.
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }

    /// Checks the fetched tiles (in `tiles()` order) against the tree head
    /// and returns the requested hashes, now proven to be in the tree.
    pub fn authenticate(&self, data: &[&[u8]]) -> Result<Vec<Hash>, TlogError> {
        if data.len() != self.tiles.len() {
            return Err(TlogError::Plan("tile count"));
        }
        for (tile, bytes) in self.tiles.iter().zip(data) {
            if bytes.len() != tile.len() {
                return Err(TlogError::TileSize {
                    path: tile.path(),
                    len: bytes.len(),
                    want: tile.len(),
                });
            }
        }
        let roots = self
            .roots
            .iter()
            .map(|&(x, at)| self.tiles[at].hash_at(data[at], x))
            .collect::<Result<Vec<_>, _>>()?;
        if fold_subtrees(&roots) != Some(self.tree.hash) {
            return Err(TlogError::InconsistentTile);
        }
        let mut planned = HashMap::new();
        for (at, tile) in self.tiles.iter().enumerate() {
            planned.insert(*tile, at);
        }
        for at in self.roots_end()..self.tiles.len() {
            let tile = self.tiles[at];
            let parent = tile
                .parent(1, self.tree.size)
                .and_then(|p| planned.get(&p).map(|&j| (p, j)));
            let (parent, j) = parent.ok_or(TlogError::Plan("lost the parent of a tile"))?;
            let expected = parent.hash_at(
                data[j],
                stored_hash_index(parent.level * parent.height, tile.index),
            )?;
            if expected != subtree_hash(data[at])? {
                return Err(TlogError::InconsistentTile);
            }
        }
        self.wanted
            .iter()
            .map(|&(x, at)| self.tiles[at].hash_at(data[at], x))
            .collect()
    }

    /// Tiles before this index were planned for the root; every later one
    /// is checked against its parent. x/mod's `TileHashReader` (0.7, and the
    /// copy in cmd/go 1.19 and 1.23) starts that check at the count of root
    /// subtrees instead, which is larger when two share a tile, and so trusts
    /// some tiles unchecked: in a tree of 773 records, record 0's own tile.
    fn roots_end(&self) -> usize {
        self.roots.iter().map(|&(_, at)| at + 1).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goproxy::checksum::tlog::record_hash;

    /// A log held whole in memory, hashed the plain RFC 6962 way, to check
    /// the tiled proofs against.
    struct Log {
        levels: Vec<Vec<Hash>>,
    }

    impl Log {
        fn new(size: u64) -> Log {
            let leaves: Vec<Hash> = (0..size)
                .map(|i| record_hash(format!("record {i}\n").as_bytes()))
                .collect();
            let mut levels = vec![leaves];
            while levels.last().is_some_and(|l| l.len() > 1) {
                let below = levels.last().unwrap();
                let above = below
                    .chunks_exact(2)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect();
                levels.push(above);
            }
            Log { levels }
        }

        fn root(&self, size: usize) -> Hash {
            fn mth(leaves: &[Hash]) -> Hash {
                if leaves.len() == 1 {
                    return leaves[0];
                }
                let k = 1 << (63 - ((leaves.len() - 1) as u64).leading_zeros());
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
            mth(&self.levels[0][..size])
        }

        fn tree(&self, size: usize) -> Tree {
            Tree {
                size: size as u64,
                hash: self.root(size),
            }
        }

        /// A tile as the database serves it.
        fn tile(&self, tile: &Tile) -> Vec<u8> {
            let level = &self.levels[(tile.level * tile.height) as usize];
            let start = (tile.index << tile.height) as usize;
            level[start..start + tile.width as usize].concat()
        }
    }

    fn prove(log: &Log, tree: Tree, height: u32, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        let plan = HashPlan::new(tree, height, indexes)?;
        let data: Vec<Vec<u8>> = plan.tiles().iter().map(|t| log.tile(t)).collect();
        plan.authenticate(&data.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }

    #[test]
    fn tile_paths_are_the_databases() {
        let tile = |height, level, index, width| Tile {
            height,
            level,
            index,
            width,
        };
        assert_eq!(tile(4, 0, 1, 16).path(), "tile/4/0/001");
        assert_eq!(tile(4, 0, 1, 5).path(), "tile/4/0/001.p/5");
        assert_eq!(tile(3, 5, 123_456_078, 8).path(), "tile/3/5/x123/x456/078");
        assert_eq!(
            tile(3, 5, 123_456_078, 2).path(),
            "tile/3/5/x123/x456/078.p/2"
        );
        assert_eq!(tile(8, 1, 1000, 256).path(), "tile/8/1/x001/000");
    }

    #[test]
    fn tiles_prove_every_record_and_every_older_root() {
        for (height, sizes) in [
            (1, &[1, 2, 3, 7, 8, 9, 31, 40][..]),
            (2, &[5, 16, 17, 63, 64, 70]),
            (8, &[255, 256, 257]),
        ] {
            let log = Log::new(*sizes.last().unwrap());
            for &size in sizes {
                let tree = log.tree(size as usize);
                for id in 0..size {
                    let leaf = prove(&log, tree, height, &[stored_hash_index(0, id)]).unwrap();
                    assert_eq!(
                        leaf,
                        [log.levels[0][id as usize]],
                        "h{height} size {size} id {id}"
                    );
                }
                for older in 1..=size {
                    let hashes = prove(&log, tree, height, &subtree_indexes(0, older)).unwrap();
                    assert_eq!(fold_subtrees(&hashes), Some(log.root(older as usize)));
                }
            }
        }
    }

    #[test]
    fn a_changed_byte_in_any_tile_is_caught() {
        // Tree sizes whose root tiles are fewer than their root subtrees, so
        // a record's own tile comes after both in the plan.
        for (height, size) in [(2, 23u64), (2, 37), (8, 773)] {
            let log = Log::new(size);
            let tree = log.tree(size as usize);
            for id in [0, size / 3, size - 1] {
                let plan = HashPlan::new(tree, height, &[stored_hash_index(0, id)]).unwrap();
                let good: Vec<Vec<u8>> = plan.tiles().iter().map(|t| log.tile(t)).collect();
                for (i, tile) in good.iter().enumerate() {
                    for at in [0, tile.len() - 1] {
                        let mut data = good.clone();
                        data[i][at] ^= 1;
                        let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                        let result = plan.authenticate(&data);
                        // A changed byte may sit outside what the proof reads; then the
                        // answer must still be the true leaf.
                        match result {
                            Err(TlogError::InconsistentTile) => {}
                            Ok(leaf) => assert_eq!(leaf, [log.levels[0][id as usize]]),
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_of_the_wrong_size_or_outside_the_tree_are_refused() {
        let log = Log::new(10);
        let tree = log.tree(10);
        assert_eq!(
            HashPlan::new(tree, 8, &[stored_hash_index(0, 10)]).err(),
            Some(TlogError::NotInTree {
                index: 10,
                size: 10
            })
        );
        let plan = HashPlan::new(tree, 8, &[stored_hash_index(0, 3)]).unwrap();
        let short = log.tile(&plan.tiles()[0]);
        let result = plan.authenticate(&[&short[..short.len() - 32]]);
        assert!(
            matches!(result, Err(TlogError::TileSize { .. })),
            "{result:?}"
        );
        let plan = HashPlan::new(
            Tree {
                hash: [7; 32],
                ..tree
            },
            8,
            &[0],
        )
        .unwrap();
        assert_eq!(
            plan.authenticate(&[&log.tile(&plan.tiles()[0])]),
            Err(TlogError::InconsistentTile)
        );
    }
}
