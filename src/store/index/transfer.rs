//! Rows as they are, table by table, for `mirror storage migrate`: what each
//! table's columns are, its key, and how a row merges into one already
//! there. Both backends render their own SQL from these descriptions, so a
//! column added to a table is added here once, not in two copies of every
//! statement. Upload sessions are not here: their bytes live in one data
//! dir, so a session cannot move with the rows.

use super::IndexError;

/// How a column reads and binds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Int,
    Text,
    OptText,
    Bytes,
}

/// One column's value. Ordered as the indexes order keys: texts bytewise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
}

impl Value {
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            Value::OptText(text) => text.as_deref(),
            Value::Int(_) | Value::Bytes(_) => None,
        }
    }
}

/// A row: its values in the order of `Table::columns`.
pub(crate) type Row = Vec<Value>;

/// What an import does with a row whose key the target holds already.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Merge {
    /// Immutable rows (a file, a manifest, a link, an audit row): the one
    /// there stays.
    Keep,
    /// The row with the larger value of this column wins (an answer fetched
    /// later, a head further on, a tag confirmed later).
    Newer(&'static str),
    /// A blob: pinned if either is, accessed as recently as either was,
    /// created as early as either was.
    Blob,
}

/// The tables that move, in an order their foreign keys accept: blobs first,
/// then what names a blob, then what names a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Table {
    Blobs,
    GoFiles,
    GoSumdbTiles,
    GoAnswers,
    GoSumdbHeads,
    OciManifests,
    OciManifestBlobs,
    OciTags,
    OciRepoBlobs,
    Audit,
}

use Kind::{Bytes, Int, OptText, Text};

