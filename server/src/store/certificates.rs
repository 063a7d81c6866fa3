//! The `certificates` table: every certificate the server signed (agents'
//! renewals), so that "revoke by name" finds them all, not only the one in
//! the pki directory. A serial is recorded before its certificate leaves
//! the server; rows are never changed.

use rollcall_proto::timestamp::Timestamp;

use super::{Store, StoreError};
use crate::revoke::Serial;

/// A certificate the server signed, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCertificate {
    pub serial: Serial,
    /// The identity URI the certificate carries.
    pub identity: String,
    pub issued: Timestamp,
    pub not_after: Timestamp,
}

impl Store {
    /// Records a signed certificate (once per serial: a serial recorded
    /// already keeps its row).
    pub fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO certificates (serial, identity, issued_ms, not_after_ms)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(serial) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    cert.serial.as_str(),
                    cert.identity,
                    cert.issued.unix_millis(),
                    cert.not_after.unix_millis(),
                ])
            })
            .map_err(sql)?;
        Ok(())
    }

    /// The serials of every certificate signed for `identity` (a URI), in
    /// serial order. A row whose serial cannot be read (written by hand) is
    /// skipped with an error line.
    pub fn serials_signed_for(&self, identity: &str) -> Result<Vec<Serial>, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let texts = self
            .conn
            .prepare_cached("SELECT serial FROM certificates WHERE identity = ?1 ORDER BY serial")
            .and_then(|mut s| {
                s.query_map([identity], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sql)?;
        let mut serials: Vec<Serial> = texts
            .iter()
            .filter_map(|text| match Serial::parse(text) {
                Ok(serial) => Some(serial),
                Err(_) => {
                    tracing::error!(identity, serial = %rollcall_proto::text::Untrusted(text), "A recorded certificate names no serial number; it is ignored.");
                    None
                }
            })
            .collect();
        serials.sort();
        Ok(serials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_data_dir;

    fn signed(serial: &str, identity: &str) -> SignedCertificate {
        SignedCertificate {
            serial: Serial::parse(serial).expect("serial"),
            identity: identity.into(),
            issued: Timestamp::from_unix_millis(1_000),
            not_after: Timestamp::from_unix_millis(61_000),
        }
    }

    #[test]
    fn signed_serials_are_found_by_identity_and_survive_a_reopen() {
        let dir = temp_data_dir("certificates");
        let mut store = Store::open(&dir).expect("open");
        let n1 = "urn:rollcall:agent:n1";
        store.record_certificate(&signed("0b", n1)).expect("first");
        store.record_certificate(&signed("0a", n1)).expect("second");
        store
            .record_certificate(&signed("0c", "urn:rollcall:agent:n2"))
            .expect("another node");
        // The same serial again keeps the first row.
        store
            .record_certificate(&signed("0A", "urn:rollcall:agent:n2"))
            .expect("again");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        let want: Vec<Serial> = ["0a", "0b"]
            .iter()
            .map(|s| Serial::parse(s).expect("serial"))
            .collect();
        assert_eq!(store.serials_signed_for(n1).expect("read"), want);
        assert_eq!(
            store
                .serials_signed_for("urn:rollcall:agent:n2")
                .expect("read")
                .len(),
            1
        );
        assert!(
            store
                .serials_signed_for("urn:rollcall:agent:n3")
                .expect("read")
                .is_empty()
        );
    }
}
