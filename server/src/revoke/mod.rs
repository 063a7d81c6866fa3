//! Certificate revocation: what a revocation is, the serial numbers it
//! names, and the server's in-memory set of them ([`Revocations`]).
//!
//! Revocations live in the store (`revocations` table); the running server
//! holds them all in memory, loaded at start (a failed load stops it), added to by the
//! `RevocationService` and by a poll of the table every [`POLL_EVERY`]
//! (revocations written offline by `certs revoke` or `certs issue --force`).
//! The accept loop asks the set about every new connection, so a handshake
//! never waits on the disk.

mod crl;
mod poll;
mod registry;

use std::fmt;
use std::path::Path;

use rollcall_proto::identity::{self, Identity, Kind};
use rollcall_proto::timestamp::Timestamp;

pub use crl::{CrlError, crl_pem};
pub use poll::{POLL_EVERY, load, spawn_poller};
pub use registry::{Revocations, Seat};

/// A certificate serial number: lowercase hex, whole bytes, no leading zero
/// bytes (`0abc`, as `openssl x509 -serial` prints it, in lower case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid serial {0:?}: give the certificate's serial number in hex (openssl x509 -noout -serial -in FILE)"
)]
pub struct BadSerial(String);

impl Serial {
    /// Reads a serial as people write it: hex digits, with or without
    /// colons, `0x`, upper case or leading zeros.
    pub fn parse(text: &str) -> Result<Self, BadSerial> {
        let bad = || BadSerial(text.chars().take(80).collect());
        let trimmed = text.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let digits: String = digits.chars().filter(|c| *c != ':').collect();
        // 20 bytes is RFC 5280's limit; some CAs go a little over it.
        if digits.is_empty() || digits.len() > 80 || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        let digits = digits.to_ascii_lowercase();
        let significant = digits.trim_start_matches('0');
        Ok(Self(match significant.len() {
            0 => "00".to_owned(),
            n if n % 2 == 1 => format!("0{significant}"),
            _ => significant.to_owned(),
        }))
    }

