//! The end of a migration, table by table: the source and the target walked
//! side by side in key order, so every row that could move is found in the
//! target under its key, saying the same thing (`Table::same_row`). Counts
//! alone would pass a target whose rows merely number as many (audit ids a
//! replica had taken already, say).

use super::rows::LeftBehind;
use crate::store::index::transfer::{Row, Table, TransferIndex, Value};
use crate::store::{Store, StoreError};

const PAGE: u32 = 1000;
/// Keys of rows not found named in the report, per table; the rest counted.
const NAMED: usize = 20;

/// What the comparison of one table found.
#[derive(Default)]
pub(super) struct Compared {
    /// Source rows the target has no row for.
    pub(super) lacking: u64,
    /// Source rows the target holds otherwise under the same key.
    pub(super) differing: u64,
    /// The keys of the first of those, as text.
    pub(super) named: Vec<String>,
}

/// One side's rows in key order, a page at a time.
struct Walk<'a> {
    store: &'a Store,
    table: Table,
    page: Vec<Row>,
    next: usize,
    after: Option<Vec<Value>>,
    done: bool,
}

impl<'a> Walk<'a> {
    fn new(store: &'a Store, table: Table) -> Walk<'a> {
        Walk {
            store,
            table,
            page: Vec::new(),
            next: 0,
            after: None,
            done: false,
        }
    }

    async fn peek(&mut self) -> Result<Option<&Row>, StoreError> {
        if self.next == self.page.len() && !self.done {
            self.page = self
                .store
                .inner
                .index
                .export_rows(self.table, self.after.as_deref(), self.table.page(PAGE))
                .await?;
            self.next = 0;
            match self.page.last() {
                Some(last) => self.after = Some(last[..self.table.key_len()].to_vec()),
                None => self.done = true,
            }
        }
        Ok(self.page.get(self.next))
    }
}

fn key_text(key: &[Value]) -> String {
    key.iter()
        .map(|value| match value {
            Value::Int(int) => int.to_string(),
            Value::Text(text) => text.clone(),
            Value::OptText(text) => text.clone().unwrap_or_default(),
            Value::Bytes(bytes) => hex::encode(bytes),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Store {
    /// Every row of `table` here that `left` does not hold back, looked up in `target`.
    pub(super) async fn compare_table(
        &self,
        target: &Store,
        table: Table,
        left: &LeftBehind<'_>,
    ) -> Result<Compared, StoreError> {
        let keys = table.key_len();
        let mut compared = Compared::default();
        let mut ours = Walk::new(self, table);
        let mut theirs = Walk::new(target, table);
        while let Some(row) = ours.peek().await?.cloned() {
            ours.next += 1;
            if !left.keeps(table, &row) {
                continue;
            }
            let key = &row[..keys];
            let found = loop {
                match theirs.peek().await?.map(|their| their[..keys].cmp(key)) {
                    Some(std::cmp::Ordering::Less) => theirs.next += 1,
                    Some(std::cmp::Ordering::Equal) => break theirs.page.get(theirs.next),
                    _ => break None,
                }
            };
            let differs = match found {
                None => {
                    compared.lacking += 1;
                    true
                }
                Some(their) if !table.same_row(&row, their) => {
                    compared.differing += 1;
                    true
                }
                Some(_) => false,
            };
            if differs && compared.named.len() < NAMED {
                compared.named.push(key_text(key));
            }
        }
        Ok(compared)
    }
}
