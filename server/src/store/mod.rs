//! The fleet's durable state in one SQLite file (`DATA_DIR/rollcall.db`).
//!
//! [`Store`] opens the file (WAL mode), applies the versioned migrations in
//! [`migrations`], and loads what a starting server needs. Writes go through
//! a [`Writer`]: a thread that owns the connection, coalesces changes per
//! node and commits them in one transaction per flush interval, so 10,000
//! agents reporting every 10 s cost one commit a second, not a thousand.

mod migrations;
mod writer;

use std::path::{Path, PathBuf};

use rollcall_proto::model::{ActionResult, Node, Report};

use crate::campaign::record::{AuditEntry, Campaign, CampaignWrite, NodeRun};
use rusqlite::{Connection, OptionalExtension};

pub use writer::{Writer, WriterHandle};

pub const DB_FILE: &str = "rollcall.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this rollcall-server knows ({known}); run a newer rollcall-server"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path}: stored node {node} cannot be read: {message}")]
    Corrupt {
        path: PathBuf,
        node: String,
        message: String,
    },
}

/// One node as stored: its record and its latest report.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredNode {
    pub node: Node,
    pub report: Option<Report>,
}

/// A campaign as stored, with its node runs and audit log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCampaign {
    pub campaign: Campaign,
    pub runs: Vec<NodeRun>,
    pub audit: Vec<AuditEntry>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and brings its
    /// schema up to date.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        // WAL: readers never block the writer. FULL: every commit is on
        // disk when it returns, because an action result or a campaign step
        // is acknowledged or acted on right after its commit. Node changes
        // are batched once per interval, so this costs one fsync a second.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        migrations::apply(&mut conn, &path)?;
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored node, sorted by name.
    pub fn load_nodes(&self) -> Result<Vec<StoredNode>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT name, node, report FROM nodes ORDER BY name")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(sql)?;
        let mut nodes = Vec::new();
        for row in rows {
            let (name, node, report) = row.map_err(sql)?;
            let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                path: self.path.clone(),
                node: name.clone(),
                message: e.to_string(),
            };
            nodes.push(StoredNode {
                node: serde_json::from_str(&node).map_err(corrupt)?,
                report: report
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(corrupt)?,
            });
        }
        Ok(nodes)
    }

    /// One stored node (tests and tools; the server reads from memory).
    pub fn load_node(&self, name: &str) -> Result<Option<StoredNode>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let row = self
            .conn
            .query_row(
                "SELECT node, report FROM nodes WHERE name = ?1",
                [name],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
            )
            .optional()
            .map_err(sql)?;
        let Some((node, report)) = row else {
            return Ok(None);
        };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: self.path.clone(),
            node: name.to_owned(),
            message: e.to_string(),
        };
        Ok(Some(StoredNode {
            node: serde_json::from_str(&node).map_err(corrupt)?,
            report: report
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(corrupt)?,
        }))
    }

    /// Stores an action result at once, in its own transaction.
    pub fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        let json = serde_json::to_string(result).expect("an action result serializes");
        let state = serde_json::to_string(&result.state).expect("a state serializes");
        self.conn
            .prepare_cached(
                "INSERT INTO actions (id, node, state, updated_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET node = excluded.node, state = excluded.state,
                   updated_ms = excluded.updated_ms, result = excluded.result",
            )
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    result.id,
                    result.node,
                    state.trim_matches('"'),
                    rollcall_proto::timestamp::Timestamp::now().unix_millis(),
                    json
                ])
            })
            .map(|_| ())
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    /// Every stored action result, by id.
    pub fn load_actions(&self) -> Result<Vec<ActionResult>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT id, result FROM actions ORDER BY id")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(sql)?;
            out.push(
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    node: format!("action {id}"),
                    message: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Writes one campaign change (campaign, node runs, audit lines) in one
    /// transaction.
    pub fn write_campaign(&mut self, w: &CampaignWrite) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        if let Some(c) = &w.campaign {
            let json = serde_json::to_string(c).expect("a campaign serializes");
            tx.prepare_cached(
                "INSERT INTO campaigns (id, created_ms, phase, campaign) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET phase = excluded.phase, campaign = excluded.campaign",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    c.id,
                    c.created_at.unix_millis(),
                    c.phase.as_str(),
                    json
                ])
            })
            .map_err(sql)?;
        }
        for (campaign, run) in &w.nodes {
            let json = serde_json::to_string(run).expect("a node run serializes");
            tx.prepare_cached(
                "INSERT INTO campaign_nodes (campaign, node, step, run) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(campaign, node) DO UPDATE SET step = excluded.step, run = excluded.run",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    campaign,
                    run.node,
                    run.step.as_str(),
                    json
                ])
            })
            .map_err(sql)?;
        }
        for entry in &w.audit {
            let json = serde_json::to_string(entry).expect("an audit entry serializes");
            tx.prepare_cached("INSERT INTO audit (campaign, at_ms, entry) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| {
                    s.execute(rusqlite::params![
                        entry.campaign,
                        entry.at.unix_millis(),
                        json
                    ])
                })
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Every campaign with its node runs and audit log, oldest first.
    pub fn load_campaigns(&self) -> Result<Vec<StoredCampaign>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let corrupt = |what: String| {
            let path = self.path.clone();
            move |e: serde_json::Error| StoreError::Corrupt {
                path,
                node: what,
                message: e.to_string(),
            }
        };
        let mut out: Vec<StoredCampaign> = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT id, campaign FROM campaigns ORDER BY created_ms, id")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        for row in rows {
            let (id, json) = row.map_err(sql)?;
            let campaign: Campaign =
                serde_json::from_str(&json).map_err(corrupt(format!("campaign {id}")))?;
            out.push(StoredCampaign {
                campaign,
                runs: Vec::new(),
                audit: Vec::new(),
            });
        }
        let index = |id: &str, out: &[StoredCampaign]| out.iter().position(|c| c.campaign.id == id);
        let mut stmt = self
            .conn
            .prepare("SELECT campaign, node, run FROM campaign_nodes ORDER BY campaign, node")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (id, node, json) = row.map_err(sql)?;
            let run: NodeRun = serde_json::from_str(&json)
                .map_err(corrupt(format!("campaign {id} node {node}")))?;
            if let Some(i) = index(&id, &out) {
                out[i].runs.push(run);
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT seq, campaign, entry FROM audit ORDER BY seq")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (seq, id, json) = row.map_err(sql)?;
            let entry: AuditEntry =
                serde_json::from_str(&json).map_err(corrupt(format!("audit entry {seq}")))?;
            if let Some(i) = index(&id, &out) {
                out[i].audit.push(entry);
            }
        }
        Ok(out)
    }

    /// Writes a batch of node changes in one transaction.
    pub fn write_nodes<'a>(
        &mut self,
        batch: impl IntoIterator<Item = &'a StoredNode>,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO nodes (name, role, online, last_seen_ms, node, report)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(name) DO UPDATE SET
                       role = excluded.role, online = excluded.online,
                       last_seen_ms = excluded.last_seen_ms, node = excluded.node,
                       report = COALESCE(excluded.report, nodes.report)",
                )
                .map_err(sql)?;
            for item in batch {
                let node = serde_json::to_string(&item.node).expect("a Node always serializes");
                let report = item
                    .report
                    .as_ref()
                    .map(|r| serde_json::to_string(r).expect("a Report always serializes"));
                stmt.execute(rusqlite::params![
                    item.node.name,
                    item.node.role.as_str(),
                    item.node.online,
                    item.node.last_seen.unix_millis(),
                    node,
                    report,
                ])
                .map_err(sql)?;
                n += 1;
            }
        }
        tx.commit().map_err(sql)?;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rollcall_proto::model::Role;
    use rollcall_proto::timestamp::Timestamp;

    pub(crate) fn temp_data_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rollcall-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    pub(crate) fn node(name: &str) -> Node {
        let mut n = Node::new(name, Role::Compute, Timestamp::from_unix_millis(1_000));
        n.labels = [("az".to_owned(), "one".to_owned())].into();
        n.online = true;
        n.last_seen = Timestamp::from_unix_millis(2_000);
        n.agent_version = "0.1.0".into();
        n.hostname = name.into();
        n.boot_id = "b1".into();
        n
    }

    #[test]
    fn nodes_survive_reopening_and_a_report_is_kept_when_a_change_carries_none() {
        let dir = temp_data_dir("reopen");
        let report = Report {
            seq: 3,
            collected_at: Timestamp::from_unix_millis(5_000),
            ..Default::default()
        };
        {
            let mut store = Store::open(&dir).expect("open");
            let a = StoredNode {
                node: node("a"),
                report: Some(report.clone()),
            };
            store.write_nodes([&a]).expect("write");
            let mut offline = node("a");
            offline.online = false;
            store
                .write_nodes([&StoredNode {
                    node: offline,
                    report: None,
                }])
                .expect("write");
        }
        let store = Store::open(&dir).expect("reopen");
        let loaded = store.load_nodes().expect("load");
        assert_eq!(loaded.len(), 1);
        assert!(!loaded[0].node.online);
        assert_eq!(loaded[0].report, Some(report));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = temp_data_dir("newer");
        {
            let store = Store::open(&dir).expect("open");
            store
                .conn
                .pragma_update(None, "user_version", 999)
                .expect("bump");
        }
        match Store::open(&dir) {
            Err(StoreError::TooNew { found: 999, .. }) => {}
            other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
