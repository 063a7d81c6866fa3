//! The store's one interface: what a starting server reads, and the few
//! writes the server makes, each durable when it returns `Ok`. SQLite
//! ([`Store`]) and PostgreSQL ([`super::pg::PgStore`]) are its backends;
//! nothing else in the server knows which is in use. [`Faulty`] wraps any
//! backend and fails its writes on demand, so tests can show what the
//! server does while its disk is full without filling one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rollcall_proto::model::ActionResult;

use super::{NodeWrite, SignedCertificate, Store, StoreError, StoredCampaign, StoredNode};
use crate::audit::AuditRecord;
use crate::campaign::record::CampaignWrite;
use crate::revoke::{Revocation, Serial};

/// What the writer thread needs of a store. Every method commits before it
/// returns `Ok`, or changes nothing.
pub trait Backend: Send + 'static {
    /// One action's latest state, in its own transaction.
    fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError>;
    /// A campaign change (campaign, node runs, the actions it asks for,
    /// audit lines), in one transaction.
    fn write_campaign(&mut self, write: &CampaignWrite) -> Result<(), StoreError>;
    /// A batch of node changes, in one transaction. Returns how many nodes.
    fn write_nodes(
        &mut self,
        batch: &mut dyn Iterator<Item = &NodeWrite>,
    ) -> Result<usize, StoreError>;
    /// A small durable write that proves the store takes writes again.
    fn probe(&mut self) -> Result<(), StoreError>;
    /// A revocation unless its serial is revoked already; the serial's
    /// stored revocation either way.
    fn revoke(&mut self, revocation: &Revocation) -> Result<Revocation, StoreError>;
    /// Revocations stored after `seq` (a read: what offline commands wrote).
    fn revocations_since(&mut self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError>;
    /// Records a certificate the server signed.
    fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError>;
    /// The serials signed for an identity URI (a read).
    fn serials_signed_for(&mut self, identity: &str) -> Result<Vec<Serial>, StoreError>;
    /// Removes a node's record and report sections and writes its audit
    /// line, in one transaction. Returns the line's `seq`.
    fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError>;
    /// Appends one operator audit line. Returns its `seq`.
    fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError>;
    /// Up to `limit` operator audit lines after `seq` `after`, oldest first.
    fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Hands every stored node to `each`, sorted by name (a starting
    /// server's read; never every decoded report at once).
    fn each_node(&mut self, each: &mut dyn FnMut(StoredNode)) -> Result<(), StoreError>;
    /// Every stored action result, by id.
    fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError>;
    /// Every campaign that can be read whole, oldest first.
    fn load_campaigns(&mut self) -> Result<Vec<StoredCampaign>, StoreError>;
    /// Where the store is, for logs (never a password).
    fn describe(&self) -> String;
}

impl Backend for Store {
    fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        Store::put_action(self, result)
    }

    fn write_campaign(&mut self, write: &CampaignWrite) -> Result<(), StoreError> {
        Store::write_campaign(self, write)
    }

    fn write_nodes(
        &mut self,
        batch: &mut dyn Iterator<Item = &NodeWrite>,
    ) -> Result<usize, StoreError> {
        Store::write_nodes(self, batch)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        Store::probe(self)
    }

    fn revoke(&mut self, revocation: &Revocation) -> Result<Revocation, StoreError> {
        Store::revoke(self, revocation)
    }

    fn revocations_since(&mut self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
        Store::revocations_since(self, seq)
    }

    fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError> {
        Store::record_certificate(self, cert)
    }

    fn serials_signed_for(&mut self, identity: &str) -> Result<Vec<Serial>, StoreError> {
        Store::serials_signed_for(self, identity)
    }

    fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError> {
        Store::forget_node(self, node, audit)
    }

    fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError> {
        Store::record_audit(self, audit)
    }

    fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        Store::read_audit(self, after, limit)
    }

    fn each_node(&mut self, each: &mut dyn FnMut(StoredNode)) -> Result<(), StoreError> {
        Store::each_node(self, each)
    }

    fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError> {
        Store::load_actions(self)
    }

    fn load_campaigns(&mut self) -> Result<Vec<StoredCampaign>, StoreError> {
        Store::load_campaigns(self)
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

/// A backend chosen at run time (SQLite or PostgreSQL) is a backend.
impl<B: Backend + ?Sized> Backend for Box<B> {
    fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        (**self).put_action(result)
    }
    fn write_campaign(&mut self, write: &CampaignWrite) -> Result<(), StoreError> {
        (**self).write_campaign(write)
    }
    fn write_nodes(
        &mut self,
        batch: &mut dyn Iterator<Item = &NodeWrite>,
    ) -> Result<usize, StoreError> {
        (**self).write_nodes(batch)
    }
    fn probe(&mut self) -> Result<(), StoreError> {
        (**self).probe()
    }
    fn revoke(&mut self, revocation: &Revocation) -> Result<Revocation, StoreError> {
        (**self).revoke(revocation)
    }
    fn revocations_since(&mut self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
        (**self).revocations_since(seq)
    }
    fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError> {
        (**self).record_certificate(cert)
    }
    fn serials_signed_for(&mut self, identity: &str) -> Result<Vec<Serial>, StoreError> {
        (**self).serials_signed_for(identity)
    }
    fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError> {
        (**self).forget_node(node, audit)
    }
    fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError> {
        (**self).record_audit(audit)
    }
    fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        (**self).read_audit(after, limit)
    }
    fn each_node(&mut self, each: &mut dyn FnMut(StoredNode)) -> Result<(), StoreError> {
        (**self).each_node(each)
    }
    fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError> {
        (**self).load_actions()
    }
    fn load_campaigns(&mut self) -> Result<Vec<StoredCampaign>, StoreError> {
        (**self).load_campaigns()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Switches a [`Faulty`] backend's writes off and on. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch {
    /// Why writes fail; `None` while they go through.
    failing: Arc<Mutex<Option<String>>>,
    refused_actions: Arc<AtomicU64>,
    /// Writes hang while set, as on a stalled disk.
    stalled: Arc<AtomicBool>,
}

