//! The agent renews its own certificate over its session: two thirds into
//! the certificate's life (± 5 % of it, drawn once per agent so that a
//! fleet issued in one run does not ask in one second), it makes a new key
//! here, sends a certificate signing request that names this node and
//! nothing else, and writes the certificate the server returns next to the
//! key, each atomically. The key never leaves the node. The running session
//! keeps its connection; the next connection reads the new files.
//!
//! A refusal or an error is logged once per attempt, and the next attempt
//! comes after a backoff that grows with failures but stays well inside the
//! certificate's remaining life.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use rollcall_proto::certinfo::CertInfo;
use rollcall_proto::identity::{Identity, IdentityError, Kind};
use rollcall_proto::timestamp::Timestamp;

use crate::backoff::Backoff;

/// How long the server may take to answer a request before the attempt
/// counts as failed.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error("cannot make a key or request: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server's certificate is unusable: {0}")]
    BadAnswer(String),
    #[error("no answer from the server within {0:?}")]
    NoAnswer(Duration),
    #[error("the session ended before the server answered")]
    SessionEnded,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RenewError + '_ {
    move |source| RenewError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the agent's certificate and key live (`[tls] cert`, `[tls] key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate and key as they are now, for the next connection.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), RenewError> {
        self.recover()?;
        let cert = std::fs::read(&self.cert).map_err(io_err(&self.cert))?;
        let key = std::fs::read(&self.key).map_err(io_err(&self.key))?;
        Ok((cert, key))
    }

    pub fn info(cert_pem: &[u8], path: &Path) -> Result<CertInfo, RenewError> {
        CertInfo::from_pem(&String::from_utf8_lossy(cert_pem)).map_err(|source| {
            RenewError::Certificate {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Writes a key and its certificate as a pair: both are staged first
    /// (`KEY.new`, 0600 from its first byte, and `CERT.new`, each synced),
    /// then renamed, the key first. A failure while staging leaves the old
    /// pair as it was; a stop between the two renames leaves `CERT.new`
    /// alone beside the new key, which [`CertFiles::recover`] completes.
    fn install(&self, key_pem: &str, cert_pem: &str) -> Result<(), RenewError> {
        let (key_new, cert_new) = (staged(&self.key), staged(&self.cert));
        let staging = write_synced(&key_new, key_pem, 0o600)
            .and_then(|()| write_synced(&cert_new, cert_pem, 0o644));
        if let Err(e) = staging {
            let _ = std::fs::remove_file(&key_new);
            let _ = std::fs::remove_file(&cert_new);
            return Err(e);
        }
        std::fs::rename(&key_new, &self.key).map_err(io_err(&self.key))?;
        std::fs::rename(&cert_new, &self.cert).map_err(io_err(&self.cert))?;
        sync_dir(&self.key)?;
        sync_dir(&self.cert)
    }

    /// Completes or undoes an install that stopped half way: `CERT.new`
    /// without `KEY.new` means the new key is in place and its certificate
    /// is not yet (finish the rename); `KEY.new` still there means nothing
    /// was renamed (drop what was staged).
    pub fn recover(&self) -> Result<(), RenewError> {
        let (key_new, cert_new) = (staged(&self.key), staged(&self.cert));
        if key_new.exists() {
            let _ = std::fs::remove_file(&key_new);
            let _ = std::fs::remove_file(&cert_new);
        } else if cert_new.exists() {
            std::fs::rename(&cert_new, &self.cert).map_err(io_err(&self.cert))?;
            sync_dir(&self.cert)?;
        }
        Ok(())
    }
}

fn staged(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    PathBuf::from(tmp)
}

fn sync_dir(path: &Path) -> Result<(), RenewError> {
    // A rename is durable only once its directory is.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

fn write_synced(tmp: &Path, contents: &str, mode: u32) -> Result<(), RenewError> {
    let tmp = tmp.to_owned();
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    // The umask may have narrowed a public file; make it exactly `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    Ok(())
}

/// A key made for a request, waiting for its certificate.
pub struct Pending {
    key: KeyPair,
    asked_at: Timestamp,
}

impl Pending {
    pub fn asked_at(&self) -> Timestamp {
        self.asked_at
    }
}

/// A new key and the request for `node`'s certificate, PEM.
pub fn request(node: &str, now: Timestamp) -> Result<(Pending, String), RenewError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, node);
    let who = Identity {
        kind: Kind::Agent,
        name: node.to_owned(),
        role: None,
    };
    params.subject_alt_names = vec![SanType::URI(who.uri().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((Pending { key, asked_at: now }, csr))
}

/// One agent's renewals: when the next attempt is due, and the key waiting
/// for its certificate.
pub struct Renewal {
    files: CertFiles,
    node: String,
    /// Where in ± 5 % of a certificate's life this agent renews.
    jitter: f64,
    /// The certificate the next connection uses, as last read.
    current: Option<CertInfo>,
    /// After a failed attempt: when to try again.
    retry_at: Option<Timestamp>,
    backoff: Backoff,
    pending: Option<Pending>,
}

impl Renewal {
    pub fn new(files: CertFiles, node: String) -> Self {
        Self {
            files,
            node,
            jitter: fastrand::f64() * 2.0 - 1.0,
            current: None,
            retry_at: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
            pending: None,
        }
    }

    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// Takes note of the certificate a new connection presents.
    pub fn connected_with(&mut self, info: CertInfo) {
        let life = info.lifetime();
        // First retry after 1 % of the life (1 s to 10 min), doubling up to
        // 10 % (at most 6 h): many tries before the certificate runs out.
        let initial = (life / 100).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let max = (life / 10).clamp(initial, Duration::from_secs(6 * 3_600));
        if self.current.as_ref().map(CertInfo::lifetime) != Some(life) {
            self.backoff = Backoff::new(initial, max);
        }
        self.current = Some(info);
    }

    /// When the next request is due; `None` while one waits for its answer
    /// or before the first connection.
    pub fn due(&self) -> Option<Timestamp> {
        if let Some(p) = &self.pending {
            return Some(p.asked_at.saturating_add(ANSWER_TIMEOUT));
        }
        let current = self.current.as_ref()?;
        let at = current.renew_at(self.jitter);
        Some(self.retry_at.map_or(at, |retry| retry.max(at)))
    }

    /// The attempt that is due at `now`: a new key and its request; or the
    /// failure of the one that got no answer.
    pub fn start(&mut self, now: Timestamp) -> Result<String, RenewError> {
        if self.pending.take().is_some() {
            return Err(self.failed(RenewError::NoAnswer(ANSWER_TIMEOUT), now));
        }
        match request(&self.node, now) {
            Ok((pending, csr)) => {
                self.pending = Some(pending);
                Ok(csr)
            }
            Err(e) => Err(self.failed(e, now)),
        }
    }

    /// The server's answer: on success the new certificate is on disk for
    /// the next connection; on failure the next attempt is scheduled.
    pub fn answer(
        &mut self,
        certificate_pem: &str,
        refused: &str,
        now: Timestamp,
    ) -> Result<CertInfo, RenewError> {
        let Some(pending) = self.pending.take() else {
            return Err(RenewError::BadAnswer(
                "a certificate this agent did not ask for".into(),
            ));
        };
        if !refused.is_empty() || certificate_pem.is_empty() {
            let reason = if refused.is_empty() {
                "no certificate and no reason"
            } else {
                refused
            };
            return Err(self.failed(RenewError::Refused(reason.to_owned()), now));
        }
        match self.install(&pending, certificate_pem, now) {
            Ok(info) => {
                self.retry_at = None;
                self.backoff.reset();
                self.current = Some(info.clone());
                Ok(info)
            }
            Err(e) => Err(self.failed(e, now)),
        }
    }

    /// The session ended with a request unanswered: the next session asks
    /// again once the backoff allows.
    pub fn session_ended(&mut self, now: Timestamp) {
        if self.pending.take().is_some() {
            let _ = self.failed(RenewError::SessionEnded, now);
        }
    }

    fn install(
        &self,
        pending: &Pending,
        certificate_pem: &str,
        now: Timestamp,
    ) -> Result<CertInfo, RenewError> {
        let info = CertInfo::from_pem(certificate_pem)
            .map_err(|e| RenewError::BadAnswer(e.to_string()))?;
        let me = Identity {
            kind: Kind::Agent,
            name: self.node.clone(),
            role: None,
        };
        if info.identity != me {
            return Err(RenewError::BadAnswer(format!(
                "it names {}, not {me}",
                info.identity
            )));
        }
        if info.public_key != pending.key.subject_public_key_info() {
            return Err(RenewError::BadAnswer(
                "it is not for the key this agent made".into(),
            ));
        }
        if info.not_after <= now {
            return Err(RenewError::BadAnswer("it has expired already".into()));
        }
        self.files
            .install(&pending.key.serialize_pem(), certificate_pem)?;
        Ok(info)
    }

    fn failed(&mut self, e: RenewError, now: Timestamp) -> RenewError {
        self.retry_at = Some(now.saturating_add(self.backoff.next_delay()));
        e
    }

    /// When the attempt after a failure comes.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.retry_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rollcall-renew-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_pair_is_replaced_whole_or_not_at_all() {
        let dir = tempdir("pair");
        let files = CertFiles {
            cert: dir.join("agent.crt"),
            key: dir.join("agent.key"),
        };
        std::fs::write(&files.cert, "old cert").expect("cert");
        std::fs::write(&files.key, "old key").expect("key");
        let read = |f: &CertFiles| {
            let (c, k) = f.read().expect("read");
            (String::from_utf8(c).unwrap(), String::from_utf8(k).unwrap())
        };
        // Staging fails (the certificate's directory is gone): the old pair stays.
        let broken = CertFiles {
            cert: dir.join("missing/agent.crt"),
            key: files.key.clone(),
        };
        assert!(broken.install("new key", "new cert").is_err());
        assert_eq!(read(&files), ("old cert".into(), "old key".into()));
        assert!(!staged(&files.key).exists(), "nothing staged is left");
        // Stopped between the two renames: the new key is in place and its
        // certificate staged; the next read completes the pair.
        std::fs::write(&files.key, "new key").expect("key");
        std::fs::write(staged(&files.cert), "new cert").expect("staged cert");
        assert_eq!(read(&files), ("new cert".into(), "new key".into()));
        // Stopped before any rename: what was staged is dropped.
        std::fs::write(staged(&files.key), "newer key").expect("staged key");
        std::fs::write(staged(&files.cert), "newer cert").expect("staged cert");
        assert_eq!(read(&files), ("new cert".into(), "new key".into()));
        assert!(!staged(&files.cert).exists());
        // A whole install.
        files.install("newest key", "newest cert").expect("install");
        assert_eq!(read(&files), ("newest cert".into(), "newest key".into()));
        let mode = std::fs::metadata(&files.key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Signs `csr` as a CA would, for node `node` (rcgen, a CA of the test's).
    fn sign(csr: &str, node: &str, validity: Duration) -> String {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr).expect("csr");
        req.params.distinguished_name = rcgen::DistinguishedName::new();
        req.params.distinguished_name.push(DnType::CommonName, node);
        req.params.subject_alt_names = vec![SanType::URI(
            format!("urn:rollcall:agent:{node}")
                .try_into()
                .expect("uri"),
        )];
        let now = time::OffsetDateTime::now_utc();
        req.params.not_before = now - Duration::from_secs(60);
        req.params.not_after = now + validity;
        req.signed_by(&issuer).expect("sign").pem()
    }

    fn renewal(dir: &Path) -> Renewal {
        let files = CertFiles {
            cert: dir.join("agent.crt"),
            key: dir.join("agent.key"),
        };
        std::fs::write(&files.cert, "old cert").expect("write");
        std::fs::write(&files.key, "old key").expect("write");
        Renewal::new(files, "cmp1".into())
    }

    #[test]
    fn an_answer_for_our_key_and_name_is_written_key_0600() {
        let dir = tempdir("ok");
        let mut r = renewal(&dir);
        let now = Timestamp::now();
        let csr = r.start(now).expect("request");
        let pem = sign(&csr, "cmp1", Duration::from_secs(600));
        let info = r.answer(&pem, "", now).expect("installed");
        assert_eq!(info.identity.name, "cmp1");
        assert_eq!(
            std::fs::read_to_string(dir.join("agent.crt")).expect("crt"),
            pem
        );
        let key = std::fs::read_to_string(dir.join("agent.key")).expect("key");
        let key = KeyPair::from_pem(&key).expect("a key");
        assert_eq!(key.subject_public_key_info(), info.public_key);
        let mode = std::fs::metadata(dir.join("agent.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("agent.key.new").exists());
        // The next renewal is two thirds into the new certificate's life.
        let due = r.due().expect("due");
        assert!(
            due > now.saturating_add(Duration::from_secs(300)),
            "{due:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_refusal_or_a_foreign_certificate_changes_no_file_and_backs_off() {
        let dir = tempdir("refused");
        let mut r = renewal(&dir);
        let now = Timestamp::now();
        r.start(now).expect("request");
        let err = r.answer("", "no CA key", now).expect_err("refused");
        assert!(err.to_string().contains("no CA key"), "{err}");
        assert!(r.retry_at().is_some_and(|t| t >= now));
        // Another node's certificate for our key.
        let csr = r.start(now).expect("request");
        let err = r
            .answer(&sign(&csr, "cmp2", Duration::from_secs(600)), "", now)
            .expect_err("foreign");
        assert!(matches!(err, RenewError::BadAnswer(_)), "{err}");
        // Our name, but for a key this agent did not make.
        r.start(now).expect("request");
        let (_, other_csr) = request("cmp1", now).expect("other");
        let err = r
            .answer(&sign(&other_csr, "cmp1", Duration::from_secs(600)), "", now)
            .expect_err("another key");
        assert!(err.to_string().contains("key"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("agent.crt")).expect("crt"),
            "old cert"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("agent.key")).expect("key"),
            "old key"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unanswered_request_fails_at_its_deadline() {
        let dir = tempdir("timeout");
        let mut r = renewal(&dir);
        let now = Timestamp::now();
        r.start(now).expect("request");
        assert_eq!(r.due(), Some(now.saturating_add(ANSWER_TIMEOUT)));
        let later = now.saturating_add(ANSWER_TIMEOUT);
        assert!(matches!(r.start(later), Err(RenewError::NoAnswer(_))));
        std::fs::remove_dir_all(&dir).ok();
    }
}
