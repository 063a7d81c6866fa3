//! What a starting leader reads from PostgreSQL. As with SQLite, one row
//! that cannot be decoded never stops the server: a node or action is
//! skipped with a warning (its agent brings it back), a campaign that
//! cannot be read whole is not resumed, with an error naming it.

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use rollcall_proto::model::{ActionResult, Node};

use super::{Target, pg_error};
use crate::store::{Assembly, StoreError, StoredCampaign, StoredNode};

/// Sections come in pages of this many rows: 10,000 kolla nodes' sections
/// are about a gigabyte, never held at once.
const PAGE: i32 = 512;

pub(super) fn each_node(
    client: &mut Client,
    target: &Target,
    each: &mut dyn FnMut(StoredNode),
) -> Result<(), StoreError> {
    let err = |e| pg_error(target, e);
    let mut tx = client.transaction().map_err(err)?;
    // A repeatable view: records and sections from the same moment.
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(err)?;
    let mut records = Vec::new();
    for row in tx
        .query(
            "SELECT name, node FROM nodes ORDER BY name COLLATE \"C\"",
            &[],
        )
        .map_err(err)?
    {
        let name: String = row.get(0);
        match serde_json::from_str::<Node>(row.get(1)) {
            Ok(node) => records.push(node),
            Err(e) => {
                tracing::warn!(node = %name.escape_debug(), error = %e, "A stored node record cannot be read; the node is left out until its agent connects again.");
            }
        }
    }
    let mut assembly = Assembly::new(records, each);
    let portal = tx
        .bind(
            "SELECT node, section, data FROM node_sections ORDER BY node COLLATE \"C\"",
            &[],
        )
        .map_err(err)?;
    loop {
        let page = tx.query_portal(&portal, PAGE).map_err(err)?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let name: &str = row.get(0);
            let section: &str = row.get(1);
            if let Err(e) = assembly.section(name, section, Ok(row.get(2))) {
                tracing::warn!(node = %name.escape_debug(), section = %section.escape_debug(), error = %e, "A stored report section cannot be read; the node is kept without it until its next report.");
            }
        }
    }
    assembly.finish();
    tx.commit().map_err(err)
}

pub(super) fn actions(
    client: &mut Client,
    target: &Target,
) -> Result<Vec<ActionResult>, StoreError> {
    let err = |e| pg_error(target, e);
    let mut out = Vec::new();
    let mut rows = client
        .query_raw(
            "SELECT id, result FROM actions ORDER BY id COLLATE \"C\"",
            std::iter::empty::<&str>(),
        )
        .map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let id: String = row.get(0);
        match serde_json::from_str(row.get(1)) {
            Ok(result) => out.push(result),
            Err(e) => {
                tracing::warn!(action_id = %id.escape_debug(), error = %e, "A stored action result cannot be read; it is left out (the agent keeps it until it is stored).");
            }
        }
    }
    Ok(out)
}

pub(super) fn campaigns(
    client: &mut Client,
    target: &Target,
) -> Result<Vec<StoredCampaign>, StoreError> {
    let err = |e| pg_error(target, e);
    let mut tx = client.transaction().map_err(err)?;
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(err)?;
    let mut out: Vec<StoredCampaign> = Vec::new();
    for row in tx
        .query(
            "SELECT id, campaign FROM campaigns ORDER BY created_ms, id COLLATE \"C\"",
            &[],
        )
        .map_err(err)?
    {
        let id: String = row.get(0);
        match serde_json::from_str(row.get(1)) {
            Ok(campaign) => out.push(StoredCampaign {
                campaign,
                runs: Vec::new(),
                audit: Vec::new(),
            }),
            Err(e) => {
                tracing::error!(campaign = %id.escape_debug(), error = %e, "A stored campaign cannot be read; it is not resumed. Its nodes are not held by it: repair or delete the row in the campaigns table.");
            }
        }
    }
    let index = |id: &str, out: &[StoredCampaign]| out.iter().position(|c| c.campaign.id == id);
    let mut broken: Vec<String> = Vec::new();
    // Streamed: campaign history grows for as long as the fleet lives.
    let mut rows = tx
        .query_raw(
            "SELECT campaign, node, run FROM campaign_nodes ORDER BY campaign COLLATE \"C\", node COLLATE \"C\"",
            std::iter::empty::<&str>(),
        )
        .map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let id: String = row.get(0);
        let Some(i) = index(&id, &out) else {
            continue;
        };
        match serde_json::from_str(row.get(2)) {
            Ok(run) => out[i].runs.push(run),
            Err(e) => {
                let node: String = row.get(1);
                tracing::error!(campaign = %id.escape_debug(), node = %node.escape_debug(), error = %e, "A stored campaign node cannot be read; the campaign is not resumed. Repair or delete the row in the campaign_nodes table.");
                broken.push(id);
            }
        }
    }
    out.retain(|c| !broken.contains(&c.campaign.id));
    drop(rows);
    let mut rows = tx
        .query_raw(
            "SELECT seq, campaign, entry FROM audit ORDER BY seq",
            std::iter::empty::<&str>(),
        )
        .map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let id: String = row.get(1);
        let Some(i) = index(&id, &out) else {
            continue;
        };
        match serde_json::from_str(row.get(2)) {
            Ok(entry) => out[i].audit.push(entry),
            Err(e) => {
                let seq: i64 = row.get(0);
                tracing::warn!(campaign = %id.escape_debug(), audit_seq = seq, error = %e, "A stored audit line cannot be read; it is left out of the campaign's audit.");
            }
        }
    }
    drop(rows);
    tx.commit().map_err(err)?;
    Ok(out)
}
