//! A standard X.509 CRL (RFC 5280, version 2) of every revoked serial,
//! signed by the rollcall CA, for tools other than rollcall (a proxy in
//! front of the server, a monitoring check).

use std::time::Duration;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;
#[cfg(test)]
use x509_parser::prelude::FromDer;

use super::Revocation;
use crate::pki::Ca;

/// How long a CRL says it is good for: tools that honour `nextUpdate` want
/// a fresh one by then (`certs crl` again, from a timer).
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("the CA cannot sign a CRL: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The CRL as PEM, signed by the CA. Its number is the time it was made
/// (seconds), so a newer CRL always has a greater number.
pub fn crl_pem(
    ca: &Ca,
    revocations: &[Revocation],
    now: OffsetDateTime,
) -> Result<String, CrlError> {
    let revoked_certs = revocations
        .iter()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(&r.serial.to_bytes()),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.at.unix_millis() / 1_000)
                .unwrap_or(now),
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(0)),
        issuing_distribution_point: None,
        revoked_certs,
        // The CRL's authority key identifier must be the CA's own subject
        // key identifier, or tools cannot match the two.
        key_identifier_method: subject_key_id(ca.cert_pem())
            .map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
    };
    Ok(params.signed_by(ca.issuer())?.pem()?)
}

fn subject_key_id(cert_pem: &str) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revoke::Serial;
    use rollcall_proto::timestamp::Timestamp;

    #[test]
    fn the_crl_lists_every_serial_and_is_signed_by_the_ca() {
        let ca = Ca::generate("t").expect("ca");
        let revoked = ["0a1b", "7f"].map(|s| Revocation {
            serial: Serial::parse(s).expect("serial"),
            identity: None,
            reason: String::new(),
            at: Timestamp::from_unix_millis(1_700_000_000_000),
            by: "test".into(),
        });
        let pem = crl_pem(&ca, &revoked, OffsetDateTime::now_utc()).expect("crl");
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        assert_eq!(pem.label, "X509 CRL");
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
                .expect("crl parses");
        let serials: Vec<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![vec![0x0a, 0x1b], vec![0x7f]]);
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).expect("ca");
        let ca_cert = ca_pem.parse_x509().expect("ca parses");
        crl.verify_signature(ca_cert.public_key())
            .expect("signed by the CA");
        assert_eq!(crl.issuer(), ca_cert.subject());
    }
}
