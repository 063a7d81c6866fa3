//! What a client certificate says about its own life: who it names, from
//! when to when it is valid, the public key it binds, and when its holder
//! should ask for the next one.
//!
//! The agent renews its certificate over its session once two thirds of
//! the certificate's life have passed ([`CertInfo::renew_at`]); `cert-status`
//! and the Ansible role read the same facts.

use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{self, Identity, IdentityError};
use crate::timestamp::Timestamp;

/// The share of a certificate's life after which its holder renews it.
pub const RENEW_AFTER: (u32, u32) = (2, 3);
/// How far a holder's renewal time may stray from [`RENEW_AFTER`], as a
/// share of the certificate's life either way: agents whose certificates were
/// issued together (one Ansible run) do not all ask in the same second.
pub const RENEW_JITTER_PERCENT: u32 = 5;

/// A parsed client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// The DER SubjectPublicKeyInfo: what a new certificate must carry to
    /// belong to the key its holder made.
    pub public_key: Vec<u8>,
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let der = identity::pem_to_der(pem)
            .ok_or_else(|| IdentityError::Malformed("no CERTIFICATE block".into()))?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let identity = identity::from_der(der)?;
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        let millis = |t: x509_parser::time::ASN1Time| t.timestamp().saturating_mul(1_000);
        Ok(Self {
            identity,
            not_before: Timestamp::from_unix_millis(millis(cert.validity().not_before)),
            not_after: Timestamp::from_unix_millis(millis(cert.validity().not_after)),
            public_key: cert.public_key().raw.to_vec(),
        })
    }

    /// How long the certificate is valid in all.
    pub fn lifetime(&self) -> Duration {
        self.not_after.since(self.not_before)
    }

    /// When its holder should renew it: two thirds into its life, moved by
    /// `jitter` (from -1.0 to 1.0, clamped) times [`RENEW_JITTER_PERCENT`] of
    /// its life.
    pub fn renew_at(&self, jitter: f64) -> Timestamp {
        let life = self.lifetime();
        let (num, den) = RENEW_AFTER;
        let base = life * num / den;
        let spread = life.as_secs_f64() * f64::from(RENEW_JITTER_PERCENT) / 100.0;
        // NaN would make Duration::from_secs_f64 panic: no jitter then.
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(-1.0, 1.0)
        };
        let shift = jitter * spread;
        let at = if shift >= 0.0 {
            base + Duration::from_secs_f64(shift)
        } else {
            base.saturating_sub(Duration::from_secs_f64(-shift))
        };
        self.not_before.saturating_add(at)
    }

    /// Time left until it expires at `now`; zero once expired.
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.not_after.since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: i64, not_after: i64) -> CertInfo {
        CertInfo {
            identity: Identity {
                kind: identity::Kind::Agent,
                name: "cmp1".into(),
                role: None,
            },
            not_before: Timestamp::from_unix_millis(not_before * 1_000),
            not_after: Timestamp::from_unix_millis(not_after * 1_000),
            public_key: Vec::new(),
        }
    }

    #[test]
    fn renewal_is_two_thirds_in_within_five_percent_either_way() {
        let c = info(1_000, 1_000 + 3_000);
        let secs = |t: Timestamp| t.unix_millis() / 1_000;
        assert_eq!(secs(c.renew_at(0.0)), 3_000);
        assert_eq!(secs(c.renew_at(1.0)), 3_150);
        assert_eq!(secs(c.renew_at(-1.0)), 2_850);
        // Out of range jitter is clamped, never beyond the certificate.
        assert_eq!(secs(c.renew_at(40.0)), 3_150);
        assert_eq!(secs(c.renew_at(-7.0)), 2_850);
        assert_eq!(secs(c.renew_at(f64::NAN)), 3_000);
    }

    #[test]
    fn remaining_is_zero_once_expired() {
        let c = info(0, 100);
        assert_eq!(
            c.remaining(Timestamp::from_unix_millis(40_000)),
            Duration::from_secs(60)
        );
        assert_eq!(
            c.remaining(Timestamp::from_unix_millis(200_000)),
            Duration::ZERO
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            CertInfo::from_pem("not a certificate"),
            Err(IdentityError::Malformed(_))
        ));
    }
}
