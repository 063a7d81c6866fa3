//! `rollcall-agent cert-status`: what the agent's certificate file says
//! about its own life, for people and for the Ansible role, which re-issues
//! a certificate only when it is missing, unreadable or near its end.

use std::path::{Path, PathBuf};

use rollcall_proto::certinfo::CertInfo;
use rollcall_proto::timestamp::Timestamp;
use serde::Serialize;

/// The `--json` shape (stable: the Ansible role reads it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CertStatus {
    /// The certificate file looked at.
    pub cert: PathBuf,
    /// The file exists.
    pub present: bool,
    /// It exists and is an agent certificate rollcall can read.
    pub usable: bool,
    /// The node it names.
    pub node: Option<String>,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    /// Seconds until it expires; negative once it has.
    pub expires_in_secs: Option<i64>,
    /// When a running agent asks the server for the next one (two thirds
    /// into its life, without the agent's own jitter).
    pub renew_at: Option<Timestamp>,
    /// Why it is not usable.
    pub error: Option<String>,
}

/// Reads `cert` as of `now`.
pub fn status(cert: &Path, now: Timestamp) -> CertStatus {
    let mut out = CertStatus {
        cert: cert.to_owned(),
        present: false,
        usable: false,
        node: None,
        not_before: None,
        not_after: None,
        expires_in_secs: None,
        renew_at: None,
        error: None,
    };
    let text = match std::fs::read(cert) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.present = true;
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.present = true;
    match CertInfo::from_pem(&String::from_utf8_lossy(&text)) {
        Ok(info) if info.identity.kind == rollcall_proto::identity::Kind::Agent => {
            out.usable = true;
            out.node = Some(info.identity.name.clone());
            out.not_before = Some(info.not_before);
            out.not_after = Some(info.not_after);
            out.expires_in_secs =
                Some((info.not_after.unix_millis() - now.unix_millis()).div_euclid(1_000));
            out.renew_at = Some(info.renew_at(0.0));
        }
        Ok(info) => {
            out.error = Some(format!(
                "a {} certificate, not an agent's",
                info.identity.kind
            ))
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

impl CertStatus {
    /// One line for people.
    pub fn line(&self) -> String {
        let path = self.cert.display();
        match (
            &self.node,
            self.not_after,
            self.expires_in_secs,
            &self.error,
        ) {
            _ if !self.present => format!("{path}: no certificate"),
            (_, _, _, Some(e)) => format!("{path}: unusable: {e}"),
            (Some(node), Some(after), Some(left), None) if left < 0 => {
                format!("{path}: node {node}, expired at {after}")
            }
            (Some(node), Some(after), Some(left), None) => format!(
                "{path}: node {node}, valid until {after} ({} days left)",
                left / 86_400
            ),
            _ => format!("{path}: unusable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_not_present_and_garbage_is_not_usable() {
        let dir = std::env::temp_dir().join(format!("rollcall-certstatus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = status(&dir.join("nope.crt"), Timestamp::now());
        assert!(!missing.present && !missing.usable, "{missing:?}");
        assert!(missing.line().contains("no certificate"));
        let garbage = dir.join("garbage.crt");
        std::fs::write(&garbage, "hello").expect("write");
        let s = status(&garbage, Timestamp::now());
        assert!(s.present && !s.usable && s.error.is_some(), "{s:?}");
        assert!(s.expires_in_secs.is_none());
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["present"], true);
        assert_eq!(json["usable"], false);
        std::fs::remove_dir_all(&dir).ok();
    }
}
