//! Versioned schema migrations, kept in code. `PRAGMA user_version` holds
//! the number of migrations applied; each runs once, in its own transaction.
//! Never edit a shipped migration: append a new one.
//!
//! `PRAGMA application_id` says the file is rollcall's: it is stamped on a
//! new database and on an older one in the transaction of its next
//! migration, and a database stamped by something else is never touched.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: nodes. `node` and `report` hold the JSON of model::Node and
    // model::Report; the other columns repeat what queries filter on.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        online INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        report TEXT
    ) STRICT;
    CREATE INDEX nodes_role ON nodes(role);",
    // 2: actions agents ran for the server: the latest result per action id
    // (JSON of model::ActionResult), stored before the agent is told so.
    "CREATE TABLE actions (
        id TEXT PRIMARY KEY NOT NULL,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        result TEXT NOT NULL
    ) STRICT;
    CREATE INDEX actions_node ON actions(node);",
    // 3: campaigns (JSON of campaign::record::Campaign), one run per node
    // and campaign (JSON of NodeRun), and the append-only audit log.
    "CREATE TABLE campaigns (
        id TEXT PRIMARY KEY NOT NULL,
        created_ms INTEGER NOT NULL,
        phase TEXT NOT NULL,
        campaign TEXT NOT NULL
    ) STRICT;
    CREATE TABLE campaign_nodes (
        campaign TEXT NOT NULL REFERENCES campaigns(id),
        node TEXT NOT NULL,
        step TEXT NOT NULL,
        run TEXT NOT NULL,
        PRIMARY KEY (campaign, node)
    ) STRICT;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        entry TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_campaign ON audit(campaign, seq);",
    // 4: a node's report as one row per section, each written only when it
    // changes, so that a node's record (written when it comes and goes) and
    // a changed container no longer rewrite the whole report. Metrics and
    // network counters are not kept (they are not durable; the next report
    // brings them). `data` holds the JSON of the model section.
    "CREATE TABLE node_sections (
        node TEXT NOT NULL,
        section TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (node, section)
    ) STRICT;
    INSERT INTO node_sections (node, section, data)
        SELECT name, key, value FROM nodes, json_each(nodes.report)
        WHERE nodes.report IS NOT NULL
          AND key IN ('host', 'containers', 'disks', 'reboot', 'updates')
          AND type = 'object';
    ALTER TABLE nodes DROP COLUMN report;",
    // 5: rows that could not be read at startup, moved aside so that one
    // bad row never stops the server and an operator can still look at it.
    // `source` is the table, `key` the node or action id, `data` the value
    // exactly as it was (any type: it may not even be text).
    "CREATE TABLE quarantine (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        section TEXT NOT NULL,
        data ANY,
        error TEXT NOT NULL
    ) STRICT;",
    // 6: one row the writer rewrites while the store fails, to learn when
    // writes succeed again (a full disk) with nothing else to write.
    "CREATE TABLE probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at_ms INTEGER NOT NULL
    ) STRICT;",
    // 7: the audit of operator actions beyond campaigns (`audit.rs`): who
    // (certificate name and role), what, to what. Append-only; `seq` is
    // the order of recording and the key pages are cut at.
    "CREATE TABLE operator_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        who TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;",
    // 8: revoked certificates,
    // one row per serial (lowercase hex), never changed once written: the
    // first revocation of a serial stands. `identity` is the URI the
    // certificate carried ('' when only its serial was known), `revoked_by` the
    // admin's URI or the offline command. `seq` orders them for the
    // running server's poll.
    "CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        serial TEXT NOT NULL UNIQUE,
        identity TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        revoked_by TEXT NOT NULL
    ) STRICT;",
    // 9: every certificate the server signed (renewals), so that revoking
    // an agent by name finds the certificates it got by renewal too.
    // `serial` is lowercase hex as in `revocations`; `identity` the URI
    // the certificate carries.
    "CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        not_after_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX certificates_identity ON certificates (identity);",
];

/// `PRAGMA application_id` of a rollcall database: "RCLL".
pub(super) const APPLICATION_ID: i32 = i32::from_be_bytes(*b"RCLL");

/// The schema versions this binary can open: 0 (new) to the last migration.
pub(super) fn known() -> i64 {
    MIGRATIONS.len() as i64
}

/// Refuses, before anything is written to it, a database that is not
/// rollcall's or that this binary does not know how to read.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sql)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            why: format!("its application_id is {app_id:#010x}, not rollcall's"),
        });
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if !(0..=known()).contains(&version) {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: version,
            known: known(),
        });
    }
    if app_id == APPLICATION_ID {
        return Ok(());
    }
    // Not stamped: a new file, or one from before the stamp (which has the
    // nodes table of migration 1). Anything else was made by someone else.
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
        .map_err(sql)?;
    let ours = match version {
        0 => tables.is_empty(),
        _ => tables.iter().any(|t| t == "nodes"),
    };
    if ours {
        Ok(())
    } else {
        Err(StoreError::Foreign {
            path: path.to_owned(),
            why: format!(
                "it has schema version {version} and tables {} but no rollcall schema",
                if tables.is_empty() {
                    "none".to_owned()
                } else {
                    tables.join(", ")
                }
            ),
        })
    }
}

pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    apply_up_to(conn, path, MIGRATIONS.len())
}

/// Applies the migrations up to version `last` (tests build old databases).
pub(super) fn apply_up_to(
    conn: &mut Connection,
    path: &Path,
    last: usize,
) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if !(0..=known()).contains(&current) {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: current,
            known: known(),
        });
    }
    for (i, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .take(last)
        .skip(current as usize)
    {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(migration).map_err(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}
