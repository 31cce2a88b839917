//! Rows table by table for `mirror storage migrate`, in SQLite's dialect.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::SqliteIndex;
use crate::store::index::IndexError;
use crate::store::index::transfer::{Kind, Merge, Row, Table, TransferIndex, Value};

/// Rows per INSERT: 13 columns at most, far below SQLite's parameter limit.
const INSERT_ROWS: usize = 250;

fn push_value(into: &mut sqlx::query_builder::Separated<'_, Sqlite, &str>, value: &Value) {
    match value {
        Value::Int(int) => into.push_bind(*int),
        Value::Text(text) => into.push_bind(text.clone()),
        Value::OptText(text) => into.push_bind(text.clone()),
        Value::Bytes(bytes) => into.push_bind(bytes.clone()),
    };
}

fn read_row(table: Table, row: &SqliteRow) -> Result<Row, IndexError> {
    table
        .columns()
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Int => Value::Int(row.try_get(i)?),
                Kind::Text => Value::Text(row.try_get(i)?),
                Kind::OptText => Value::OptText(row.try_get(i)?),
                Kind::Bytes => Value::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

/// The `ON CONFLICT` clause that makes an import idempotent.
fn on_conflict(table: Table) -> String {
    let name = table.name();
    let keys = table.key_list();
    let others = || table.columns()[table.key_len()..].iter().map(|(c, _)| *c);
    match table.merge() {
        Merge::Keep => format!(" ON CONFLICT ({keys}) DO NOTHING"),
        Merge::Newer(column) => format!(
            " ON CONFLICT ({keys}) DO UPDATE SET {} WHERE excluded.{column} > {name}.{column}",
            others()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Merge::Blob => format!(
            " ON CONFLICT ({keys}) DO UPDATE SET hosted = MAX({name}.hosted, excluded.hosted), \
             accessed_at = MAX({name}.accessed_at, excluded.accessed_at), \
             created_at = MIN({name}.created_at, excluded.created_at)"
        ),
    }
}

impl TransferIndex for SqliteIndex {
    async fn count_rows(&self, table: Table) -> Result<u64, IndexError> {
        // The name is one of `Table`'s constants, never input.
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", table.name()));
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&self.read).await?;
        Ok(count as u64)
    }

    async fn export_rows(
        &self,
        table: Table,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Row>, IndexError> {
        let keys = table.key_list();
        let mut select: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {} FROM {}",
            table.column_list(),
            table.name()
        ));
        if let Some(after) = after {
            select.push(format!(" WHERE ({keys}) > ("));
            let mut values = select.separated(", ");
            for value in after {
                push_value(&mut values, value);
            }
            select.push(")");
        }
        select.push(format!(" ORDER BY {keys} LIMIT "));
        select.push_bind(i64::from(limit));
        let rows = select.build().fetch_all(&self.read).await?;
        rows.iter().map(|row| read_row(table, row)).collect()
    }

    async fn import_rows(&self, table: Table, rows: &[Row]) -> Result<(), IndexError> {
        let mut tx = self.write.begin().await?;
        for chunk in rows.chunks(INSERT_ROWS) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO {} ({}) ",
                table.name(),
                table.column_list()
            ));
            insert.push_values(chunk, |mut into, row| {
                for value in row {
                    push_value(&mut into, value);
                }
            });
            insert.push(on_conflict(table));
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
