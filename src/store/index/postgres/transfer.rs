//! Rows table by table for `mirror storage migrate`, in PostgreSQL's dialect; audit rows keep their ids (`OVERRIDING SYSTEM VALUE`), so a second run finds them, and the id sequence is moved past them.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row as _};

use super::PgIndex;
use crate::store::index::IndexError;
use crate::store::index::transfer::{Kind, Merge, Row, Table, TransferIndex, Value};

/// Rows per INSERT: 13 columns at most, far below PostgreSQL's 65535 parameters.
const INSERT_ROWS: usize = 250;

fn push_value(into: &mut sqlx::query_builder::Separated<'_, Postgres, &str>, value: &Value) {
    match value {
        Value::Int(int) => into.push_bind(*int),
        Value::Text(text) => into.push_bind(text.clone()),
        Value::OptText(text) => into.push_bind(text.clone()),
        Value::Bytes(bytes) => into.push_bind(bytes.clone()),
    };
}

fn read_row(table: Table, row: &PgRow) -> Result<Row, IndexError> {
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
            " ON CONFLICT ({keys}) DO UPDATE SET hosted = GREATEST({name}.hosted, excluded.hosted), \
             accessed_at = GREATEST({name}.accessed_at, excluded.accessed_at), \
             created_at = LEAST({name}.created_at, excluded.created_at)"
        ),
    }
}

impl TransferIndex for PgIndex {
    async fn count_rows(&self, table: Table) -> Result<u64, IndexError> {
        // The name is one of `Table`'s constants, never input.
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", table.name()));
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
        Ok(count as u64)
    }

    async fn export_rows(
        &self,
        table: Table,
        after: Option<&[Value]>,
        limit: u32,
    ) -> Result<Vec<Row>, IndexError> {
        let keys = table.key_list();
        let mut select: QueryBuilder<Postgres> = QueryBuilder::new(format!(
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
        let rows = select.build().fetch_all(&self.pool).await?;
        rows.iter().map(|row| read_row(table, row)).collect()
    }

    async fn import_rows(&self, table: Table, rows: &[Row]) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(INSERT_ROWS) {
            // An audit id is the row's identity here: kept, so a second run
            // finds the row it copied before.
            let overriding = if table == Table::Audit {
                "OVERRIDING SYSTEM VALUE "
            } else {
                ""
            };
            let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(format!(
                "INSERT INTO {} ({}) {overriding}",
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
        if table == Table::Audit {
            // New rows written by the replicas take ids after the copied ones.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('audit', 'id'), \
                 (SELECT COALESCE(MAX(id), 0) + 1 FROM audit), false)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
