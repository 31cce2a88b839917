//! `mirror storage migrate`: a single node's rows and blobs copied into
//! another store (a cluster's PostgreSQL and bucket), verified and resumable.
//! Blobs go first, each re-hashed while it is read and committed only if its
//! digest holds; then the rows, table by table in foreign-key order, upserted
//! so a second run (or one after a kill) ends the same and copies nothing
//! twice; then each table is compared row by row. Upload sessions in progress stay
//! behind: their bytes live in the source's data dir.
//! Owns the copy; what the operator sees (a bar, lines) is the caller's.

mod check;
mod copy;
mod rows;
mod staging;

use std::collections::HashSet;

use super::index::UploadIndex;
use super::{Digest, Store, StoreError};

/// What a run does.
#[derive(Clone, Copy, Debug, Default)]
pub struct MigrateOptions {
    /// Lists what would be copied; writes nothing.
    pub dry_run: bool,
    /// Stops after copying this many blobs, before any row (an interrupted
    /// run, on purpose: a test or a migration done in slices).
    pub blob_limit: Option<u64>,
}

/// What became of one source blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    Copied,
    /// The target has it already: not read, not sent.
    Present,
    /// `--dry-run`: would be copied.
    WouldCopy,
    /// Its bytes do not hash to its digest (or are the wrong size, or cannot
    /// be read): never copied.
    Corrupt,
    /// Indexed but its file is gone.
    Missing,
}

/// Told as the run goes, for a progress bar.
pub trait MigrateProgress {
    /// The source holds `blobs` blobs of `bytes` bytes in all.
    fn planned(&self, blobs: u64, bytes: u64);
    /// `bytes` more bytes of the current blob were read.
    fn read(&self, bytes: u64);
    /// A blob is done with.
    fn blob(&self, digest: &str, size: u64, outcome: BlobOutcome);
    /// `rows` more rows of `table` were written.
    fn rows(&self, table: &'static str, rows: u64);
}

/// One table's rows on both sides after the run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableReport {
    pub table: &'static str,
    pub source: u64,
    /// Rows left behind because the blob or manifest they name was.
    pub skipped: u64,
    pub target: u64,
    /// Rows that could move and have no row under their key in the target.
    pub lacking: u64,
    /// Rows whose key the target holds with other contents (an audit id
    /// taken by another row, a file with another digest).
    pub differing: u64,
    /// The keys of the first lacking or differing rows.
    pub named: Vec<String>,
}

