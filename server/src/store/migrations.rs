//! Versioned schema migrations, kept in code. `PRAGMA user_version` holds
//! the number of migrations applied; each runs once, in its own transaction.
//! Never edit a shipped migration: append a new one.

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
];

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
    let known = MIGRATIONS.len() as i64;
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    if current > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known,
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
        tx.commit().map_err(sql)?;
    }
    Ok(())
}
