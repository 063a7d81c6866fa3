//! The store's part of administration: forgetting a node, and the audit
//! of operator actions (`crate::audit`).

use rusqlite::{Connection, params};

use super::{Store, StoreError};
use crate::audit::AuditRecord;
use rollcall_proto::timestamp::Timestamp;

impl Store {
    /// Removes a node's record and every stored report section, and writes
    /// the audit line that says who did it, in one transaction. Its action
    /// results stay: they are the history of campaigns, keyed by action
    /// ids that name the campaign. Returns the audit line's `seq`.
    pub fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute("DELETE FROM node_sections WHERE node = ?1", [node])
            .map_err(sql)?;
        tx.execute("DELETE FROM nodes WHERE name = ?1", [node])
            .map_err(sql)?;
        let seq = insert_audit(&tx, audit).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(seq)
    }

    /// Appends one audit line; returns its `seq`.
    pub fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError> {
        insert_audit(&self.conn, audit).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Up to `limit` audit lines after `seq` `after`, oldest first. A line
    /// whose action this binary does not know (written by a newer one) is
    /// skipped with a warning.
    pub fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at_ms, who, role, action, target, detail FROM operator_audit
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                ))
            })
            .map_err(sql)?;
        let mut lines = Vec::new();
        for row in rows {
            let (seq, at_ms, who, role, action, target, detail) = row.map_err(sql)?;
            let Ok(action) = action.parse() else {
                tracing::warn!(seq, action = %action.escape_debug(), "An operator audit line names an unknown action; skipped.");
                continue;
            };
            lines.push(AuditRecord {
                seq: u64::try_from(seq).unwrap_or(0),
                at: Timestamp::from_unix_millis(at_ms),
                who,
                role,
                action,
                target,
                detail,
            });
        }
        Ok(lines)
    }
}

fn insert_audit(conn: &Connection, a: &AuditRecord) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "INSERT INTO operator_audit (at_ms, who, role, action, target, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.at.unix_millis(),
        a.who,
        a.role,
        a.action.as_str(),
        a.target,
        a.detail
    ])?;
    Ok(u64::try_from(conn.last_insert_rowid()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditAction;
    use crate::store::tests::{node, temp_data_dir};
    use crate::store::{NodeWrite, Section};
    use rollcall_proto::identity::{Identity, Role};
    use rollcall_proto::model::UpdatesSection;
    use rollcall_proto::pack::Pack;

    #[test]
    fn forgetting_removes_the_node_and_its_sections_and_keeps_its_audit_line() {
        let dir = temp_data_dir("forget");
        let mut store = Store::open(&dir).expect("open");
        for name in ["gone", "kept"] {
            let sections = vec![Section::Updates(Some(UpdatesSection::default().pack()))];
            store
                .write_nodes([&NodeWrite {
                    node: node(name),
                    sections,
                }])
                .expect("write");
        }
        let admin = Identity::operator("carol", Role::Admin);
        let line = AuditRecord::new(&admin, AuditAction::ForgetNode, "gone", "left");
        assert_eq!(store.forget_node("gone", &line).expect("forget"), 1);
        let other = AuditRecord::new(&admin, AuditAction::IssueCertificate, "dave", "");
        assert_eq!(store.record_audit(&other).expect("record"), 2);
        drop(store);

        let mut store = Store::open(&dir).expect("reopen");
        assert!(store.load_node("gone").expect("load").is_none());
        let kept = store.load_node("kept").expect("load").expect("kept");
        assert!(kept.report.and_then(|r| r.updates).is_some());
        let sections: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM node_sections WHERE node = 'gone'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(sections, 0);
        let lines = store.read_audit(0, 10).expect("read");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].seq, lines[0].action, lines[0].target.as_str()),
            (1, AuditAction::ForgetNode, "gone")
        );
        assert_eq!(
            (lines[0].who.as_str(), lines[0].role.as_str()),
            ("carol", "admin")
        );
        assert_eq!(store.read_audit(1, 10).expect("page 2")[0].seq, 2);
        assert!(store.read_audit(0, 1).expect("one").len() == 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