    /// The serial of a DER certificate, `None` if it cannot be parsed.
    pub fn of_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Self::of_bytes(cert.raw_serial()))
    }

    /// The serial of the first certificate in a PEM text.
    pub fn of_pem(pem: &[u8]) -> Option<Self> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
        Self::of_der(&pem.contents)
    }

    fn of_bytes(bytes: &[u8]) -> Self {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self::parse(&hex).unwrap_or_else(|_| Self("00".to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The big-endian bytes, for the CRL.
    pub fn to_bytes(&self) -> Vec<u8> {
        (0..self.0.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.0[i..i + 2], 16).unwrap_or(0))
            .collect()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One revoked certificate, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub serial: Serial,
    /// The identity URI the certificate carries, when known.
    pub identity: Option<String>,
    pub reason: String,
    pub at: Timestamp,
    /// The admin's identity URI, or the offline command that revoked it.
    pub by: String,
}

impl Revocation {
    /// The sentence a refused client and the log read: which certificate,
    /// when, by whom and why.
    pub fn describe(&self) -> String {
        let of = self
            .identity
            .as_deref()
            .map(|uri| format!(" of {uri}"))
            .unwrap_or_default();
        let mut text = format!(
            "serial {}{of} revoked at {} by {}",
            self.serial, self.at, self.by
        );
        if !self.reason.is_empty() {
            text.push_str(": ");
            text.push_str(&self.reason);
        }
        text
    }
}

/// The serial of `who`'s certificate in a pki directory
/// (`agents/NODE.crt` or `operators/NAME.crt`), if one is there and names
/// `who`'s kind and name. An operator's role is not compared: re-issuing
/// or revoking `alice` reaches her certificate whatever role it carries.
pub fn serial_in_pki(pki: &Path, who: &Identity) -> Option<Serial> {
    let dir = match who.kind {
        Kind::Agent => "agents",
        Kind::Operator => "operators",
    };
    let pem = std::fs::read(pki.join(dir).join(format!("{}.crt", who.name))).ok()?;
    let named = identity::from_pem(std::str::from_utf8(&pem).ok()?).ok()?;
    (named.kind == who.kind && named.name == who.name)
        .then(|| Serial::of_pem(&pem))
        .flatten()
}

/// Every identity URI a certificate of `who`'s kind and name may carry: an
/// agent's one, an operator's under each role. Revoke by name looks up
/// each.
pub fn uris_of(who: &Identity) -> Vec<String> {
    match who.kind {
        Kind::Agent => vec![Identity::agent(who.name.clone()).uri()],
        Kind::Operator => identity::Role::ALL
            .iter()
            .map(|role| Identity::operator(who.name.clone(), *role).uri())
            .collect(),
    }
}

/// What "revoke by name" revokes: the certificate in the pki directory and
/// every serial `known` otherwise (the ones the server signed, from the
/// store, and the running server's: connected since it started), each
/// once, in order.
pub fn serials_of(who: &Identity, pki: Option<&Path>, known: Vec<Serial>) -> Vec<Serial> {
    let mut serials = known;
    serials.extend(pki.and_then(|dir| serial_in_pki(dir, who)));
    serials.sort();
    serials.dedup();
    serials
}

/// A revocation's reason is kept at most this long (bytes).
pub const MAX_REASON_BYTES: usize = 1_024;

/// Who revoked offline: the command, so the record says it was not an RPC.
pub const BY_CERTS_REVOKE: &str = "certs revoke (offline)";
pub const BY_CERTS_ISSUE_FORCE: &str = "certs issue --force";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_read_as_people_write_them_and_kept_in_one_form() {
        let one = Serial::parse("0A:BC").expect("colons");
        assert_eq!(one.as_str(), "0abc");
        for same in ["abc", "0x0ABC", "000abc", " 0a:bc "] {
            assert_eq!(Serial::parse(same).as_ref(), Ok(&one), "{same}");
        }
        assert_eq!(one.to_bytes(), vec![0x0a, 0xbc]);
        assert_eq!(Serial::parse("0").expect("zero").as_str(), "00");
        for bad in ["", "xyz", "12 34", &"f".repeat(81), "0x"] {
            assert!(Serial::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn by_name_revokes_the_pki_file_and_what_was_seen_each_once() {
        let pki = tempfile::tempdir().expect("dir");
        crate::pki::init(pki.path(), &[]).expect("init");
        let who = Identity {
            kind: Kind::Agent,
            name: "n1".into(),
            role: None,
        };
        assert_eq!(serials_of(&who, Some(pki.path()), Vec::new()), vec![]);
        crate::pki::issue(pki.path(), &who, false).expect("issue");
        let file = serial_in_pki(pki.path(), &who).expect("the file's serial");
        let older = Serial::parse("01").expect("serial");
        assert_eq!(
            serials_of(&who, Some(pki.path()), vec![file.clone(), older.clone()]),
            vec![older.clone(), file]
        );
        assert_eq!(serials_of(&who, None, vec![older.clone()]), vec![older]);
        let operator = Identity {
            kind: Kind::Operator,
            name: "n1".into(),
            role: Some(rollcall_proto::identity::Role::Operator),
        };
        assert_eq!(serial_in_pki(pki.path(), &operator), None, "another kind");
    }

    #[test]
    fn an_operators_certificate_is_found_by_name_whatever_its_role() {
        use rollcall_proto::identity::Role;
        let pki = tempfile::tempdir().expect("dir");
        crate::pki::init(pki.path(), &[]).expect("init");
        crate::pki::issue(pki.path(), &Identity::operator("alice", Role::Admin), false)
            .expect("issue");
        let file = serial_in_pki(pki.path(), &Identity::operator("alice", Role::Admin))
            .expect("the admin's own serial");
        for role in [Role::Viewer, Role::Operator] {
            assert_eq!(
                serial_in_pki(pki.path(), &Identity::operator("alice", role)),
                Some(file.clone()),
                "{role:?}"
            );
        }
        assert_eq!(
            serial_in_pki(pki.path(), &Identity::operator("bob", Role::Admin)),
            None
        );
        let uris = uris_of(&Identity::operator("alice", Role::Viewer));
        assert_eq!(uris.len(), Role::ALL.len());
        assert!(uris.contains(&Identity::operator("alice", Role::Admin).uri()));
        assert_eq!(
            uris_of(&Identity::agent("n1")),
            vec!["urn:rollcall:agent:n1".to_owned()]
        );
    }

    #[test]
    fn the_serial_of_an_issued_certificate_is_its_der_serial() {
        let ca = crate::pki::Ca::generate("t").expect("ca");
        let who = rollcall_proto::identity::Identity {
            kind: rollcall_proto::identity::Kind::Agent,
            name: "n1".into(),
            role: None,
        };
        let issued = ca.issue_client(&who).expect("issue");
        let serial = Serial::of_pem(issued.cert_pem.as_bytes()).expect("serial");
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        assert_eq!(serial.to_bytes(), cert.serial.to_bytes_be());
        assert_eq!(Serial::of_der(&pem.contents), Some(serial));
    }
}
