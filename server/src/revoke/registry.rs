//! The revoked set in memory, and the connections open under each serial.
//!
//! One mutex keeps "is it revoked?" at connect and "cut what is open" at
//! revoke in one order: a connection is either refused at [`Revocations::admit`]
//! or holds a [`Seat`] whose token [`Revocations::apply`] cancels. Every
//! operation is a few map lookups; nothing here waits on the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::{Revocation, Serial};

/// The server's revoked set. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Revocations(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    revoked: HashMap<Serial, Revocation>,
    /// Open connections per serial: one token cuts them all.
    live: HashMap<Serial, Live>,
    /// Every serial seen connecting since start, per identity URI: what
    /// "revoke by name" finds beside the pki directory's file.
    seen: HashMap<String, BTreeSet<Serial>>,
}

#[derive(Debug)]
struct Live {
    cut: CancellationToken,
    open: usize,
}

/// A connection's place under its serial: its token is cancelled when the
/// serial is revoked; dropping it gives the place back.
#[derive(Debug)]
pub struct Seat {
    revocations: Revocations,
    serial: Serial,
    cut: CancellationToken,
}

impl Seat {
    /// Cancelled when the certificate is revoked.
    pub fn cut(&self) -> CancellationToken {
        self.cut.clone()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut inner = self.revocations.lock();
        if let Some(live) = inner.live.get_mut(&self.serial) {
            live.open = live.open.saturating_sub(1);
            if live.open == 0 {
                inner.live.remove(&self.serial);
            }
        }
    }
}

impl Revocations {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Maps of plain values: a panic while one was held leaves nothing
        // half-done that is worth refusing every connection for.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection with this certificate: its seat, or the revocation
    /// that refuses it. `identity` (its URI) is noted as seen.
    pub fn admit(&self, serial: &Serial, identity: Option<&str>) -> Result<Seat, Revocation> {
        let mut inner = self.lock();
        if let Some(revoked) = inner.revoked.get(serial) {
            return Err(revoked.clone());
        }
        if let Some(uri) = identity {
            inner
                .seen
                .entry(uri.to_owned())
                .or_default()
                .insert(serial.clone());
        }
        let live = inner.live.entry(serial.clone()).or_insert_with(|| Live {
            cut: CancellationToken::new(),
            open: 0,
        });
        live.open += 1;
        Ok(Seat {
            revocations: self.clone(),
            serial: serial.clone(),
            cut: live.cut.clone(),
        })
    }

    /// Adds revocations (already stored) and cuts every connection open
    /// under them. Returns how many connections were cut; one already known
    /// changes nothing.
    pub fn apply(&self, revocations: impl IntoIterator<Item = Revocation>) -> usize {
        let mut inner = self.lock();
        let mut cut = 0;
        for revocation in revocations {
            if inner.revoked.contains_key(&revocation.serial) {
                continue;
            }
            if let Some(live) = inner.live.remove(&revocation.serial) {
                tracing::warn!(serial = %revocation.serial, identity = revocation.identity.as_deref().unwrap_or(""), by = %revocation.by, connections = live.open, "Certificate revoked: cutting its open connections.");
                live.cut.cancel();
                cut += live.open;
            }
            inner.revoked.insert(revocation.serial.clone(), revocation);
        }
        cut
    }

    /// Every serial seen connecting with this identity URI since start.
    pub fn seen(&self, identity: &str) -> Vec<Serial> {
        self.lock()
            .seen
            .get(identity)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many serials are revoked.
    pub fn len(&self) -> usize {
        self.lock().revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::timestamp::Timestamp;

    fn revocation(serial: &Serial) -> Revocation {
        Revocation {
            serial: serial.clone(),
            identity: Some("urn:rollcall:agent:n1".into()),
            reason: "lost".into(),
            at: Timestamp::from_unix_millis(1),
            by: "test".into(),
        }
    }

    #[test]
    fn a_revocation_cuts_every_open_connection_of_its_serial_and_refuses_the_next() {
        let set = Revocations::default();
        let (a, b) = (
            Serial::parse("0a").expect("a"),
            Serial::parse("0b").expect("b"),
        );
        let first = set.admit(&a, Some("urn:rollcall:agent:n1")).expect("a");
        let second = set
            .admit(&a, Some("urn:rollcall:agent:n1"))
            .expect("a again");
        let other = set.admit(&b, Some("urn:rollcall:agent:n2")).expect("b");
        assert_eq!(set.apply([revocation(&a)]), 2);
        assert!(first.cut().is_cancelled() && second.cut().is_cancelled());
        assert!(!other.cut().is_cancelled(), "another serial is untouched");
        let refused = set.admit(&a, None).expect_err("revoked");
        assert_eq!(refused.reason, "lost");
        assert_eq!(set.apply([revocation(&a)]), 0, "applying again is a no-op");
        drop((first, second));
        assert_eq!(set.seen("urn:rollcall:agent:n1"), vec![a]);
    }

    #[test]
    fn a_seat_gives_its_place_back() {
        let set = Revocations::default();
        let a = Serial::parse("0a").expect("a");
        drop(set.admit(&a, None).expect("a"));
        assert!(set.lock().live.is_empty());
        // Nothing open: revoking cuts nothing but still refuses.
        assert_eq!(set.apply([revocation(&a)]), 0);
        assert!(set.admit(&a, None).is_err());
        assert_eq!(set.len(), 1);
    }
}
