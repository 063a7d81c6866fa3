//! PostgreSQL's schema: the same tables as SQLite's (at SQLite's version
//! 9), typed for PostgreSQL, plus the `leader` lease row. Versioned in
//! `rollcall_schema`; each migration runs once, in its own transaction,
//! under an advisory transaction lock so that replicas starting together
//! migrate once. Never edit a shipped migration: append a new one.

use postgres::Client;

use super::{Target, pg_error};
use crate::store::StoreError;

/// Picked once: replicas that start together wait for each other here.
const MIGRATION_LOCK: i64 = 0x52_43_4c_4c_4d_49_47; // "RCLLMIG"

const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite has at its version 9 but the quarantine (rows
    // PostgreSQL stored typed are read back), and the lease row: one
    // holder (a process), the URL its followers name, the fencing epoch
    // (raised at every change of holder) and when the lease ends by
    // PostgreSQL's clock.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        online BOOLEAN NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX nodes_role ON nodes (role);
    CREATE TABLE node_sections (
        node TEXT NOT NULL,
        section TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (node, section)
    );
    CREATE TABLE actions (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX actions_node ON actions (node);
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        created_ms BIGINT NOT NULL,
        phase TEXT NOT NULL,
        campaign TEXT NOT NULL
    );
    CREATE TABLE campaign_nodes (
        campaign TEXT NOT NULL REFERENCES campaigns (id),
        node TEXT NOT NULL,
        step TEXT NOT NULL,
        run TEXT NOT NULL,
        PRIMARY KEY (campaign, node)
    );
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY,
        campaign TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        entry TEXT NOT NULL
    );
    CREATE INDEX audit_campaign ON audit (campaign, seq);
    CREATE TABLE probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at_ms BIGINT NOT NULL
    );
    CREATE TABLE operator_audit (
        seq BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        who TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE revocations (
        seq BIGSERIAL PRIMARY KEY,
        serial TEXT NOT NULL UNIQUE,
        identity TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        revoked_by TEXT NOT NULL
    );
    CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        issued_ms BIGINT NOT NULL,
        not_after_ms BIGINT NOT NULL
    );
    CREATE INDEX certificates_identity ON certificates (identity);
    CREATE TABLE leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        address TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );",
];

/// The schema versions this binary can open: 0 (new) to the last.
pub(super) fn known() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database's schema up to date, refusing one that is not
/// rollcall's or is newer than this binary.
pub(super) fn apply(client: &mut Client, target: &Target) -> Result<(), StoreError> {
    let err = |e| pg_error(target, e);
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    let ours: bool = tx
        .query_one("SELECT to_regclass('rollcall_schema') IS NOT NULL", &[])
        .map_err(err)?
        .get(0);
    let mut version: i64 = 0;
    if ours {
        version = tx
            .query_one("SELECT version FROM rollcall_schema", &[])
            .map_err(err)?
            .get(0);
    } else {
        let tables: Vec<String> = tx
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
                &[],
            )
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tables.is_empty() {
            return Err(StoreError::Foreign {
                path: target.shown().into(),
                why: format!(
                    "it has tables ({}) but no rollcall_schema",
                    tables.join(", ")
                ),
            });
        }
        tx.batch_execute("CREATE TABLE rollcall_schema (version BIGINT NOT NULL); INSERT INTO rollcall_schema VALUES (0);")
            .map_err(err)?;
    }
    if !(0..=known()).contains(&version) {
        return Err(StoreError::Version {
            path: target.shown().into(),
            found: version,
            known: known(),
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(migration).map_err(err)?;
        tx.execute(
            "UPDATE rollcall_schema SET version = $1",
            &[&(i as i64 + 1)],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}
