//! What a starting server reads, and what it does with a row it cannot
//! read: one bad row never stops the server.
//!
//! - What agents bring back (a node's record, a report section, an action
//!   result) is moved to the `quarantine` table with one warning and the
//!   rest loads. A node whose record is unreadable is kept, rebuilt from
//!   its name, role and last-seen columns; a section is dropped until the
//!   node's next report. The row is moved rather than left so that the next
//!   start does not warn again, and kept so that an operator can see it.
//! - What only an operator makes (a campaign and its node runs) is left
//!   where it is, and a campaign that cannot be read whole is not resumed,
//!   with an error at every start naming it: acting on half a campaign
//!   could patch or reboot a node twice. An unreadable audit line is
//!   skipped with a warning (it is history; nothing is decided from it).

use rollcall_proto::model::{ActionResult, Node, Role};
use rollcall_proto::timestamp::Timestamp;
use rusqlite::Row;
use rusqlite::types::ValueRef;

use super::{Store, StoreError, StoredCampaign, StoredNode, encode};

/// A row to move to the quarantine table.
struct Aside {
    table: &'static str,
    /// The column with the unreadable value.
    column: &'static str,
    rowid: i64,
    key: String,
    section: String,
    error: String,
    /// Written in place of the unreadable value; `None` deletes the row.
    replace: Option<String>,
}

/// A TEXT column: `Err` (a bad row, not a failed query) for anything else.
fn text(row: &Row<'_>, i: usize) -> rusqlite::Result<Result<String, String>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(b) => {
            String::from_utf8(b.to_vec()).map_err(|_| "text that is not UTF-8".into())
        }
        other => Err(format!("{} where text was expected", other.data_type())),
    })
}

/// A TEXT column of JSON, decoded: `Err` for a bad row.
fn decode<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    i: usize,
) -> rusqlite::Result<Result<T, String>> {
    Ok(text(row, i)?.and_then(|json| serde_json::from_str(&json).map_err(|e| e.to_string())))
}

/// A key column for logs and the quarantine table, however damaged.
fn key(row: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("({})", other.data_type()),
    })
}

/// A node record from its plain columns, when its JSON cannot be read.
fn rebuild(row: &Row<'_>) -> rusqlite::Result<Option<Node>> {
    let (Ok(name), Ok(role)) = (text(row, 1)?, text(row, 2)?) else {
        return Ok(None);
    };
    let Ok(role) = role.parse::<Role>() else {
        return Ok(None);
    };
    let last_seen = match row.get_ref(4)? {
        ValueRef::Integer(ms) => Timestamp::from_unix_millis(ms),
        _ => Timestamp::from_unix_millis(0),
    };
    let mut node = Node::new(&name, role, last_seen);
    node.offline_reason = "its stored record could not be read".into();
    Ok(Some(node))
}

