//! The `revocations` table: revoked certificates, one row per serial.
//!
//! Written by the running server's writer thread (the `RevocationService`)
//! and by the offline commands (`certs revoke`, `certs issue --force`) from
//! a process of their own; SQLite's locking orders the two. A serial's
//! first revocation stands: revoking it again returns the stored row.

use rollcall_proto::timestamp::Timestamp;

use super::{Store, StoreError};
use crate::revoke::{Revocation, Serial};

const COLUMNS: &str = "seq, serial, identity, reason, at_ms, revoked_by";

impl Store {
    /// Stores a revocation unless its serial is revoked already; returns
    /// the serial's stored revocation either way.
    pub fn revoke(&mut self, revocation: &Revocation) -> Result<Revocation, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.prepare_cached(
            "INSERT INTO revocations (serial, identity, reason, at_ms, revoked_by)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(serial) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                revocation.serial.as_str(),
                revocation.identity.as_deref().unwrap_or(""),
                revocation.reason,
                revocation.at.unix_millis(),
                revocation.by,
            ])
        })
        .map_err(sql)?;
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM revocations WHERE serial = ?1"
            ))
            .and_then(|mut s| s.query_row([revocation.serial.as_str()], read_row))
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(stored.map(|(_, r)| r).unwrap_or_else(|| revocation.clone()))
    }

    /// Revocations stored after `seq`, in order, each with its own `seq`.
    /// A row whose serial cannot be read (written by hand) is skipped with
    /// an error line.
    pub fn revocations_since(&self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM revocations WHERE seq > ?1 ORDER BY seq"
            ))
            .map_err(sql)?;
        let rows = stmt
            .query_map([seq], read_row)
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// One row, or `None` (logged) when its serial is not one.
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(i64, Revocation)>> {
    let seq: i64 = row.get(0)?;
    let serial: String = row.get(1)?;
    let Ok(serial) = Serial::parse(&serial) else {
        tracing::error!(seq, serial = %rollcall_proto::text::Untrusted(&serial), "A stored revocation names no serial number; it is ignored.");
        return Ok(None);
    };
    let identity: String = row.get(2)?;
    Ok(Some((
        seq,
        Revocation {
            serial,
            identity: (!identity.is_empty()).then_some(identity),
            reason: row.get(3)?,
            at: Timestamp::from_unix_millis(row.get(4)?),
            by: row.get(5)?,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_data_dir;

    fn revocation(serial: &str, reason: &str) -> Revocation {
        Revocation {
            serial: Serial::parse(serial).expect("serial"),
            identity: Some("urn:rollcall:agent:n1".into()),
            reason: reason.into(),
            at: Timestamp::from_unix_millis(1_000),
            by: "urn:rollcall:operator:root".into(),
        }
    }

    #[test]
    fn the_first_revocation_of_a_serial_stands_and_survives_a_reopen() {
        let dir = temp_data_dir("revocations");
        let mut store = Store::open(&dir).expect("open");
        let first = store.revoke(&revocation("0a", "lost")).expect("revoke");
        assert_eq!(first.reason, "lost");
        let again = store.revoke(&revocation("0A", "again")).expect("again");
        assert_eq!(again.reason, "lost", "the first record stands");
        store.revoke(&revocation("0b", "")).expect("second serial");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        let all = store.revocations_since(0).expect("read");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, first);
        let later = store.revocations_since(all[0].0).expect("since");
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].1.serial.as_str(), "0b");
        assert_eq!(
            later[0].1.identity.as_deref(),
            Some("urn:rollcall:agent:n1")
        );
    }
}