impl Table {
    pub(crate) const ALL: [Table; 10] = [
        Table::Blobs,
        Table::GoFiles,
        Table::GoSumdbTiles,
        Table::GoAnswers,
        Table::GoSumdbHeads,
        Table::OciManifests,
        Table::OciManifestBlobs,
        Table::OciTags,
        Table::OciRepoBlobs,
        Table::Audit,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Blobs => "blobs",
            Table::GoFiles => "go_files",
            Table::GoSumdbTiles => "go_sumdb_tiles",
            Table::GoAnswers => "go_answers",
            Table::GoSumdbHeads => "go_sumdb_heads",
            Table::OciManifests => "oci_manifests",
            Table::OciManifestBlobs => "oci_manifest_blobs",
            Table::OciTags => "oci_tags",
            Table::OciRepoBlobs => "oci_repo_blobs",
            Table::Audit => "audit",
        }
    }

    /// Every column, key columns first.
    pub(crate) fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            Table::Blobs => &[
                ("digest", Text),
                ("size", Int),
                ("created_at", Int),
                ("accessed_at", Int),
                ("hosted", Int),
            ],
            Table::GoFiles => &[
                ("module", Text),
                ("version", Text),
                ("kind", Text),
                ("digest", Text),
                ("size", Int),
                ("created_at", Int),
            ],
            Table::GoSumdbTiles => &[
                ("sumdb", Text),
                ("tile", Text),
                ("digest", Text),
                ("size", Int),
            ],
            Table::GoAnswers => &[
                ("key", Text),
                ("status", Int),
                ("body", Bytes),
                ("fetched_at", Int),
            ],
            Table::GoSumdbHeads => &[("sumdb", Text), ("size", Int), ("note", Bytes)],
            Table::OciManifests => &[
                ("repo", Text),
                ("digest", Text),
                ("media_type", Text),
                ("size", Int),
                ("subject", OptText),
                ("artifact_type", OptText),
                ("annotations", OptText),
                ("created_at", Int),
            ],
            Table::OciManifestBlobs => &[
                ("repo", Text),
                ("digest", Text),
                ("manifest", Text),
                ("size", Int),
            ],
            Table::OciTags => &[
                ("repo", Text),
                ("tag", Text),
                ("digest", Text),
                ("checked_at", Int),
            ],
            Table::OciRepoBlobs => &[("repo", Text), ("digest", Text)],
            Table::Audit => &[
                ("id", Int),
                ("at_ms", Int),
                ("identity", Text),
                ("subject", Text),
                ("serial", OptText),
                ("peer", Text),
                ("protocol", Text),
                ("action", Text),
                ("artifact", Text),
                ("digest", OptText),
                ("outcome", Text),
                ("status", Int),
                ("count", Int),
            ],
        }
    }

    /// How many of the first columns make the primary key.
    pub(crate) fn key_len(self) -> usize {
        match self {
            Table::Blobs | Table::GoAnswers | Table::GoSumdbHeads | Table::Audit => 1,
            Table::GoSumdbTiles | Table::OciManifests | Table::OciTags | Table::OciRepoBlobs => 2,
            Table::GoFiles | Table::OciManifestBlobs => 3,
        }
    }

    pub(crate) fn merge(self) -> Merge {
        match self {
            Table::Blobs => Merge::Blob,
            Table::GoAnswers => Merge::Newer("fetched_at"),
            Table::GoSumdbHeads => Merge::Newer("size"),
            Table::OciTags => Merge::Newer("checked_at"),
            Table::GoFiles
            | Table::GoSumdbTiles
            | Table::OciManifests
            | Table::OciManifestBlobs
            | Table::OciRepoBlobs
            | Table::Audit => Merge::Keep,
        }
    }

    /// The column holding the digest of a blob the row cannot exist without
    /// (its foreign key to `blobs`).
    pub(crate) fn blob_column(self) -> Option<usize> {
        match self {
            Table::Blobs => Some(0),
            Table::OciRepoBlobs => Some(1),
            Table::GoFiles => Some(3),
            Table::GoSumdbTiles => Some(2),
            Table::OciManifests => Some(1),
            Table::GoAnswers
            | Table::GoSumdbHeads
            | Table::OciManifestBlobs
            | Table::OciTags
            | Table::Audit => None,
        }
    }

    /// The (repo, digest) columns naming the manifest the row cannot exist
    /// without (its foreign key to `oci_manifests`).
    pub(crate) fn manifest_columns(self) -> Option<(usize, usize)> {
        match self {
            Table::OciManifestBlobs => Some((0, 2)),
            Table::OciTags => Some((0, 2)),
            _ => None,
        }
    }

    /// Whether `a` and `b`, rows with one key, say the same thing: for an
    /// immutable row every column but when it was made (a replica may have
    /// fetched the same file), for a merged one the key alone (the target may
    /// hold a newer answer or a later access).
    pub(crate) fn same_row(self, a: &[Value], b: &[Value]) -> bool {
        match self.merge() {
            Merge::Keep => self
                .columns()
                .iter()
                .zip(a.iter().zip(b))
                .all(|((name, _), (a, b))| *name == "created_at" || a == b),
            Merge::Newer(_) | Merge::Blob => true,
        }
    }

    /// Rows to read at a time, at most `rows`: few for a table holding
    /// bodies (a checksum database answer may be up to 16 MiB), so a page
    /// never holds much in memory.
    pub(crate) fn page(self, rows: u32) -> u32 {
        if self.columns().iter().any(|(_, kind)| *kind == Kind::Bytes) {
            rows.min(16)
        } else {
            rows
        }
    }

    /// The column list, comma-separated, as SQL names them.
    pub(crate) fn column_list(self) -> String {
        self.columns()
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key column list, comma-separated.
    pub(crate) fn key_list(self) -> String {
        self.columns()[..self.key_len()]
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Copying rows between indexes: read them in key order, page by page, and
/// write them idempotently, so an interrupted copy run again ends the same.
pub(crate) trait TransferIndex {
    async fn count_rows(&self, table: Table) -> Result<u64, IndexError>;

    /// At most `limit` rows in key order, after the key `after` (the key
    /// columns of the last row of the previous page), from the start if `None`.
    async fn export_rows(
        &self,
        table: Table,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Row>, IndexError>;

    /// Upserts `rows` by `table.merge()`, in one transaction.
    async fn import_rows(&self, table: Table, rows: &[Row]) -> Result<(), IndexError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_names_its_key_and_references_within_its_columns() {
        for table in Table::ALL {
            let columns = table.columns();
            assert!(table.key_len() <= columns.len(), "{table:?}");
            if let Some(column) = table.blob_column() {
                assert_eq!(columns[column].0, "digest", "{table:?}");
            }
            if let Some((repo, digest)) = table.manifest_columns() {
                assert_eq!(columns[repo].0, "repo", "{table:?}");
                assert!(
                    matches!(columns[digest].0, "digest" | "manifest"),
                    "{table:?}"
                );
            }
            if let Merge::Newer(column) = table.merge() {
                assert!(columns.iter().any(|(name, _)| *name == column), "{table:?}");
            }
        }
    }
}