impl Store {
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

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn read_nodes(
        &self,
        only: Option<&str>,
        mut each: impl FnMut(StoredNode),
    ) -> Result<(), StoreError> {
        let sql = self.sql();
        let mut aside = Vec::new();
        // The records are small: read them all, then walk the sections
        // (sorted by node too) alongside, finishing one node at a time.
        let mut records: Vec<Node> = Vec::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rowid, name, role, online, last_seen_ms, node FROM nodes
                 WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
            )
            .map_err(&sql)?;
        let mut rows = stmt.query([only]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            let error = match decode::<Node>(row, 5).map_err(&sql)? {
                Ok(node) => {
                    records.push(node);
                    continue;
                }
                Err(error) => error,
            };
            let name = key(row, 1).map_err(&sql)?;
            let rebuilt = rebuild(row).map_err(&sql)?;
            match &rebuilt {
                Some(_) => {
                    tracing::warn!(node = %name.escape_debug(), error = %error, "A stored node record cannot be read; the node is kept, rebuilt from its name and role, and the record is set aside in the quarantine table.")
                }
                None => {
                    tracing::warn!(node = %name.escape_debug(), error = %error, "A stored node record cannot be read nor rebuilt; it is set aside in the quarantine table until the node's agent connects again.")
                }
            }
            aside.push(Aside {
                table: "nodes",
                column: "node",
                rowid: row.get(0).map_err(&sql)?,
                key: name,
                section: String::new(),
                error,
                replace: rebuilt
                    .as_ref()
                    .map(|n| encode(String::new, n))
                    .transpose()?,
            });
            records.extend(rebuilt);
        }
        drop(rows);
        let mut assembly = super::Assembly::new(records, &mut each);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rowid, node, section, data FROM node_sections
                 WHERE ?1 IS NULL OR node = ?1 ORDER BY node",
            )
            .map_err(&sql)?;
        let mut rows = stmt.query([only]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            let name = key(row, 1).map_err(&sql)?;
            let section = key(row, 2).map_err(&sql)?;
            let json = text(row, 3).map_err(&sql)?;
            if let Err(error) =
                assembly.section(&name, &section, json.as_deref().map_err(Clone::clone))
            {
                tracing::warn!(node = %name.escape_debug(), section = %section.escape_debug(), error = %error, "A stored report section cannot be read; the node is kept without it until its next report, and the row is set aside in the quarantine table.");
                aside.push(Aside {
                    table: "node_sections",
                    column: "data",
                    rowid: row.get(0).map_err(&sql)?,
                    key: name,
                    section,
                    error,
                    replace: None,
                });
            }
        }
        assembly.finish();
        drop(rows);
        drop(stmt);
        self.set_aside(&aside);
        Ok(())
    }

    /// Every stored action result, by id.
    pub fn load_actions(&self) -> Result<Vec<ActionResult>, StoreError> {
        let sql = self.sql();
        let mut aside = Vec::new();
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT rowid, id, node, result FROM actions ORDER BY id")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            match decode::<ActionResult>(row, 3).map_err(&sql)? {
                Ok(result) => out.push(result),
                Err(error) => {
                    let id = key(row, 1).map_err(&sql)?;
                    let node = key(row, 2).map_err(&sql)?;
                    // The agent keeps a result until it is stored and the
                    // campaign asks again by the same id, so nothing is
                    // lost that the agent does not bring back.
                    tracing::warn!(action_id = %id.escape_debug(), node = %node.escape_debug(), error = %error, "A stored action result cannot be read; it is set aside in the quarantine table.");
                    aside.push(Aside {
                        table: "actions",
                        column: "result",
                        rowid: row.get(0).map_err(&sql)?,
                        key: id,
                        section: String::new(),
                        error,
                        replace: None,
                    });
                }
            }
        }
        drop(rows);
        drop(stmt);
        self.set_aside(&aside);
        Ok(out)
    }

    /// Every campaign that can be read whole, with its node runs and audit
    /// log, oldest first.
    pub fn load_campaigns(&self) -> Result<Vec<StoredCampaign>, StoreError> {
        let sql = self.sql();
        let mut out: Vec<StoredCampaign> = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT id, campaign FROM campaigns ORDER BY created_ms, id")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            let id = key(row, 0).map_err(&sql)?;
            match decode(row, 1).map_err(&sql)? {
                Ok(campaign) => out.push(StoredCampaign {
                    campaign,
                    runs: Vec::new(),
                    audit: Vec::new(),
                }),
                Err(error) => {
                    tracing::error!(campaign = %id.escape_debug(), error = %error, "A stored campaign cannot be read; it is not resumed. Its nodes are not held by it: repair or delete the row in the campaigns table.");
                }
            }
        }
        let index = |id: &str, out: &[StoredCampaign]| out.iter().position(|c| c.campaign.id == id);
        let mut broken: Vec<String> = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT campaign, node, run FROM campaign_nodes ORDER BY campaign, node")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            let id = key(row, 0).map_err(&sql)?;
            let Some(i) = index(&id, &out) else {
                continue;
            };
            match decode(row, 2).map_err(&sql)? {
                Ok(run) => out[i].runs.push(run),
                Err(error) => {
                    let node = key(row, 1).map_err(&sql)?;
                    tracing::error!(campaign = %id.escape_debug(), node = %node.escape_debug(), error = %error, "A stored campaign node cannot be read; the campaign is not resumed. Repair or delete the row in the campaign_nodes table.");
                    broken.push(id);
                }
            }
        }
        out.retain(|c| !broken.contains(&c.campaign.id));
        let mut stmt = self
            .conn
            .prepare("SELECT seq, campaign, entry FROM audit ORDER BY seq")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        while let Some(row) = rows.next().map_err(&sql)? {
            let id = key(row, 1).map_err(&sql)?;
            let Some(i) = index(&id, &out) else {
                continue;
            };
            match decode(row, 2).map_err(&sql)? {
                Ok(entry) => out[i].audit.push(entry),
                Err(error) => {
                    let seq: i64 = row.get(0).map_err(&sql)?;
                    tracing::warn!(campaign = %id.escape_debug(), audit_seq = seq, error = %error, "A stored audit line cannot be read; it is left out of the campaign's audit.");
                }
            }
        }
        Ok(out)
    }

    /// Moves unreadable rows to the quarantine table, in one transaction.
    /// A failure is logged, not returned: the rows are skipped either way,
    /// and the next start tries again.
    fn set_aside(&self, rows: &[Aside]) {
        if rows.is_empty() {
            return;
        }
        let now = Timestamp::now().unix_millis();
        let moved = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            for a in rows {
                tx.execute(
                    &format!(
                        "INSERT INTO quarantine (at_ms, source, key, section, data, error)
                         SELECT ?1, ?2, ?3, ?4, {}, ?5 FROM {} WHERE rowid = ?6",
                        a.column, a.table
                    ),
                    rusqlite::params![now, a.table, a.key, a.section, a.error, a.rowid],
                )?;
                match &a.replace {
                    Some(value) => tx.execute(
                        &format!("UPDATE {} SET {} = ?1 WHERE rowid = ?2", a.table, a.column),
                        rusqlite::params![value, a.rowid],
                    )?,
                    None => tx.execute(
                        &format!("DELETE FROM {} WHERE rowid = ?1", a.table),
                        [a.rowid],
                    )?,
                };
            }
            tx.commit()
        })();
        if let Err(e) = moved {
            tracing::error!(db = %self.path.display(), rows = rows.len(), error = %e, "Cannot move unreadable rows to the quarantine table; they are skipped for now.");
        }
    }
}