impl TableReport {
    /// Every row that could move is in the target as it is here. More rows
    /// there are no error: replicas may have written into it already.
    pub fn verified(&self) -> bool {
        self.lacking == 0 && self.differing == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrateReport {
    pub blobs: u64,
    pub bytes: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub present: u64,
    pub would_copy: u64,
    pub corrupt: Vec<String>,
    pub missing: Vec<String>,
    /// `blob_limit` was reached: no row was copied and nothing compared.
    pub stopped: bool,
    pub tables: Vec<TableReport>,
    /// Upload sessions in progress, which are not migrated.
    pub uploads_left: u64,
}

impl MigrateReport {
    /// Everything that could move did, and the sides agree.
    pub fn is_complete(&self) -> bool {
        !self.stopped
            && self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.tables.iter().all(TableReport::verified)
    }
}

impl Store {
    /// Copies this store's blobs and rows into `target`. Errors are the
    /// target's or the index's; a bad source blob is only reported.
    pub async fn migrate_to(
        &self,
        target: &Store,
        options: MigrateOptions,
        progress: &dyn MigrateProgress,
    ) -> Result<MigrateReport, StoreError> {
        let mut report = MigrateReport {
            uploads_left: self.inner.index.upload_sessions().await?.len() as u64,
            ..MigrateReport::default()
        };
        let _staging = if options.dry_run {
            None
        } else {
            Some(target.claim_staging()?)
        };
        let totals = self.totals().await?;
        (report.blobs, report.bytes) = (totals.blobs, totals.bytes);
        progress.planned(totals.blobs, totals.bytes);
        self.copy_blobs(target, options, progress, &mut report)
            .await?;
        if report.stopped {
            return Ok(report);
        }
        let left_behind: HashSet<String> = report
            .corrupt
            .iter()
            .chain(&report.missing)
            .cloned()
            .collect();
        report.tables = self
            .copy_rows(target, &left_behind, options.dry_run, progress)
            .await?;
        Ok(report)
    }

    /// Whether `digest` text names a blob the target may be given.
    fn parse_digest(text: &str) -> Option<Digest> {
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;

    impl MigrateProgress for Quiet {
        fn planned(&self, _: u64, _: u64) {}
        fn read(&self, _: u64) {}
        fn blob(&self, _: &str, _: u64, _: BlobOutcome) {}
        fn rows(&self, _: &'static str, _: u64) {}
    }

    #[tokio::test]
    async fn a_second_run_copies_nothing_and_a_corrupt_blob_stays_behind_with_its_rows() {
        let (from_dir, into_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = Store::open(from_dir.path()).await.unwrap();
        let into = Store::open(into_dir.path()).await.unwrap();
        let good = from.put_bytes(b"good", true).await.unwrap();
        let bad = from.put_bytes(b"will be damaged", false).await.unwrap();
        std::fs::write(from.blob_path(&bad), b"will be damageD").unwrap();
        let options = MigrateOptions::default();

        let first = from.migrate_to(&into, options, &Quiet).await.unwrap();
        assert_eq!((first.copied, first.present), (1, 0));
        assert_eq!(first.corrupt, vec![bad.to_string()]);
        assert!(!first.is_complete(), "a corrupt blob fails the run");
        let blobs = &first.tables[0];
        assert_eq!((blobs.source, blobs.target, blobs.skipped), (2, 1, 1));
        assert!(blobs.verified());
        assert!(into.has_blob(&bad).await.unwrap().is_none());
        assert_eq!(into.has_blob(&good).await.unwrap(), Some(4));

        let second = from.migrate_to(&into, options, &Quiet).await.unwrap();
        assert_eq!((second.copied, second.present), (0, 1));
        assert_eq!(second.tables, first.tables);
    }

    #[tokio::test]
    async fn a_run_stopped_at_its_limit_copies_no_row_and_the_next_one_finishes() {
        let (from_dir, into_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = Store::open(from_dir.path()).await.unwrap();
        let into = Store::open(into_dir.path()).await.unwrap();
        for n in 0..3u8 {
            from.put_bytes(&[n; 10], false).await.unwrap();
        }
        let limited = MigrateOptions {
            blob_limit: Some(2),
            ..MigrateOptions::default()
        };
        let first = from.migrate_to(&into, limited, &Quiet).await.unwrap();
        assert!(first.stopped && first.tables.is_empty());
        assert_eq!(into.totals().await.unwrap().blobs, 0);
        let second = from
            .migrate_to(&into, MigrateOptions::default(), &Quiet)
            .await
            .unwrap();
        assert_eq!((second.copied, second.present), (1, 2));
        assert!(second.is_complete(), "{second:?}");
        assert_eq!(into.totals().await.unwrap().blobs, 3);
    }

    #[tokio::test]
    async fn a_killed_runs_staged_files_go_and_two_migrations_never_stage_in_one_dir() {
        let dir = tempfile::tempdir().unwrap();
        let target = Store::open(dir.path()).await.unwrap();
        let left = dir.path().join("tmp/migrate-123-456-0");
        let fill = dir.path().join("tmp/fill-123-456-0");
        std::fs::write(&left, b"half a blob").unwrap();
        std::fs::write(&fill, b"a fill in progress").unwrap();
        let held = target.claim_staging().unwrap();
        assert!(!left.exists(), "the killed migration's file goes");
        assert!(fill.exists(), "what is not a migration's stays");
        assert!(target.claim_staging().is_err(), "one migration at a time");
        drop(held);
        assert!(target.claim_staging().is_ok());
    }

    fn audit_row(subject: &str) -> crate::store::AuditRecord {
        crate::store::AuditRecord {
            at_ms: 1,
            identity: "user".into(),
            subject: subject.into(),
            serial: None,
            peer: "127.0.0.1:1".into(),
            protocol: "oci".into(),
            action: "read".into(),
            artifact: "team/app:1.0".into(),
            digest: None,
            outcome: "hit".into(),
            status: 200,
            count: 1,
            replica: None,
        }
    }

    #[tokio::test]
    async fn audit_rows_whose_ids_the_target_gave_to_others_fail_the_comparison() {
        use crate::store::index::AuditIndex;
        let (from_dir, into_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = Store::open(from_dir.path()).await.unwrap();
        let into = Store::open(into_dir.path()).await.unwrap();
        let mut ours = vec![audit_row("alice"), audit_row("bob")];
        from.inner.index.write_audit(&mut ours).await.unwrap();
        let mut theirs = vec![audit_row("carol"), audit_row("dave")];
        into.inner.index.write_audit(&mut theirs).await.unwrap();

        let report = from
            .migrate_to(&into, MigrateOptions::default(), &Quiet)
            .await
            .unwrap();
        let audit = report.tables.iter().find(|t| t.table == "audit").unwrap();
        assert_eq!((audit.source, audit.target), (2, 2), "as many rows");
        assert_eq!((audit.differing, audit.named.len()), (2, 2));
        assert!(!report.is_complete());
    }

    #[tokio::test]
    async fn tables_longer_than_a_page_move_whole_with_composite_keys() {
        use crate::store::index::{AuditIndex, GoIndex, OciIndex};
        let (from_dir, into_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = Store::open(from_dir.path()).await.unwrap();
        let into = Store::open(into_dir.path()).await.unwrap();
        let index = &from.inner.index;
        for n in 0..300u32 {
            let digest = from.put_bytes(&n.to_be_bytes(), false).await.unwrap();
            for repo in ["a/app", "b/app"] {
                index.link_blob(repo, &digest).await.unwrap();
            }
        }
        for n in 0..40 {
            let key = format!("list example.com/m{n}");
            index.put_go_answer(&key, 200, b"v1.0.0\n").await.unwrap();
        }
        let mut audit: Vec<_> = (0..1200).map(|_| audit_row("alice")).collect();
        index.write_audit(&mut audit).await.unwrap();

        let report = from
            .migrate_to(&into, MigrateOptions::default(), &Quiet)
            .await
            .unwrap();
        assert!(report.is_complete(), "{report:?}");
        for (table, rows) in [
            ("blobs", 300),
            ("oci_repo_blobs", 600),
            ("go_answers", 40),
            ("audit", 1200),
        ] {
            let found = report.tables.iter().find(|t| t.table == table).unwrap();
            assert_eq!((found.source, found.target), (rows, rows), "{table}");
        }
    }
}
