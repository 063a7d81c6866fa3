//! When a certificate expires, and how to say it to people.
//!
//! The server reads the `not_after` of an agent's certificate once per
//! connection (from the DER the TLS handshake verified) and keeps it on the
//! node; the CLI reads it from the operator's own PEM file to warn before it
//! lapses. The relative form (`in 12d`, `EXPIRED 3d ago`) is what tables and
//! the fleet summary print; `--json` carries the absolute RFC 3339 instant.

use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::timestamp::Timestamp;

/// How close an expiry must be for the CLI to warn an operator and for the
/// fleet summary to list a node, unless asked otherwise.
pub const WARN_WITHIN: Duration = Duration::from_secs(14 * 86_400);

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpiryError {
    #[error("certificate cannot be parsed: {0}")]
    Malformed(String),
}

/// The `not_after` of a DER certificate.
pub fn not_after_der(der: &[u8]) -> Result<Timestamp, ExpiryError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| ExpiryError::Malformed(e.to_string()))?;
    Ok(not_after(&cert))
}

/// The `not_after` of the first certificate in a PEM file's bytes.
pub fn not_after_pem(pem: &[u8]) -> Result<Timestamp, ExpiryError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| ExpiryError::Malformed(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| ExpiryError::Malformed(e.to_string()))?;
    Ok(not_after(&cert))
}

fn not_after(cert: &X509Certificate<'_>) -> Timestamp {
    let secs = cert.validity().not_after.timestamp();
    Timestamp::from_unix_millis(secs.saturating_mul(1_000))
}

/// `in 12d`, `in 5h`, `EXPIRED 3d ago`: an expiry relative to `now`, in the
/// units of the CLI's other ages (whole units, rounded down).
pub fn relative(not_after: Timestamp, now: Timestamp) -> String {
    if not_after > now {
        format!("in {}", short(not_after.since(now)))
    } else {
        format!("EXPIRED {} ago", short(now.since(not_after)))
    }
}

fn short(d: Duration) -> String {
    match d.as_secs() {
        s @ 0..60 => format!("{s}s"),
        s @ 60..3_600 => format!("{}m", s / 60),
        s @ 3_600..86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `5 days`, `1 day`, `7 hours`, `less than an hour`: a span in words for a
/// sentence. Days are rounded to the nearest day from two days on (a
/// certificate issued for 3 days reads "3 days", not "2 days", a second
/// after it was made); below that, whole hours.
fn words(d: Duration) -> String {
    let s = d.as_secs();
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if s >= 2 * 86_400 {
        plural((s + 43_200) / 86_400, "day")
    } else if s >= 3_600 {
        plural(s / 3_600, "hour")
    } else {
        "less than an hour".to_owned()
    }
}

/// The one line the CLI prints on stderr when the operator's own
/// certificate (`cert`, as the operator named it) expires within
/// [`WARN_WITHIN`] or has expired; `None` when it is further off.
pub fn operator_warning(cert: &str, not_after: Timestamp, now: Timestamp) -> Option<String> {
    let c = not_after.civil();
    let date = format!("{:04}-{:02}-{:02}", c.year, c.month, c.day);
    if not_after <= now {
        return Some(format!(
            "warning: your certificate {cert} expired {} ago ({date}); ask an admin for a new one",
            words(now.since(not_after))
        ));
    }
    let left = not_after.since(now);
    (left <= WARN_WITHIN).then(|| {
        format!(
            "warning: your certificate {cert} expires in {} ({date}); ask an admin for a new one",
            words(left)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    #[test]
    fn relative_expiry_reads_like_the_other_ages() {
        let now = at(1_000 * DAY);
        assert_eq!(relative(at(1_012 * DAY), now), "in 12d");
        assert_eq!(relative(at(1_012 * DAY - 1), now), "in 11d");
        assert_eq!(relative(at(1_000 * DAY + 5 * HOUR), now), "in 5h");
        assert_eq!(relative(at(1_000 * DAY + 90_000), now), "in 1m");
        assert_eq!(relative(at(1_000 * DAY + 1_000), now), "in 1s");
        assert_eq!(relative(at(997 * DAY), now), "EXPIRED 3d ago");
        assert_eq!(relative(now, now), "EXPIRED 0s ago");
    }

    #[test]
    fn the_operator_is_warned_within_fourteen_days_and_after_expiry() {
        let now = Timestamp::parse_rfc3339("2026-11-30T10:00:00Z").expect("time");
        let days = |n: i64| at(now.unix_millis() + n * DAY);
        assert_eq!(operator_warning("op.crt", days(15), now), None);
        assert_eq!(
            operator_warning("op.crt", days(5), now).as_deref(),
            Some(
                "warning: your certificate op.crt expires in 5 days (2026-12-05); ask an admin for a new one"
            )
        );
        // A second after issue, a 3-day certificate still reads 3 days.
        assert_eq!(
            operator_warning("c", at(days(3).unix_millis() - 1_000), now).as_deref(),
            Some(
                "warning: your certificate c expires in 3 days (2026-12-03); ask an admin for a new one"
            )
        );
        assert!(
            operator_warning("c", days(14), now).is_some(),
            "14 days is within"
        );
        assert!(
            operator_warning("c", at(now.unix_millis() + 30 * HOUR), now)
                .is_some_and(|w| w.contains("expires in 30 hours"))
        );
        assert!(
            operator_warning("c", at(now.unix_millis() + 1_000), now)
                .is_some_and(|w| w.contains("expires in less than an hour"))
        );
        assert!(
            operator_warning("c", at(now.unix_millis() - HOUR), now)
                .is_some_and(|w| w.contains("expired 1 hour ago (2026-11-30)"))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(not_after_der(b"nope").is_err());
        assert!(not_after_pem(b"nope").is_err());
    }
}
