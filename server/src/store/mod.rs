//! The fleet's durable state in one SQLite file (`DATA_DIR/rollcall.db`).
//!
//! [`Store`] opens the file (WAL mode), applies the versioned migrations in
//! [`migrations`], and loads what a starting server needs. Writes go through
//! a [`Writer`]: a thread that owns the connection, coalesces changes per
//! node and commits them in one transaction per flush interval, so 10,000
//! agents reporting every 10 s cost one commit a second, not a thousand.

mod admin;
mod backend;
mod certificates;
#[cfg(test)]
mod damage_tests;
mod finite;
mod health;
mod load;
pub mod migrate;
mod migrations;
pub mod pg;
mod revocations;
mod writer;

use std::path::{Path, PathBuf};

use rollcall_proto::model::{
    ActionResult, ContainersSection, DisksSection, HostFacts, Node, RebootSection, Report,
    UpdatesSection,
};
use rollcall_proto::pack::{Pack, Packed, UnpackError};

use crate::campaign::record::{AuditEntry, Campaign, CampaignWrite, NodeRun};
use rusqlite::Connection;

pub use backend::{Backend, FaultSwitch, Faulty};
pub use certificates::SignedCertificate;
pub use health::{Failure, StoreHealth};
pub use writer::{NotRead, NotStored, Writer, WriterHandle, WriterPanicked};

pub const DB_FILE: &str = "rollcall.db";
/// Written by `store migrate` beside the database it copied: the fleet
/// lives in PostgreSQL since, and this file is a backup no server opens.
pub const MIGRATED_FILE: &str = "rollcall.db.migrated";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read database {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} exists but is empty (0 bytes{}), so it holds no fleet; restore it from a backup, or remove it and its -wal and -shm files to start a new fleet",
        wal_note(*.wal)
    )]
    Empty { path: PathBuf, wal: bool },
    #[error(
        "database {path} is missing but {path}-wal is there, so the database was removed or moved; restore it from a backup, or remove the -wal and -shm files to start a new fleet"
    )]
    WalWithoutDb { path: PathBuf },
    #[error(
        "database {path} is not an SQLite database; restore it from a backup, or move it away to start a new fleet"
    )]
    NotSqlite { path: PathBuf },
    #[error(
        "database {path} was migrated to PostgreSQL ({note}): the replicas' [store] url holds the fleet now, and this file is a backup; set [store] url, or remove {path}.migrated to use the file again"
    )]
    Migrated { path: PathBuf, note: String },
    #[error("database {path} is not rollcall's: {why}; point data_dir at rollcall's own directory")]
    Foreign { path: PathBuf, why: String },
    #[error(
        "database {path} has schema version {found}, but this rollcall-server supports versions 0 to {known}; {}",
        version_hint(*.found, *.known)
    )]
    Version {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path} is damaged ({source}); restore it from a backup")]
    Damaged {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot store {what}: {source}")]
    Unpack { what: String, source: UnpackError },
    #[error("refused to store {what}: {source}")]
    NonFinite {
        what: String,
        source: finite::NonFinite,
    },
    /// A write a [`Faulty`] backend was told to fail.
    #[error("{0}")]
    Injected(String),
    #[error("{0}")]
    Config(String),
    #[error("PostgreSQL at {target}: {message}")]
    Postgres { target: String, message: String },
    /// The lease row names another holder or epoch, or has ended: this
    /// replica must not act any more.
    #[error(
        "this replica no longer leads (its lease of epoch {epoch} ended or was taken over), so the write was refused; it stops acting"
    )]
    Deposed { epoch: u64 },
}

fn wal_note(wal: bool) -> &'static str {
    if wal { ", with a stale -wal file" } else { "" }
}

fn version_hint(found: i64, known: i64) -> &'static str {
    if found > known {
        "run a newer rollcall-server"
    } else {
        "the file is damaged: restore it from a backup"
    }
}

impl StoreError {
    /// The database is not one this binary may open: restarting cannot
    /// help, an operator must act (exit 2, which systemd does not restart).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Empty { .. }
                | StoreError::WalWithoutDb { .. }
                | StoreError::NotSqlite { .. }
                | StoreError::Foreign { .. }
                | StoreError::Version { .. }
                | StoreError::Damaged { .. }
                | StoreError::Migrated { .. }
                | StoreError::Config(_)
        )
    }
}

