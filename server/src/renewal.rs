//! Agents renew their own certificates: the agent makes a key on its node
//! and sends a certificate signing request over its session; the server
//! signs it with the CA if, and only if, it names the session's own
//! identity and nothing else.
//!
//! What a request may say is narrow on purpose: subject `CN=NODE` and
//! nothing else, exactly one subject alternative name (the URI
//! `urn:rollcall:agent:NODE` of the session's certificate), no extension
//! beyond that, and an ECDSA P-256/P-384 or Ed25519 key. The certificate
//! itself is made from the same profile as `certs issue` (the request's
//! wishes are checked, then ignored), so a request cannot ask for a CA, a
//! server certificate or another name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rcgen::{CertificateSigningRequestParams, DnType, DnValue, IsCa, SanType};
use rollcall_proto::identity::{Identity, Kind};

use crate::pki::{Ca, PkiError};

/// A session may ask for a certificate once in this long, and the server
/// signs for one node at most once in this long (or a tenth of a
/// certificate's life, if longer).
pub const RENEWAL_EVERY: Duration = Duration::from_secs(10);

/// Largest request the server reads; a P-256 request is about 500 bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// Why the server would not sign a request. The text goes back to the agent
/// and into the server's log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("certificate renewal is off: the server has no CA key ([tls] ca_key in server.toml)")]
    NoCaKey,
    #[error("the request is over {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("the request cannot be read or its signature does not verify: {0}")]
    Unreadable(String),
    #[error("the request's subject must be CN={expected} and nothing else")]
    Subject { expected: String },
    #[error("the request must carry exactly one subject alternative name, the URI {expected}")]
    Names { expected: String },
    #[error("the request asks for a CA certificate")]
    AsksForCa,
    #[error("the request asks for key usages or extensions; it may carry only its name")]
    Extensions,
    #[error(
        "the request's key algorithm is not one rollcall accepts (ECDSA P-256 or P-384, Ed25519)"
    )]
    KeyAlgorithm,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(
        "a certificate was signed for this node {ago_secs}s ago; the server signs one per node per {every_secs}s (a tenth of a certificate's life, at least {}s); ask again later",
        RENEWAL_EVERY.as_secs()
    )]
    TooSoon { ago_secs: u64, every_secs: u64 },
}

/// Checks that `csr_pem` asks for exactly `who`'s certificate and nothing
/// more; returns the request (its public key) to sign.
pub fn check(csr_pem: &str, who: &Identity) -> Result<CertificateSigningRequestParams, CsrError> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge);
    }
    let request = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CsrError::Unreadable(e.to_string()))?;
    let accepted = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !accepted.contains(&request.public_key.algorithm()) {
        return Err(CsrError::KeyAlgorithm);
    }
    let params = &request.params;
    let subject: Vec<(&DnType, &DnValue)> = params.distinguished_name.iter().collect();
    let cn_is_name = match subject.as_slice() {
        [(DnType::CommonName, value)] => dn_text(value).is_some_and(|cn| cn == who.name),
        _ => false,
    };
    if !cn_is_name {
        return Err(CsrError::Subject {
            expected: who.name.clone(),
        });
    }
    let uri = who.uri();
    match params.subject_alt_names.as_slice() {
        [SanType::URI(u)] if u.as_str() == uri => {}
        _ => return Err(CsrError::Names { expected: uri }),
    }
    if matches!(params.is_ca, IsCa::Ca(_)) {
        return Err(CsrError::AsksForCa);
    }
    if !matches!(params.is_ca, IsCa::NoCa)
        || !params.key_usages.is_empty()
        || !params.extended_key_usages.is_empty()
    {
        return Err(CsrError::Extensions);
    }
    Ok(request)
}

