//! The audit of operator actions beyond campaigns: who (the name and role
//! in their certificate) did what, to what, and when. Campaign changes keep
//! their own audit lines with the campaign (`campaign::record`).
//!
//! [`record`] is the one way to write a line: durable when it returns
//! `Ok`, in the `operator_audit` table. A change that must not happen
//! without its line (forgetting a node) is written with it in one
//! transaction instead (`WriterHandle::forget`). Lines are read back page
//! by page (`WriterHandle::read_audit`, `AdminService.ListAudit`), oldest
//! first; the names in them come from certificates and are shown escaped.

use rollcall_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use rollcall_proto::identity::Identity;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use serde::Serialize;

use crate::store::{NotStored, WriterHandle};

/// What was done. Each is a word in the store and on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// `nodes forget`: a node and its stored report removed.
    ForgetNode,
    /// A certificate revoked.
    RevokeCertificate,
    /// A certificate renewed over an agent's session.
    RenewCertificate,
    /// A certificate issued.
    IssueCertificate,
}

rollcall_proto::names!(AuditAction, "audit action" {
    ForgetNode => "forget-node",
    RevokeCertificate => "revoke-certificate",
    RenewCertificate => "renew-certificate",
    IssueCertificate => "issue-certificate",
});

/// One line of the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Order of recording, from 1; 0 until stored.
    pub seq: u64,
    pub at: Timestamp,
    /// The name in the actor's certificate.
    pub who: String,
    /// What that certificate holds: `viewer`, `operator`, `admin`, or
    /// `agent` for a node acting on its own certificate.
    pub role: String,
    pub action: AuditAction,
    /// What it was done to: a node's or an operator's name, a serial.
    pub target: String,
    pub detail: String,
}

impl AuditRecord {
    /// A line not yet stored: `who` does `action` to `target` now.
    pub fn new(who: &Identity, action: AuditAction, target: &str, detail: &str) -> Self {
        AuditRecord {
            seq: 0,
            at: Timestamp::now(),
            who: who.name.clone(),
            role: who.role_name().to_owned(),
            action,
            target: target.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// Records that `who` did `action` to `target`: on disk when it returns
/// `Ok` (with the line as stored). For actions that change nothing in the
/// store themselves (a certificate issued or renewed, say); record before
/// acting when the action must not go unrecorded.
pub async fn record(
    store: &WriterHandle,
    who: &Identity,
    action: AuditAction,
    target: &str,
    detail: &str,
) -> Result<AuditRecord, NotStored> {
    let mut line = AuditRecord::new(who, action, target, detail);
    line.seq = store.record_audit(line.clone()).await?;
    Ok(line)
}

impl From<AuditRecord> for v1::AuditRecord {
    fn from(r: AuditRecord) -> Self {
        v1::AuditRecord {
            seq: r.seq,
            at: Some(timestamp_to_wire(r.at)),
            who: r.who,
            role: r.role,
            action: r.action.as_str().to_owned(),
            target: r.target,
            detail: r.detail,
        }
    }
}

impl TryFrom<v1::AuditRecord> for AuditRecord {
    type Error = rollcall_proto::names::UnknownName;

    fn try_from(r: v1::AuditRecord) -> Result<Self, Self::Error> {
        Ok(AuditRecord {
            seq: r.seq,
            at: r
                .at
                .as_ref()
                .map_or(Timestamp::from_unix_millis(0), timestamp_from_wire),
            who: r.who,
            role: r.role,
            action: r.action.parse()?,
            target: r.target,
            detail: r.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::identity::Role;

    #[test]
    fn action_names_are_their_serde_names() {
        for action in AuditAction::ALL {
            assert_eq!(
                serde_json::to_value(action).expect("serializes"),
                serde_json::Value::String(action.as_str().into())
            );
            assert_eq!(action.as_str().parse(), Ok(action));
        }
    }

    #[test]
    fn a_record_names_the_certificate_and_survives_the_wire() {
        let who = Identity::operator("carol", Role::Admin);
        let mut line = AuditRecord::new(&who, AuditAction::ForgetNode, "cmp7", "left the cloud");
        assert_eq!((line.who.as_str(), line.role.as_str()), ("carol", "admin"));
        line.seq = 3;
        line.at = Timestamp::from_unix_millis(1_700_000_000_123);
        let back = AuditRecord::try_from(v1::AuditRecord::from(line.clone())).expect("valid");
        assert_eq!(back, line);
    }
}
