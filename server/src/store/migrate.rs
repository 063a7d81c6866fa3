//! `store migrate`: copies an installation's SQLite database into an empty
//! PostgreSQL database, table by table and row by row, in one PostgreSQL
//! transaction that is committed only when every count matches. Audit,
//! operator audit and revocation numbers (`seq`) are kept, so that pages
//! and polls go on where they were.

use super::pg::{PgStore, Target, pg_error};
use super::{Store, StoreError};

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    /// An SQLite integer (0 or 1) that PostgreSQL keeps as a boolean.
    Bool,
}

/// Every table with data, in an order that keeps foreign keys whole, with
/// its columns; `seq` columns are copied as they are.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "nodes",
        &[
            ("name", Kind::Text),
            ("role", Kind::Text),
            ("online", Kind::Bool),
            ("last_seen_ms", Kind::Int),
            ("node", Kind::Text),
        ],
    ),
    (
        "node_sections",
        &[
            ("node", Kind::Text),
            ("section", Kind::Text),
            ("data", Kind::Text),
        ],
    ),
    (
        "actions",
        &[
            ("id", Kind::Text),
            ("node", Kind::Text),
            ("state", Kind::Text),
            ("updated_ms", Kind::Int),
            ("result", Kind::Text),
        ],
    ),
    (
        "campaigns",
        &[
            ("id", Kind::Text),
            ("created_ms", Kind::Int),
            ("phase", Kind::Text),
            ("campaign", Kind::Text),
        ],
    ),
    (
        "campaign_nodes",
        &[
            ("campaign", Kind::Text),
            ("node", Kind::Text),
            ("step", Kind::Text),
            ("run", Kind::Text),
        ],
    ),
    (
        "audit",
        &[
            ("seq", Kind::Int),
            ("campaign", Kind::Text),
            ("at_ms", Kind::Int),
            ("entry", Kind::Text),
        ],
    ),
    (
        "operator_audit",
        &[
            ("seq", Kind::Int),
            ("at_ms", Kind::Int),
            ("who", Kind::Text),
            ("role", Kind::Text),
            ("action", Kind::Text),
            ("target", Kind::Text),
            ("detail", Kind::Text),
        ],
    ),
    (
        "revocations",
        &[
            ("seq", Kind::Int),
            ("serial", Kind::Text),
            ("identity", Kind::Text),
            ("reason", Kind::Text),
            ("at_ms", Kind::Int),
            ("revoked_by", Kind::Text),
        ],
    ),
    (
        "certificates",
        &[
            ("serial", Kind::Text),
            ("identity", Kind::Text),
            ("issued_ms", Kind::Int),
            ("not_after_ms", Kind::Int),
        ],
    ),
];

/// What was copied: rows per table, and the SQLite quarantine rows that
/// were not (they were never part of the fleet).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub tables: Vec<(&'static str, u64)>,
    pub quarantined_left: u64,
}

enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl Value {
    fn as_sql(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Value::Text(v) => v,
            Value::Int(v) => v,
            Value::Bool(v) => v,
        }
    }
}

/// Copies `from` (an open SQLite store) into `to`, which must hold no
/// fleet and no leader. Blocking.
pub fn copy(from: &Store, to: &Target) -> Result<Copied, StoreError> {
    let pg = PgStore::open(to, crate::replica::Fence::unfenced())?;
    drop(pg); // the schema is made; the copy uses a connection of its own
    let mut client = to.connect("rollcall-migrate", std::time::Duration::from_secs(30))?;
    let err = |e| pg_error(to, e);
    let mut tx = client.transaction().map_err(err)?;
    let mut held = Vec::new();
    for (table, _) in TABLES.iter().chain([&("leader", &[][..])]) {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(err)?
            .get(0);
        if n > 0 {
            held.push(format!("{table}: {n}"));
        }
    }
    if !held.is_empty() {
        return Err(StoreError::Config(format!(
            "{} is not empty ({}): migrate into an empty database, never into one replicas already use",
            to.shown(),
            held.join(", ")
        )));
    }
    let sqlite = |source| StoreError::Sqlite {
        path: from.path().to_owned(),
        source,
    };
    let mut copied = Copied::default();
    for (table, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ))
            .map_err(err)?;
        let mut stmt = from
            .conn
            .prepare(&format!(
                "SELECT rowid, {} FROM {table} ORDER BY rowid",
                names.join(", ")
            ))
            .map_err(sqlite)?;
        let mut rows = stmt.query([]).map_err(sqlite)?;
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(sqlite)? {
            let rowid: i64 = row.get(0).map_err(sqlite)?;
            let mut values = Vec::with_capacity(columns.len());
            for (i, (column, kind)) in columns.iter().enumerate() {
                let read = match kind {
                    Kind::Text => row
                        .get::<_, String>(i + 1)
                        .map(|s| Value::Text(s.replace('\0', ""))),
                    Kind::Int => row.get::<_, i64>(i + 1).map(Value::Int),
                    Kind::Bool => row.get::<_, i64>(i + 1).map(|v| Value::Bool(v != 0)),
                };
                values.push(read.map_err(|e| {
                    StoreError::Config(format!(
                        "{}: row {rowid} of table {table} has a {column} that cannot be read ({e}); start rollcall-server once on this data_dir (it sets unreadable rows aside), then migrate again",
                        from.path().display()
                    ))
                })?);
            }
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                values.iter().map(Value::as_sql).collect();
            tx.execute(&insert, &params).map_err(err)?;
            n += 1;
        }
        if names.contains(&"seq") {
            // The next line written in PostgreSQL follows the last copied.
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'seq'), GREATEST((SELECT max(seq) FROM {table}), 1), (SELECT max(seq) FROM {table}) IS NOT NULL)"
                ),
                &[],
            )
            .map_err(err)?;
        }
        let landed: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(err)?
            .get(0);
        if u64::try_from(landed).ok() != Some(n) {
            return Err(StoreError::Config(format!(
                "table {table}: {n} rows read but {landed} in PostgreSQL; nothing was committed"
            )));
        }
        copied.tables.push((table, n));
    }
    copied.quarantined_left = from
        .conn
        .query_row("SELECT count(*) FROM quarantine", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sqlite)?
        .try_into()
        .unwrap_or(0);
    tx.commit().map_err(err)?;
    Ok(copied)
}