/// The text of a subject attribute, whatever string type encodes it.
fn dn_text(value: &DnValue) -> Option<&str> {
    match value {
        DnValue::Utf8String(s) => Some(s),
        DnValue::PrintableString(s) => Some(s.as_str()),
        DnValue::Ia5String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// The CA as the server holds it for renewals, or the reason it holds none.
pub struct Signer {
    ca: Option<Ca>,
    validity: Duration,
    /// When each node last got a certificate: a node that reconnects to
    /// ask again still waits [`Signer::every`].
    last_signed: Mutex<HashMap<String, Instant>>,
}

impl Signer {
    /// A signer that refuses every request (no `[tls] ca_key`).
    pub fn off() -> Self {
        Self {
            ca: None,
            validity: Duration::ZERO,
            last_signed: Mutex::default(),
        }
    }

    /// Loads the CA from `[tls] ca` and `[tls] ca_key`; a key that others
    /// may read is refused, as `certs issue` refuses it.
    pub fn load(cert: &Path, key: &Path, validity: Duration) -> Result<Self, PkiError> {
        Ok(Self {
            ca: Some(Ca::load_files(cert, key)?),
            validity,
            last_signed: Mutex::default(),
        })
    }

    /// For tests that hold a CA already.
    pub fn new(ca: Ca, validity: Duration) -> Self {
        Self {
            ca: Some(ca),
            validity,
            last_signed: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.ca.is_some()
    }

    /// How long the server waits between two certificates for one node: a
    /// tenth of a certificate's life, at least [`RENEWAL_EVERY`] (agents
    /// renew at two thirds of it, so this never holds back an honest one).
    pub fn every(&self) -> Duration {
        (self.validity / 10).max(RENEWAL_EVERY)
    }

    /// Signs `csr_pem` for the agent `node`, or says why not.
    pub fn sign(&self, node: &str, csr_pem: &str) -> Result<String, CsrError> {
        self.sign_at(node, csr_pem, Instant::now())
    }

    /// [`Signer::sign`] at `now`: a node that got a certificate less than
    /// [`Signer::every`] ago is refused, however many sessions it opens.
    pub fn sign_at(&self, node: &str, csr_pem: &str, now: Instant) -> Result<String, CsrError> {
        let ca = self.ca.as_ref().ok_or(CsrError::NoCaKey)?;
        let who = Identity {
            kind: Kind::Agent,
            name: node.to_owned(),
            role: None,
        };
        let request = check(csr_pem, &who)?;
        // Held across the signature so two sessions of one node cannot both
        // pass the check; signing takes a millisecond.
        let mut last = self
            .last_signed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let every = self.every();
        if let Some(at) = last.get(node) {
            let ago = now.saturating_duration_since(*at);
            if ago < every {
                return Err(CsrError::TooSoon {
                    ago_secs: ago.as_secs(),
                    every_secs: every.as_secs(),
                });
            }
        }
        let pem = ca
            .sign_for_key(&who, request.public_key, self.validity)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        last.insert(node.to_owned(), now);
        Ok(pem)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};
    use rollcall_proto::certinfo::CertInfo;

    use super::*;

    fn agent(name: &str) -> Identity {
        Identity {
            kind: Kind::Agent,
            name: name.into(),
            role: None,
        }
    }

    /// A request as the agent makes it, then changed by `tweak`.
    fn request(
        key: &KeyPair,
        cn: &str,
        uris: &[&str],
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().expect("uri")))
            .collect();
        tweak(&mut params);
        params
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn signer() -> Signer {
        Signer::new(
            Ca::generate("test CA").expect("ca"),
            Duration::from_secs(3_600),
        )
    }

    #[test]
    fn the_sessions_own_name_is_signed_for_the_requests_key() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |_| {});
        let pem = signer().sign("cmp1", &csr).expect("signed");
        let info = CertInfo::from_pem(&pem).expect("parses");
        assert_eq!(info.identity, agent("cmp1"));
        assert_eq!(
            info.public_key,
            key.subject_public_key_info(),
            "the agent's own key"
        );
        // The server's life, not anything the request said.
        let life = info.lifetime().as_secs();
        assert!((3_600..=3_660).contains(&life), "{life}");
    }

    #[test]
    fn a_node_gets_one_certificate_per_tenth_of_a_life_across_sessions() {
        let signer = signer();
        assert_eq!(signer.every(), Duration::from_secs(360), "3600s / 10");
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |_| {});
        let t0 = Instant::now();
        signer.sign_at("cmp1", &csr, t0).expect("first");
        let err = signer
            .sign_at("cmp1", &csr, t0 + Duration::from_secs(359))
            .expect_err("too soon");
        assert_eq!(
            err,
            CsrError::TooSoon {
                ago_secs: 359,
                every_secs: 360
            }
        );
        assert!(err.to_string().contains("per 360s"), "{err}");
        // Another node is not held back by this one.
        let other = request(&key, "cmp2", &["urn:rollcall:agent:cmp2"], |_| {});
        signer
            .sign_at("cmp2", &other, t0 + Duration::from_secs(1))
            .expect("another node");
        signer
            .sign_at("cmp1", &csr, t0 + Duration::from_secs(360))
            .expect("after the wait");
        // A refused request does not count as a signature.
        let short = Signer::new(Ca::generate("t").expect("ca"), Duration::from_secs(60));
        assert_eq!(short.every(), RENEWAL_EVERY, "at least RENEWAL_EVERY");
        let bad = request(&key, "cmp1", &["urn:rollcall:agent:cmp2"], |_| {});
        assert!(short.sign_at("cmp1", &bad, t0).is_err());
        short.sign_at("cmp1", &csr, t0).expect("first signature");
    }

    #[test]
    fn another_nodes_name_is_refused() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp2", &["urn:rollcall:agent:cmp2"], |_| {});
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Subject { .. })
        ));
        // The right CN with another node's URI.
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp2"], |_| {});
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Names { .. })
        ));
    }

    #[test]
    fn an_extra_san_is_refused() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |p| {
            p.subject_alt_names
                .push(SanType::DnsName("server.example".try_into().expect("dns")));
        });
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Names { .. })
        ));
        let csr = request(
            &key,
            "cmp1",
            &["urn:rollcall:agent:cmp1", "urn:rollcall:agent:cmp2"],
            |_| {},
        );
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Names { .. })
        ));
        let csr = request(&key, "cmp1", &[], |_| {});
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Names { .. })
        ));
    }

    #[test]
    fn an_operator_uri_is_refused() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:operator:cmp1"], |_| {});
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Names { .. })
        ));
    }

    #[test]
    fn a_subject_with_more_than_its_name_is_refused() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |p| {
            p.distinguished_name
                .push(DnType::OrganizationName, "rollcall");
        });
        assert!(matches!(
            signer().sign("cmp1", &csr),
            Err(CsrError::Subject { .. })
        ));
    }

    #[test]
    fn wishes_beyond_the_name_are_refused() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |p| {
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        });
        assert_eq!(signer().sign("cmp1", &csr), Err(CsrError::AsksForCa));
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |p| {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        });
        assert_eq!(signer().sign("cmp1", &csr), Err(CsrError::Extensions));
    }

    #[test]
    fn garbage_and_oversized_requests_are_refused() {
        for garbage in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            assert!(
                matches!(signer().sign("cmp1", garbage), Err(CsrError::Unreadable(_))),
                "{garbage:?}"
            );
        }
        let huge = "A".repeat(MAX_CSR_BYTES + 1);
        assert_eq!(signer().sign("cmp1", &huge), Err(CsrError::TooLarge));
    }

    #[test]
    fn a_request_whose_signature_does_not_match_its_key_is_refused() {
        // Swap the public key of one request into another's signed body:
        // easier done by flipping a byte of the signature.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "cmp1");
        params.subject_alt_names = vec![SanType::URI(
            "urn:rollcall:agent:cmp1".try_into().expect("uri"),
        )];
        let csr = params.serialize_request(&key).expect("csr");
        let mut der = csr.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64(&der)
        );
        assert!(matches!(
            signer().sign("cmp1", &pem),
            Err(CsrError::Unreadable(_))
        ));
    }

    #[test]
    fn without_a_ca_key_renewal_is_refused_with_the_key_to_set() {
        let key = KeyPair::generate().expect("key");
        let csr = request(&key, "cmp1", &["urn:rollcall:agent:cmp1"], |_| {});
        let err = Signer::off().sign("cmp1", &csr).expect_err("refused");
        assert_eq!(err, CsrError::NoCaKey);
        assert!(err.to_string().contains("[tls] ca_key"), "{err}");
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
