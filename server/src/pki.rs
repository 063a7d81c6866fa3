//! The rollcall certificate authority: `certs init` and `certs issue`.
//!
//! Every certificate is ECDSA P-256. The CA signs into each client
//! certificate exactly one rollcall identity URI (see
//! [`rollcall_proto::identity`]) plus the clientAuth extended key usage; the
//! server certificate gets serverAuth only, so no certificate can serve as
//! the other kind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rollcall_proto::identity::{self, Identity, Kind};
use time::OffsetDateTime;

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a server or operator certificate is valid by default.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(398 * 86_400);
/// How long an agent certificate is valid by default, in days: short,
/// because agents renew their own (see `renewal`), and a lost node's
/// certificate should not outlive it by a year.
pub const AGENT_DAYS: u32 = 30;

/// `days` days.
pub fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 86_400)
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists; remove it or choose another --pki directory")]
    AlreadyExists(PathBuf),
    #[error("{0} already exists; pass --force to replace it")]
    LeafExists(PathBuf),
    #[error("{path} is not a usable {what}: {reason}")]
    BadMaterial {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{0}")]
    InvalidName(String),
    #[error("invalid --san {0:?}: {1}")]
    InvalidSan(String, String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    KeyMode(#[from] rollcall_proto::files::KeyModeError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A loaded or freshly made CA that can sign certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, OffsetDateTime::now_utc(), CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.crt` and `ca.key` from a pki directory.
    pub fn load(pki: &Path) -> Result<Self, PkiError> {
        Self::load_files(&pki.join("ca.crt"), &pki.join("ca.key"))
    }

    /// Loads the CA from its certificate and key files (the server's
    /// `[tls] ca` and `ca_key`).
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let (cert_path, key_path) = (cert_path.to_owned(), key_path.to_owned());
        // The key that signs every identity: if others could read it, every
        // certificate it signs is in doubt, so refuse rather than sign.
        rollcall_proto::files::check_private_key(&key_path)?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadMaterial {
            path: key_path,
            what: "CA key",
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadMaterial {
                path: cert_path,
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        Ok(Self { issuer, cert_pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// What signs certificates and CRLs.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The server's certificate: serverAuth, for `localhost`, `127.0.0.1`
    /// and every name in `sans` (DNS names or IP addresses).
    pub fn issue_server(&self, sans: &[String]) -> Result<Issued, PkiError> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        for san in sans {
            if !names.contains(san) {
                names.push(san.clone());
            }
        }
        let mut params = CertificateParams::new(names.clone()).map_err(|e| {
            let bad = names
                .iter()
                .find(|n| CertificateParams::new(vec![(*n).clone()]).is_err());
            PkiError::InvalidSan(bad.cloned().unwrap_or_default(), e.to_string())
        })?;
        params.distinguished_name = dn("rollcall-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, OffsetDateTime::now_utc(), LEAF_VALIDITY)
    }

    /// An agent or operator certificate, valid from now.
    pub fn issue_client(&self, who: &Identity) -> Result<Issued, PkiError> {
        self.issue_client_valid(who, OffsetDateTime::now_utc(), LEAF_VALIDITY)
    }

    /// An agent or operator certificate with an explicit validity (tests use
    /// it to make expired certificates).
    pub fn issue_client_valid(
        &self,
        who: &Identity,
        not_before: OffsetDateTime,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        self.sign(client_params(who)?, not_before, validity)
    }

    /// Signs a certificate for `public_key` (a key its holder made and
    /// keeps) that names `who` exactly as [`Self::issue_client`] would:
    /// the profile comes from here, never from the request.
    pub fn sign_for_key(
        &self,
        who: &Identity,
        public_key: rcgen::PublicKey,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let mut params = client_params(who)?;
        finish(&mut params, OffsetDateTime::now_utc(), validity);
        let request = rcgen::CertificateSigningRequestParams { params, public_key };
        Ok(request.signed_by(&self.issuer)?.pem())
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        not_before: OffsetDateTime,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        finish(&mut params, not_before, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What every client certificate says: CN = the name, exactly one URI (the
/// identity), clientAuth.
fn client_params(who: &Identity) -> Result<CertificateParams, PkiError> {
    identity::validate_name(&who.name).map_err(PkiError::InvalidName)?;
    let uri = who
        .uri()
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::InvalidName(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&who.name);
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// What every leaf certificate gets: key usage, the CA's key id, validity.
fn finish(params: &mut CertificateParams, not_before: OffsetDateTime, validity: Duration) {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(params, not_before, validity);
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, not_before: OffsetDateTime, validity: Duration) {
    // A minute of slack for clocks that run a little behind the CA's.
    params.not_before = not_before - Duration::from_secs(60);
    params.not_after = not_before + validity;
}

/// `certs init`: a new CA and server certificate in `pki`. Refuses to touch a
/// directory that already holds a CA.
pub fn init(pki: &Path, sans: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    let ca_key_path = pki.join("ca.key");
    if ca_key_path.exists() {
        return Err(PkiError::AlreadyExists(ca_key_path));
    }
    for san in sans {
        if san.is_empty() || san.contains(char::is_whitespace) {
            return Err(PkiError::InvalidSan(
                san.clone(),
                "empty or contains spaces".into(),
            ));
        }
    }
    let ca = Ca::generate("rollcall CA")?;
    let server = ca.issue_server(sans)?;
    for dir in [pki.to_owned(), pki.join("agents"), pki.join("operators")] {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    let written = vec![
        write_file(&pki.join("ca.key"), &ca.key_pem(), true)?,
        write_file(&pki.join("ca.crt"), ca.cert_pem(), false)?,
        write_file(&pki.join("server.key"), &server.key_pem, true)?,
        write_file(&pki.join("server.crt"), &server.cert_pem, false)?,
    ];
    Ok(written)
}

/// `certs issue`: an agent or operator certificate signed by the CA in
/// `pki`, written to `pki/agents/NAME.{crt,key}` or
/// `pki/operators/NAME.{crt,key}`, valid for the default life of its kind
/// ([`AGENT_DAYS`], [`LEAF_VALIDITY`]). Returns the certificate and key paths.
pub fn issue(pki: &Path, who: &Identity, force: bool) -> Result<(PathBuf, PathBuf), PkiError> {
    let validity = match who.kind {
        Kind::Agent => days(AGENT_DAYS),
        Kind::Operator => LEAF_VALIDITY,
    };
    issue_valid(pki, who, force, validity)
}

/// [`issue`] for `validity` (`certs issue --days N`).
pub fn issue_valid(
    pki: &Path,
    who: &Identity,
    force: bool,
    validity: Duration,
) -> Result<(PathBuf, PathBuf), PkiError> {
    identity::validate_name(&who.name).map_err(PkiError::InvalidName)?;
    let dir = pki.join(match who.kind {
        Kind::Agent => "agents",
        Kind::Operator => "operators",
    });
    let crt = dir.join(format!("{}.crt", who.name));
    let key = dir.join(format!("{}.key", who.name));
    if !force && (crt.exists() || key.exists()) {
        return Err(PkiError::LeafExists(crt));
    }
    let ca = Ca::load(pki)?;
    let issued = ca.issue_client_valid(who, OffsetDateTime::now_utc(), validity)?;
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    write_file(&key, &issued.key_pem, true)?;
    write_file(&crt, &issued.cert_pem, false)?;
    Ok((crt, key))
}

/// Writes through a temporary file and a rename, so a reader never sees half
/// a file. Secrets are created 0600 from the first byte.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<PathBuf, PkiError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    // The umask may have narrowed a public file; make it exactly `mode`.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::identity::Role;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rollcall-pki-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn init_then_issue_writes_the_documented_layout_with_private_keys_0600() {
        let pki = tempdir("layout");
        init(&pki, &["rollcall.example".into()]).expect("init");
        let agent = Identity::agent("cmp1");
        let op = Identity::operator("alice", Role::Operator);
        let viewer = Identity::operator("vera", Role::Viewer);
        let admin = Identity::operator("adam", Role::Admin);
        issue(&pki, &agent, false).expect("agent");
        for who in [&op, &viewer, &admin] {
            issue(&pki, who, false).expect("operator");
            let pem =
                fs::read_to_string(pki.join(format!("operators/{}.crt", who.name))).expect("crt");
            assert_eq!(identity::from_pem(&pem).as_ref(), Ok(who), "{who}");
        }
        for key in [
            "ca.key",
            "server.key",
            "agents/cmp1.key",
            "operators/alice.key",
            "operators/vera.key",
            "operators/adam.key",
        ] {
            let mode = fs::metadata(pki.join(key)).expect(key).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let pem = fs::read_to_string(pki.join("agents/cmp1.crt")).expect("crt");
        assert_eq!(identity::from_pem(&pem), Ok(agent.clone()));
        let pem = fs::read_to_string(pki.join("operators/alice.crt")).expect("crt");
        assert_eq!(identity::from_pem(&pem), Ok(op));
        // Second init and a repeated issue change nothing.
        let before = fs::read(pki.join("ca.key")).expect("ca");
        assert!(matches!(init(&pki, &[]), Err(PkiError::AlreadyExists(_))));
        assert!(matches!(
            issue(&pki, &agent, false),
            Err(PkiError::LeafExists(_))
        ));
        assert_eq!(fs::read(pki.join("ca.key")).expect("ca"), before);
        fs::remove_dir_all(&pki).ok();
    }

    #[test]
    fn agent_certificates_live_30_days_unless_told_and_operators_398() {
        use rollcall_proto::certinfo::CertInfo;
        let pki = tempdir("days");
        init(&pki, &[]).expect("init");
        let life = |crt: &Path| {
            let pem = fs::read_to_string(crt).expect("crt");
            // The minute of slack before `now` is part of the life.
            CertInfo::from_pem(&pem)
                .expect("parses")
                .lifetime()
                .as_secs()
                - 60
        };
        let agent = Identity {
            kind: Kind::Agent,
            name: "cmp1".into(),
            role: None,
        };
        let op = Identity {
            kind: Kind::Operator,
            name: "alice".into(),
            role: Some(rollcall_proto::identity::Role::Operator),
        };
        assert_eq!(
            life(&issue(&pki, &agent, false).expect("agent").0),
            30 * 86_400
        );
        assert_eq!(life(&issue(&pki, &op, false).expect("op").0), 398 * 86_400);
        let (crt, _) = issue_valid(&pki, &agent, true, days(7)).expect("--days 7");
        assert_eq!(life(&crt), 7 * 86_400);
        fs::remove_dir_all(&pki).ok();
    }

    #[test]
    fn a_ca_key_open_to_others_is_refused_with_the_fix() {
        let pki = tempdir("camode");
        init(&pki, &[]).expect("init");
        let ca_key = pki.join("ca.key");
        fs::set_permissions(&ca_key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let who = Identity::agent("cmp1");
        let err = issue(&pki, &who, false).expect_err("refused");
        assert!(matches!(err, PkiError::KeyMode(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", ca_key.display())),
            "{err}"
        );
        assert!(!pki.join("agents/cmp1.crt").exists(), "nothing was signed");
        fs::remove_dir_all(&pki).ok();
    }

    #[test]
    fn server_certificate_carries_no_client_identity() {
        let ca = Ca::generate("t").expect("ca");
        let server = ca.issue_server(&["10.0.0.1".into()]).expect("server");
        assert_eq!(
            identity::from_pem(&server.cert_pem),
            Err(identity::IdentityError::Missing)
        );
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_written() {
        let pki = tempdir("badname");
        init(&pki, &[]).expect("init");
        let bad = Identity::agent("../etc/passwd");
        assert!(matches!(
            issue(&pki, &bad, false),
            Err(PkiError::InvalidName(_))
        ));
        assert!(!pki.join("agents/../etc").exists());
        fs::remove_dir_all(&pki).ok();
    }
}
