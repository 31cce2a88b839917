//! One verification's work against the database's log: heads merged only
//! when one provably extends the other, records proven through hash tiles,
//! each tile fetched once and kept for the proof once authenticated.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::future::try_join_all;

use super::error::{Divergence, FetchError, VerifyError};
use super::tile::{HashPlan, Tile};
use super::tlog::{self, Hash, TlogError, Tree};
use super::verify::{Answer, Database, Fetch, SignedTree, TILE_HEIGHT, bounded};

/// The tiles fetched for one verification, each fetched once, and kept for
/// the proof once authenticated.
pub(super) struct Session<'a, F> {
    db: &'a Database,
    fetch: &'a F,
    tiles: HashMap<Tile, Bytes>,
    proven: Vec<Tile>,
}

impl<'a, F: Fetch> Session<'a, F> {
    pub fn new(db: &'a Database, fetch: &'a F) -> Session<'a, F> {
        Session {
            db,
            fetch,
            tiles: HashMap::new(),
            proven: Vec::new(),
        }
    }

    /// `older` and `candidate` agree: the older is a prefix of the newer.
    /// Returns the newer.
    pub async fn merge(
        &mut self,
        older: Option<&SignedTree>,
        candidate: SignedTree,
    ) -> Result<SignedTree, VerifyError> {
        let Some(ours) = older else {
            return Ok(candidate);
        };
        let (our_tree, their_tree) = (ours.tree(), candidate.tree());
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
            ours: ours.tree(),
            theirs: theirs.tree(),
            ours_note: ours.note().clone(),
            theirs_note: theirs.note().clone(),
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
    pub async fn check_record(
        &mut self,
        tree: Tree,
        id: u64,
        text: &[u8],
    ) -> Result<(), VerifyError> {
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

    pub fn into_proof(self) -> Vec<Answer> {
        let mut seen = HashSet::new();
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
