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

use rollcall_proto::model::{
    ActionResult, ContainersSection, DisksSection, HostFacts, Node, RebootSection, Report,
    UpdatesSection,
};
use rollcall_proto::pack::{Pack, Packed, UnpackError};

use crate::campaign::record::{AuditEntry, Campaign, CampaignWrite, NodeRun};
use rusqlite::Connection;

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

/// One node as stored: its record and the durable sections of its latest
/// report (no metrics, no network counters: they are not durable).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredNode {
    pub node: Node,
    pub report: Option<Report>,
}

/// One durable section of a node's report, as the store writes it; `None`
/// removes it (a full report without that section). The large sections
/// travel packed, as the fleet holds them; the writer thread unpacks them
/// to write their JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Section {
    Host(Option<HostFacts>),
    Containers(Option<Packed<ContainersSection>>),
    Disks(Option<Packed<DisksSection>>),
    Reboot(Option<Packed<RebootSection>>),
    Updates(Option<Packed<UpdatesSection>>),
}

impl Section {
    pub fn name(&self) -> &'static str {
        match self {
            Section::Host(_) => "host",
            Section::Containers(_) => "containers",
            Section::Disks(_) => "disks",
            Section::Reboot(_) => "reboot",
            Section::Updates(_) => "updates",
        }
    }

    /// The section's JSON, `Ok(None)` when it is to be removed.
    fn json(&self) -> Result<Option<String>, UnpackError> {
        fn to<T: serde::Serialize>(v: &T) -> String {
            serde_json::to_string(v).expect("a report section serializes")
        }
        fn packed<T: Pack + serde::Serialize>(
            p: &Option<Packed<T>>,
        ) -> Result<Option<String>, UnpackError> {
            p.as_ref().map(|p| Ok(to(&p.unpack()?))).transpose()
        }
        match self {
            Section::Host(v) => Ok(v.as_ref().map(to)),
            Section::Containers(v) => packed(v),
            Section::Disks(v) => packed(v),
            Section::Reboot(v) => packed(v),
            Section::Updates(v) => packed(v),
        }
    }

    /// Puts a stored section's JSON into `report`; unknown sections are
    /// ignored (a newer server may store more).
    fn read_into(report: &mut Report, name: &str, json: &str) -> Result<(), serde_json::Error> {
        match name {
            "host" => report.host = Some(serde_json::from_str(json)?),
            "containers" => report.containers = Some(serde_json::from_str(json)?),
            "disks" => report.disks = Some(serde_json::from_str(json)?),
            "reboot" => report.reboot = Some(serde_json::from_str(json)?),
            "updates" => report.updates = Some(serde_json::from_str(json)?),
            _ => {}
        }
        Ok(())
    }
}

