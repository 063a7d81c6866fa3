//! A UTC wall-clock instant with millisecond precision.
//!
//! JSON shows it as RFC 3339 (`2026-11-23T08:05:38.123Z`) so that `--json`
//! output reads well and sorts as text; the wire uses
//! `google.protobuf.Timestamp`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    millis: i64,
}

/// An instant as a UTC calendar shows it (proleptic Gregorian), for the
/// formats that are not RFC 3339: a campaign id, a clock in a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Timestamp {
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self { millis }
    }

    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub const fn unix_millis(self) -> i64 {
        self.millis
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.millis - earlier.millis).unwrap_or(0))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let add = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self::from_unix_millis(self.millis.saturating_add(add))
    }

    /// The UTC date and time of day.
    pub fn civil(self) -> Civil {
        let secs = self.millis.div_euclid(1_000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        // Each is in range by construction (rem < 86_400, a month ≤ 12,
        // a day ≤ 31): the casts cannot truncate.
        Civil {
            year,
            month: month as u32,
            day: day as u32,
            hour: (rem / 3_600) as u32,
            minute: (rem % 3_600 / 60) as u32,
            second: (rem % 60) as u32,
            millis: self.millis.rem_euclid(1_000) as u32,
        }
    }

    /// Parses the form [`Display`](fmt::Display) writes:
    /// `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
            return None;
        }
        if b[16] != b':' || *b.last()? != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let frac = &s[19..s.len() - 1];
        let millis = match frac.strip_prefix('.') {
            None if frac.is_empty() => 0,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
                let padded = format!("{digits:0<3}");
                padded[..3].parse::<i64>().ok()?
            }
            _ => return None,
        };
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        if second > 60 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Some(Self::from_unix_millis(secs * 1_000 + millis))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let millis = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Self { millis }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millis,
        } = self.civil();
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z"
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 UTC time: {s:?}")))
    }
}

// Howard Hinnant's algorithms (http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_795_421_138_123).to_string(),
            "2026-11-23T08:05:38.123Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn civil_parts_of_known_instants() {
        assert_eq!(
            Timestamp::from_unix_millis(1_795_421_138_123).civil(),
            Civil {
                year: 2026,
                month: 11,
                day: 23,
                hour: 8,
                minute: 5,
                second: 38,
                millis: 123,
            }
        );
        // Leap day, and the last millisecond before the epoch.
        let leap = Timestamp::parse_rfc3339("2024-02-29T23:59:59.999Z").expect("parses");
        let c = leap.civil();
        assert_eq!((c.year, c.month, c.day, c.hour), (2024, 2, 29, 23));
        let before = Timestamp::from_unix_millis(-1).civil();
        assert_eq!(
            (
                before.year,
                before.month,
                before.day,
                before.second,
                before.millis
            ),
            (1969, 12, 31, 59, 999)
        );
    }

    #[test]
    fn parse_inverts_display_across_centuries() {
        for ms in [
            0,
            951_782_400_000,
            1_795_421_138_123,
            4_107_542_399_999,
            -86_400_001,
        ] {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t), "{t}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T08:05:38Z"),
            Some(Timestamp::from_unix_millis(1_795_421_138_000))
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T08:05:38+01:00",
            "2026-11-23T08:05:38.Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), None, "{s}");
        }
    }
}
