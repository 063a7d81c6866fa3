//! The test cluster's certificates: a CA of its own made with rcgen, the
//! server's certificate for `localhost` and `127.0.0.1`, and client
//! certificates whose common name is the role they log in as (what
//! `pg_hba.conf`'s `cert` method checks).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The CA, kept as PEM: issuing a client certificate later rebuilds the
/// issuer from it, as `certs issue` does from a pki directory.
pub(super) struct TestCa {
    pub(super) cert_pem: String,
    key_pem: String,
}

/// A certificate and its private key, as PEM.
pub(super) struct Issued {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

impl TestCa {
    pub(super) fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "rollcall test PostgreSQL CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generate the test CA's key")?;
        let key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(params, key).context("self-sign the test CA")?;
        Ok(Self {
            cert_pem: ca.as_ref().pem(),
            key_pem,
        })
    }

    /// The server's certificate: libpq's `verify-full` checks the host it
    /// dialled against these names, so both spellings of loopback work,
    /// and `also` (an address it listens on besides loopback).
    pub(super) fn server(&self, also: Option<IpAddr>) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().context("localhost as a DNS name")?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params
            .subject_alt_names
            .extend(also.map(SanType::IpAddress));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for `role`: PostgreSQL's `cert` authentication
    /// takes the common name as the role name (no user map here).
    pub(super) fn client(&self, role: &str) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, role);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> anyhow::Result<Issued> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let ca_key = KeyPair::from_pem(&self.key_pem).context("load the test CA's key")?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)
            .context("load the test CA's certificate")?;
        let key = KeyPair::generate().context("generate a key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("sign with the test CA")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to a new file of mode 0600: both libpq and the server
/// refuse a private key that others can read.
pub(super) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}