/// A change to one node: its record, and the report sections that changed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeWrite {
    pub node: Node,
    pub sections: Vec<Section>,
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

    /// Every stored node with its durable report sections, sorted by name.
    pub fn load_nodes(&self) -> Result<Vec<StoredNode>, StoreError> {
        let mut nodes = Vec::new();
        self.read_nodes(None, |n| nodes.push(n))?;
        Ok(nodes)
    }

    /// Hands every stored node to `each`, one at a time and sorted by name,
    /// so that a caller that keeps them compact never holds every decoded
    /// report at once (10,000 kolla nodes decoded are about 1 GB).
    pub fn each_node(&self, each: impl FnMut(StoredNode)) -> Result<(), StoreError> {
        self.read_nodes(None, each)
    }

    /// One stored node (tests and tools; the server reads from memory).
    pub fn load_node(&self, name: &str) -> Result<Option<StoredNode>, StoreError> {
        let mut found = None;
        self.read_nodes(Some(name), |n| found = Some(n))?;
        Ok(found)
    }

    fn read_nodes(
        &self,
        only: Option<&str>,
        mut each: impl FnMut(StoredNode),
    ) -> Result<(), StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let corrupt = |name: &str, e: serde_json::Error| StoreError::Corrupt {
            path: self.path.clone(),
            node: name.to_owned(),
            message: e.to_string(),
        };
        // The records are small: read them all, then walk the sections
        // (sorted by node too) alongside, finishing one node at a time.
        let mut records: Vec<Node> = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT name, node FROM nodes WHERE ?1 IS NULL OR name = ?1 ORDER BY name")
            .map_err(sql)?;
        let mut rows = stmt.query([only]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let name: String = row.get(0).map_err(sql)?;
            let json: String = row.get(1).map_err(sql)?;
            records.push(serde_json::from_str(&json).map_err(|e| corrupt(&name, e))?);
        }
        let mut records = records.into_iter().peekable();
        let mut current: Option<StoredNode> = None;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT node, section, data FROM node_sections
                 WHERE ?1 IS NULL OR node = ?1 ORDER BY node",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([only]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let name: String = row.get(0).map_err(sql)?;
            let section: String = row.get(1).map_err(sql)?;
            let json: String = row.get(2).map_err(sql)?;
            if current.as_ref().is_none_or(|c| c.node.name != name) {
                if let Some(done) = current.take() {
                    each(done);
                }
                // Nodes before this one have no sections.
                while records.peek().is_some_and(|n| n.name < name) {
                    let node = records.next().expect("peeked");
                    each(StoredNode { node, report: None });
                }
                if records.peek().is_some_and(|n| n.name == name) {
                    let node = records.next().expect("peeked");
                    current = Some(StoredNode { node, report: None });
                }
            }
            let Some(stored) = current.as_mut().filter(|c| c.node.name == name) else {
                continue; // sections of a node without a record
            };
            let report = stored.report.get_or_insert_with(|| Report {
                seq: stored.node.last_report_seq,
                collected_at: stored.node.last_report_at.unwrap_or_default(),
                full: true,
                ..Default::default()
            });
            Section::read_into(report, &section, &json).map_err(|e| corrupt(&name, e))?;
        }
        if let Some(done) = current.take() {
            each(done);
        }
        for node in records {
            each(StoredNode { node, report: None });
        }
        Ok(())
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
        batch: impl IntoIterator<Item = &'a NodeWrite>,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut n = 0;
        {
            let mut put_node = tx
                .prepare_cached(
                    "INSERT INTO nodes (name, role, online, last_seen_ms, node)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(name) DO UPDATE SET
                       role = excluded.role, online = excluded.online,
                       last_seen_ms = excluded.last_seen_ms, node = excluded.node",
                )
                .map_err(sql)?;
            let mut put_section = tx
                .prepare_cached(
                    "INSERT INTO node_sections (node, section, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT(node, section) DO UPDATE SET data = excluded.data",
                )
                .map_err(sql)?;
            let mut drop_section = tx
                .prepare_cached("DELETE FROM node_sections WHERE node = ?1 AND section = ?2")
                .map_err(sql)?;
            for item in batch {
                let node = serde_json::to_string(&item.node).expect("a Node always serializes");
                put_node
                    .execute(rusqlite::params![
                        item.node.name,
                        item.node.role.as_str(),
                        item.node.online,
                        item.node.last_seen.unix_millis(),
                        node,
                    ])
                    .map_err(sql)?;
                for section in &item.sections {
                    let json = match section.json() {
                        Ok(json) => json,
                        Err(e) => {
                            // Cannot happen for what this process packed;
                            // keep the stored section rather than lose it.
                            tracing::error!(node = %item.node.name, section = section.name(), error = %e, "A report section cannot be written.");
                            continue;
                        }
                    };
                    match json {
                        Some(json) => put_section.execute(rusqlite::params![
                            item.node.name,
                            section.name(),
                            json
                        ]),
                        None => drop_section.execute([&item.node.name, section.name()]),
                    }
                    .map_err(sql)?;
                }
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
    fn nodes_survive_reopening_and_sections_are_kept_until_replaced_or_removed() {
        let dir = temp_data_dir("reopen");
        let host = HostFacts {
            hostname: "a".into(),
            ..Default::default()
        };
        let updates = UpdatesSection {
            count: 4,
            ..Default::default()
        };
        let mut a = node("a");
        a.last_report_seq = 3;
        a.last_report_at = Some(Timestamp::from_unix_millis(5_000));
        {
            let mut store = Store::open(&dir).expect("open");
            store
                .write_nodes([&NodeWrite {
                    node: a.clone(),
                    sections: vec![
                        Section::Host(Some(host.clone())),
                        Section::Updates(Some(updates.pack())),
                        Section::Reboot(Some(RebootSection::default().pack())),
                    ],
                }])
                .expect("write");
            a.online = false;
            store
                .write_nodes([&NodeWrite {
                    node: a.clone(),
                    sections: vec![Section::Reboot(None)],
                }])
                .expect("write");
            store
                .write_nodes([
                    &NodeWrite {
                        node: node("b"),
                        sections: vec![],
                    },
                    &NodeWrite {
                        node: node("c"),
                        sections: vec![Section::Host(Some(host.clone()))],
                    },
                    &NodeWrite {
                        node: node("d"),
                        sections: vec![],
                    },
                ])
                .expect("write");
        }
        let store = Store::open(&dir).expect("reopen");
        let loaded = store.load_nodes().expect("load");
        let names: Vec<_> = loaded.iter().map(|n| n.node.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(loaded[2].report.is_some() && loaded[3].report.is_none());
        assert!(!loaded[0].node.online);
        let report = loaded[0].report.clone().expect("a report");
        assert_eq!(report.seq, 3);
        assert_eq!(report.host, Some(host));
        assert_eq!(report.updates, Some(updates));
        assert_eq!(report.reboot, None);
        assert_eq!(report.metrics, None);
        assert_eq!(loaded[1].report, None);
        assert_eq!(
            store.load_node("b").expect("load").map(|n| n.node.name),
            Some("b".into())
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_version_3_database_keeps_its_reports_as_sections() {
        let dir = temp_data_dir("v3");
        std::fs::create_dir_all(&dir).expect("dir");
        let report = Report {
            seq: 9,
            collected_at: Timestamp::from_unix_millis(5_000),
            full: true,
            host: Some(HostFacts {
                hostname: "old".into(),
                ..Default::default()
            }),
            metrics: Some(Default::default()),
            updates: Some(UpdatesSection {
                count: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut old = node("old");
        old.last_report_seq = 9;
        old.last_report_at = Some(report.collected_at);
        {
            let mut conn = Connection::open(dir.join(DB_FILE)).expect("open");
            migrations::apply_up_to(&mut conn, &dir, 3).expect("v3");
            conn.execute(
                "INSERT INTO nodes (name, role, online, last_seen_ms, node, report)
                 VALUES ('old', 'compute', 0, 1, ?1, ?2)",
                [
                    serde_json::to_string(&old).expect("json"),
                    serde_json::to_string(&report).expect("json"),
                ],
            )
            .expect("insert");
        }
        let store = Store::open(&dir).expect("migrates");
        let loaded = store.load_node("old").expect("load").expect("old");
        let got = loaded.report.expect("report");
        assert_eq!(got.host, report.host);
        assert_eq!(got.updates, report.updates);
        assert_eq!(got.metrics, None, "metrics are not durable");
        assert_eq!(got.seq, 9);
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