/// `what` as JSON, refused when it holds a float JSON cannot read back.
fn encode<T: serde::Serialize + ?Sized>(
    what: impl FnOnce() -> String,
    value: &T,
) -> Result<String, StoreError> {
    finite::check(value).map_err(|source| StoreError::NonFinite {
        what: what(),
        source,
    })?;
    Ok(serde_json::to_string(value).expect("a model value serializes to JSON"))
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

    /// The section's JSON, `Ok(None)` when it is to be removed; refused
    /// when it would not read back.
    fn json(&self, node: &str) -> Result<Option<String>, StoreError> {
        let what = || format!("section {} of node {node}", self.name());
        fn packed<T: Pack + serde::Serialize>(
            p: &Option<Packed<T>>,
            what: impl Fn() -> String,
        ) -> Result<Option<String>, StoreError> {
            p.as_ref()
                .map(|p| {
                    let section = p.unpack().map_err(|source| StoreError::Unpack {
                        what: what(),
                        source,
                    })?;
                    encode(&what, &section)
                })
                .transpose()
        }
        match self {
            Section::Host(v) => v.as_ref().map(|v| encode(what, v)).transpose(),
            Section::Containers(v) => packed(v, what),
            Section::Disks(v) => packed(v, what),
            Section::Reboot(v) => packed(v, what),
            Section::Updates(v) => packed(v, what),
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

/// Joins node records (sorted by name) with their report sections (sorted
/// by node), handing each node to `each` once its last section is in, so
/// that no more than one decoded report is held at a time: the walk both
/// stores' loads share.
struct Assembly<'e> {
    records: std::iter::Peekable<std::vec::IntoIter<Node>>,
    current: Option<StoredNode>,
    each: &'e mut dyn FnMut(StoredNode),
}

impl<'e> Assembly<'e> {
    fn new(records: Vec<Node>, each: &'e mut dyn FnMut(StoredNode)) -> Self {
        Assembly {
            records: records.into_iter().peekable(),
            current: None,
            each,
        }
    }

    /// Puts one section of node `name` (its JSON, or why it could not be
    /// read) into the node's report; a section of a node without a record
    /// is skipped. `Err` says why the section was left out: the node keeps
    /// what it had, and no report if this was its first section.
    fn section(
        &mut self,
        name: &str,
        section: &str,
        json: Result<&str, String>,
    ) -> Result<(), String> {
        if self.current.as_ref().is_none_or(|c| c.node.name != name) {
            if let Some(done) = self.current.take() {
                (self.each)(done);
            }
            // Nodes before this one have no sections.
            while self.records.peek().is_some_and(|n| n.name.as_str() < name) {
                let node = self.records.next().expect("peeked");
                (self.each)(StoredNode { node, report: None });
            }
            if self.records.peek().is_some_and(|n| n.name == name) {
                let node = self.records.next().expect("peeked");
                self.current = Some(StoredNode { node, report: None });
            }
        }
        let Some(stored) = self.current.as_mut().filter(|c| c.node.name == name) else {
            return Ok(()); // sections of a node without a record
        };
        let had_report = stored.report.is_some();
        let report = stored.report.get_or_insert_with(|| Report {
            seq: stored.node.last_report_seq,
            collected_at: stored.node.last_report_at.unwrap_or_default(),
            full: true,
            ..Default::default()
        });
        let read = json
            .and_then(|json| Section::read_into(report, section, json).map_err(|e| e.to_string()));
        if read.is_err() && !had_report {
            stored.report = None;
        }
        read
    }

    /// Hands out the last node with sections and every node after it.
    fn finish(mut self) {
        if let Some(done) = self.current.take() {
            (self.each)(done);
        }
        for node in self.records {
            (self.each)(StoredNode { node, report: None });
        }
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
        if let Ok(note) = std::fs::read_to_string(data_dir.join(MIGRATED_FILE)) {
            return Err(StoreError::Migrated {
                path,
                note: rollcall_proto::text::cut(note.trim(), 200).into_owned(),
            });
        }
        check_file(&path)?;
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        // Nothing is written before the file is known to be rollcall's.
        migrations::check(&conn, &path).map_err(damaged)?;
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
        migrations::apply(&mut conn, &path).map_err(damaged)?;
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores an action result at once, in its own transaction.
    pub fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        let json = encode(|| format!("action {}", result.id), result)?;
        self.conn
            .prepare_cached(
                // A final result is never replaced: a late "running" from
                // a session the node already replaced must not turn a
                // stored outcome back into work under way after a restart.
                "INSERT INTO actions (id, node, state, updated_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET node = excluded.node, state = excluded.state,
                   updated_ms = excluded.updated_ms, result = excluded.result
                 WHERE actions.state NOT IN ('succeeded', 'failed', 'rejected')",
            )
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    result.id,
                    result.node,
                    result.state.as_str(),
                    rollcall_proto::timestamp::Timestamp::now().unix_millis(),
                    json
                ])
            })
            .map(|_| ())
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    /// Writes one campaign change (campaign, node runs, audit lines) in one
    /// transaction.
    pub fn write_campaign(&mut self, w: &CampaignWrite) -> Result<(), StoreError> {
        // A value that cannot be stored refuses the whole change (the
        // transaction rolls back), which is then not acted on.
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        if let Some(c) = &w.campaign {
            let json = encode(|| format!("campaign {}", c.id), c)?;
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
            let json = encode(|| format!("campaign {campaign} node {}", run.node), run)?;
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
        for issued in &w.actions {
            let json = encode(|| format!("action {}", issued.id), issued)?;
            // Issued only: a result the agent already sent is never
            // replaced by the record of the request.
            tx.prepare_cached(
                "INSERT INTO actions (id, node, state, updated_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    issued.id,
                    issued.node,
                    issued.state.as_str(),
                    rollcall_proto::timestamp::Timestamp::now().unix_millis(),
                    json
                ])
            })
            .map_err(sql)?;
        }
        for entry in &w.audit {
            let json = encode(
                || format!("an audit entry of campaign {}", entry.campaign),
                entry,
            )?;
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

    /// A one-row write that succeeds only if the database takes writes
    /// (a full disk fails it), to learn when a failing store recovers.
    pub fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO probe (id, at_ms) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    rollcall_proto::timestamp::Timestamp::now().unix_millis()
                ])
            })
            .map(|_| ())
            .map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                source,
            })
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
                let node = match encode(|| format!("node {}", item.node.name), &item.node) {
                    Ok(json) => json,
                    Err(e) => {
                        // Keep what is stored rather than write what cannot
                        // be read back; the node's next change tries again.
                        tracing::error!(node = %item.node.name, error = %e, "A node record cannot be written.");
                        continue;
                    }
                };
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
                    let json = match section.json(&item.node.name) {
                        Ok(json) => json,
                        Err(e) => {
                            // The edge refuses floats that are not finite and
                            // unpacking cannot fail for what this process
                            // packed: keep the stored section rather than
                            // write one that would not read back.
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

/// Refuses what SQLite would otherwise open silently as a new, empty
/// fleet: an existing empty file, a stale WAL without its database, and a
/// file that is not SQLite at all.
fn check_file(path: &Path) -> Result<(), StoreError> {
    let wal = wal_path(path);
    let wal_has_data = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if wal_has_data {
                Err(StoreError::WalWithoutDb {
                    path: path.to_owned(),
                })
            } else {
                Ok(()) // a new fleet
            };
        }
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            });
        }
        Ok(meta) => meta,
    };
    if meta.is_file() && meta.len() == 0 {
        return Err(StoreError::Empty {
            path: path.to_owned(),
            wal: wal.exists(),
        });
    }
    let mut header = [0u8; 16];
    let read =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
    if !meta.is_file() || read.is_err() || &header != b"SQLite format 3\0" {
        return Err(StoreError::NotSqlite {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// SQLite's own word that the file is damaged is a refusal, not a failure
/// that a restart could fix.
fn damaged(e: StoreError) -> StoreError {
    match e {
        StoreError::Sqlite { path, source }
            if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ) =>
        {
            StoreError::Damaged { path, source }
        }
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rollcall_proto::model::{ActionState, Role};
    use rollcall_proto::timestamp::Timestamp;

    /// A data directory that does not exist yet (the store makes its
    /// own), inside a temp dir of its own that is removed with everything
    /// in it when this is dropped.
    pub(crate) struct TempDataDir {
        _root: tempfile::TempDir,
        data: PathBuf,
    }

    impl std::ops::Deref for TempDataDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.data
        }
    }

    impl AsRef<Path> for TempDataDir {
        fn as_ref(&self) -> &Path {
            &self.data
        }
    }

    pub(crate) fn temp_data_dir(tag: &str) -> TempDataDir {
        let root = tempfile::Builder::new()
            .prefix(&format!("rollcall-store-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDataDir {
            data: root.path().join("data"),
            _root: root,
        }
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
    fn a_stored_final_result_is_never_replaced() {
        // The SQL names the final states by their words: keep them in step.
        let finals: Vec<&str> = ActionState::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finals, ["succeeded", "failed", "rejected"]);
        let dir = temp_data_dir("final");
        let mut store = Store::open(&dir).expect("open");
        let mut r = ActionResult::issued("c.cmp1.1.patch", "cmp1");
        store.put_action(&r).expect("issued");
        r.state = ActionState::Running;
        store.put_action(&r).expect("running");
        let mut done = r.clone();
        done.state = ActionState::Succeeded;
        done.exit_code = Some(0);
        store.put_action(&done).expect("succeeded");
        // A replaced session's late word.
        store
            .put_action(&r)
            .expect("a late running is not an error");
        let stored = store.load_actions().expect("load");
        assert_eq!(stored, [done]);
        let _ = std::fs::remove_dir_all(&dir);
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
}