impl FaultSwitch {
    /// How many action writes were refused so far: a test's proof that
    /// the server tried to store what it was sent.
    pub fn refused_actions(&self) -> u64 {
        self.refused_actions.load(Ordering::SeqCst)
    }

    /// From now on every write fails with `reason`.
    pub fn fail(&self, reason: &str) {
        *self.lock() = Some(reason.to_owned());
    }

    /// From now on every write hangs until [`FaultSwitch::heal`], as a
    /// stalled disk (a dead NFS server, a failing controller) makes it.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Writes go through again.
    pub fn heal(&self) {
        *self.lock() = None;
        self.stalled.store(false, Ordering::SeqCst);
    }

    fn reason(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A backend whose writes fail while its [`FaultSwitch`] says so, as a
/// full disk makes them fail: nothing is written, an error comes back.
/// For tests; production never builds one.
pub struct Faulty<B> {
    inner: B,
    switch: FaultSwitch,
}

impl<B: Backend> Faulty<B> {
    pub fn new(inner: B, switch: FaultSwitch) -> Self {
        Self { inner, switch }
    }

    fn check(&self) -> Result<(), StoreError> {
        while self.switch.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        match self.switch.reason() {
            Some(reason) => Err(StoreError::Injected(reason)),
            None => Ok(()),
        }
    }
}

impl<B: Backend> Backend for Faulty<B> {
    fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        self.check().inspect_err(|_| {
            self.switch.refused_actions.fetch_add(1, Ordering::SeqCst);
        })?;
        self.inner.put_action(result)
    }

    fn write_campaign(&mut self, write: &CampaignWrite) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write_campaign(write)
    }

    fn write_nodes(
        &mut self,
        batch: &mut dyn Iterator<Item = &NodeWrite>,
    ) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.write_nodes(batch)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.probe()
    }

    fn revoke(&mut self, revocation: &Revocation) -> Result<Revocation, StoreError> {
        self.check()?;
        self.inner.revoke(revocation)
    }

    /// Reads go through: a full disk still reads.
    fn revocations_since(&mut self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
        self.inner.revocations_since(seq)
    }

    fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_certificate(cert)
    }

    /// A full disk still reads.
    fn serials_signed_for(&mut self, identity: &str) -> Result<Vec<Serial>, StoreError> {
        self.inner.serials_signed_for(identity)
    }

    fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.forget_node(node, audit)
    }

    fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.record_audit(audit)
    }

    /// A full disk still reads.
    fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.read_audit(after, limit)
    }

    fn each_node(&mut self, each: &mut dyn FnMut(StoredNode)) -> Result<(), StoreError> {
        self.inner.each_node(each)
    }

    fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError> {
        self.inner.load_actions()
    }

    fn load_campaigns(&mut self) -> Result<Vec<StoredCampaign>, StoreError> {
        self.inner.load_campaigns()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
