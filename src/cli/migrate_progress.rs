//! What `mirror storage migrate` shows while it runs, on stderr: a bar of
//! bytes and blobs when stderr is a terminal, else a plain line every few
//! seconds (a log or CI keeps a record without control characters).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bytesize::ByteSize;

use crate::store::{BlobOutcome, MigrateProgress};

/// How often a plain line is written.
const EVERY: Duration = Duration::from_secs(2);

pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    blobs: Cell<(u64, u64)>,
    bytes: Cell<(u64, u64)>,
    rows: Cell<u64>,
    last_line: Cell<Instant>,
    dry_run: bool,
}

impl Progress {
    pub(super) fn new(dry_run: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            indicatif::ProgressBar::new(0)
                .with_style(style)
                .with_prefix("migrate")
        });
        Progress {
            bar,
            blobs: Cell::new((0, 0)),
            bytes: Cell::new((0, 0)),
            rows: Cell::new(0),
            last_line: Cell::new(Instant::now()),
            dry_run,
        }
    }

    pub(super) fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.line(),
        }
    }

    fn line(&self) {
        let (blobs, total) = self.blobs.get();
        let (bytes, total_bytes) = self.bytes.get();
        eprintln!(
            "migrate: {blobs}/{total} blobs, {}/{}, {} rows",
            ByteSize::b(bytes),
            ByteSize::b(total_bytes),
            self.rows.get()
        );
        self.last_line.set(Instant::now());
    }

    fn moved(&self) {
        let (blobs, total) = self.blobs.get();
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.bytes.get().0);
                bar.set_message(format!("{blobs}/{total} blobs, {} rows", self.rows.get()));
            }
            None if self.last_line.get().elapsed() >= EVERY => self.line(),
            None => {}
        }
    }
}

impl MigrateProgress for Progress {
    fn planned(&self, blobs: u64, bytes: u64) {
        self.blobs.set((0, blobs));
        self.bytes.set((0, bytes));
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
        self.moved();
    }

    fn read(&self, bytes: u64) {
        let (done, total) = self.bytes.get();
        self.bytes.set((done + bytes, total));
        self.moved();
    }

    fn blob(&self, digest: &str, size: u64, outcome: BlobOutcome) {
        let (done, total) = self.blobs.get();
        self.blobs.set((done + 1, total));
        // A copied blob's bytes were counted as they were read; the others' now.
        if outcome != BlobOutcome::Copied {
            let (bytes, total) = self.bytes.get();
            self.bytes.set((bytes + size, total));
        }
        if self.dry_run && outcome == BlobOutcome::WouldCopy {
            let text = format!("would copy {digest} ({})", ByteSize::b(size));
            match &self.bar {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            }
        }
        self.moved();
    }

    fn rows(&self, _table: &'static str, rows: u64) {
        self.rows.set(self.rows.get() + rows);
        self.moved();
    }
}
