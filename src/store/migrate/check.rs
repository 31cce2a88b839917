//! The end of a migration: every blob row of the source (but those left
//! behind) has its row in the target, found by walking both in digest order.

use std::collections::HashSet;

use crate::store::index::UpkeepIndex;
use crate::store::{Store, StoreError};

const PAGE: u32 = 1000;

impl Store {
    /// Source digests, but those in `left_behind`, that the target lacks.
    pub(super) async fn digests_not_in(
        &self,
        target: &Store,
        left_behind: &HashSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        let mut lacking = Vec::new();
        let mut theirs: Vec<(String, u64)> = Vec::new();
        let mut their_next = 0;
        let mut their_after = String::new();
        let mut their_end = false;
        let mut after = String::new();
        loop {
            let page = self.inner.index.blobs_after(&after, PAGE).await?;
            let Some((last, _)) = page.last() else {
                return Ok(lacking);
            };
            after = last.clone();
            for (digest, _) in page {
                // Advance the target's walk to the first digest >= this one.
                loop {
                    if their_next == theirs.len() && !their_end {
                        theirs = target.inner.index.blobs_after(&their_after, PAGE).await?;
                        their_next = 0;
                        match theirs.last() {
                            Some((last, _)) => their_after = last.clone(),
                            None => their_end = true,
                        }
                    }
                    match theirs.get(their_next) {
                        Some((theirs, _)) if *theirs < digest => their_next += 1,
                        _ => break,
                    }
                }
                let found = theirs.get(their_next).is_some_and(|(t, _)| *t == digest);
                if !found && !left_behind.contains(&digest) {
                    lacking.push(digest);
                }
            }
        }
    }
}
