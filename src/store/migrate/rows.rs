//! The rows of a migration, table by table in foreign-key order, a page at a
//! time, each page upserted in one transaction. A row naming a blob that was
//! left behind (corrupt, missing) stays behind too, and so does a row naming
//! a manifest that did: the target never holds a reference to nothing.

use std::collections::HashSet;

use super::check::Compared;
use super::{MigrateProgress, TableReport};
use crate::store::index::transfer::{Row, Table, TransferIndex, Value};
use crate::store::{Store, StoreError};

/// Rows read and written at a time.
const PAGE: u32 = 500;

/// What a table's rows may not name, as the run has found so far.
pub(super) struct LeftBehind<'a> {
    blobs: &'a HashSet<String>,
    /// (repo, digest) of manifests left behind.
    manifests: HashSet<(String, String)>,
}

impl LeftBehind<'_> {
    pub(super) fn keeps(&self, table: Table, row: &Row) -> bool {
        let text = |column: usize| row.get(column).and_then(Value::text).unwrap_or_default();
        if let Some(column) = table.blob_column()
            && self.blobs.contains(text(column))
        {
            return false;
        }
        if let Some((repo, digest)) = table.manifest_columns() {
            let key = (text(repo).to_owned(), text(digest).to_owned());
            return !self.manifests.contains(&key);
        }
        true
    }
}

impl Store {
    pub(super) async fn copy_rows(
        &self,
        target: &Store,
        blobs: &HashSet<String>,
        dry_run: bool,
        progress: &dyn MigrateProgress,
    ) -> Result<Vec<TableReport>, StoreError> {
        let mut left = LeftBehind {
            blobs,
            manifests: HashSet::new(),
        };
        let mut reports = Vec::new();
        for table in Table::ALL {
            let source = self.inner.index.count_rows(table).await?;
            let (skipped, compared) = if dry_run {
                (0, Compared::default())
            } else {
                let skipped = self.copy_table(target, table, &mut left, progress).await?;
                (skipped, self.compare_table(target, table, &left).await?)
            };
            reports.push(TableReport {
                table: table.name(),
                source,
                skipped,
                target: target.inner.index.count_rows(table).await?,
                lacking: compared.lacking,
                differing: compared.differing,
                named: compared.named,
            });
        }
        Ok(reports)
    }

    /// Copies one table; how many rows stayed behind.
    async fn copy_table(
        &self,
        target: &Store,
        table: Table,
        left: &mut LeftBehind<'_>,
        progress: &dyn MigrateProgress,
    ) -> Result<u64, StoreError> {
        let mut skipped = 0;
        let mut after: Option<Vec<Value>> = None;
        loop {
            let page = self
                .inner
                .index
                .export_rows(table, after.as_deref(), table.page(PAGE))
                .await?;
            let Some(last) = page.last() else {
                return Ok(skipped);
            };
            after = Some(last[..table.key_len()].to_vec());
            let (keep, drop): (Vec<Row>, Vec<Row>) =
                page.into_iter().partition(|row| left.keeps(table, row));
            skipped += drop.len() as u64;
            if table == Table::OciManifests {
                for row in &drop {
                    let text = |column: usize| {
                        row.get(column)
                            .and_then(Value::text)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    left.manifests.insert((text(0), text(1)));
                }
            }
            if !keep.is_empty() {
                target.inner.index.import_rows(table, &keep).await?;
            }
            progress.rows(table.name(), keep.len() as u64);
        }
    }
}
