//! A maintenance window: the local days and hours in which new nodes may
//! start. Parsed once, with the spec, into a time zone and civil times, so
//! a check can neither fail nor read a typo as "outside".
//!
//! The window is a run of instants, not a reading of the wall clock: each
//! allowed day it opens the first time the zone's clock reaches `start`
//! and closes the first time the clock reaches `end` after that (the next
//! day when `end` is before `start`). So on the day clocks spring
//! forward over `start` it opens at the jump, and on the day clocks fall
//! back through `start` or `end` the repeated hour neither opens it twice
//! nor closes it in the middle. `days` name the local day a window opens
//! on: `days = ["sat"]` with 22:00–04:00 runs Saturday night into Sunday.

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone, TimeZoneDatabase};
use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Deserializer};

/// A spec's `[window]` that makes no sense; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window.{key} {value:?} is not a time: use HH:MM between 00:00 and 23:59")]
    Time { key: &'static str, value: String },
    #[error("window.days {value:?} is not a day: use mon, tue, wed, thu, fri, sat or sun")]
    Day { value: String },
    #[error("window.utc_offset {value:?} is not an offset: use +HH:MM, -HH:MM or UTC")]
    Offset { value: String },
    #[error(
        "window.time_zone {value:?} is not a time zone in the system's tz database or rollcall's bundled copy: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
    )]
    Zone { value: String },
    #[error(
        "window sets both time_zone and utc_offset: keep time_zone (it follows daylight saving time; utc_offset does not)"
    )]
    TwoZones,
    #[error("window.start and window.end are both {at}: the window would never open")]
    Empty { at: String },
}

/// Where the window's hours are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    tz: TimeZone,
    /// How notes name the zone: its IANA name, or `UTC+01:00`.
    label: String,
}

impl Zone {
    /// An IANA zone from the system's tz database (kept current by the
    /// distribution); the copy built into rollcall answers for a zone the
    /// system lacks, as in a minimal container image without tzdata.
    pub fn named(name: &str) -> Result<Zone, WindowError> {
        Zone::named_in(jiff::tz::db(), name)
    }

    fn named_in(system: &TimeZoneDatabase, name: &str) -> Result<Zone, WindowError> {
        let name = name.trim();
        let tz = system
            .get(name)
            .or_else(|_| TimeZoneDatabase::bundled().get(name))
            .map_err(|_| WindowError::Zone {
                value: name.to_owned(),
            })?;
        let label = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Zone { tz, label })
    }

    /// A fixed offset from UTC (`+01:00`, `-05:00`; empty, `UTC` or `Z`
    /// for UTC), as specs had before `time_zone`: it never follows DST.
    pub fn fixed(text: &str) -> Result<Zone, WindowError> {
        let s = text.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(Zone::utc());
        }
        let bad = || WindowError::Offset {
            value: s.to_owned(),
        };
        let (sign, rest) = match s.as_bytes()[0] {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = hh_mm(rest).ok_or_else(bad)?;
        let minutes = sign * (i32::from(h) * 60 + i32::from(m));
        let offset = Offset::from_seconds(minutes * 60).map_err(|_| bad())?;
        if minutes == 0 {
            return Ok(Zone::utc());
        }
        let sign = if minutes < 0 { '-' } else { '+' };
        Ok(Zone {
            tz: TimeZone::fixed(offset),
            label: format!("UTC{sign}{h:02}:{m:02}"),
        })
    }

    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            label: "UTC".into(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The first instant at which this zone's clock shows `dt` or later:
    /// the earlier pass of a repeated time, the jump over a skipped one.
    fn first_reaching(&self, dt: DateTime) -> Option<jiff::Timestamp> {
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
            AmbiguousOffset::Gap { before, .. } => {
                // Read with the offset from before the jump, `dt` lands
                // after the jump: the last transition before it is the jump.
                let past_the_jump = before.to_timestamp(dt).ok()?;
                self.tz
                    .preceding(past_the_jump)
                    .next()
                    .map(|t| t.timestamp())
            }
        }
    }
}

/// Days a window may open on; none named means every day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Days(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }

    fn allows(self, day: Weekday) -> bool {
        self.0 == 0 || self.0 & Days::bit(day) != 0
    }
}

/// Days and hours in which new nodes may start; nodes in flight finish.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WindowToml")]
pub struct Window {
    days: Days,
    start: Time,
    end: Time,
    zone: Zone,
}

/// `[window]` as written; each key is parsed as it is read so a TOML error
/// points at its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowToml {
    #[serde(default, deserialize_with = "de_days")]
    days: Days,
    #[serde(deserialize_with = "de_start")]
    start: Time,
    #[serde(deserialize_with = "de_end")]
    end: Time,
    #[serde(default, deserialize_with = "de_zone")]
    time_zone: Option<Zone>,
    #[serde(default, deserialize_with = "de_offset")]
    utc_offset: Option<Zone>,
}

impl TryFrom<WindowToml> for Window {
    type Error = WindowError;
    fn try_from(w: WindowToml) -> Result<Self, WindowError> {
        if w.start == w.end {
            return Err(WindowError::Empty {
                at: w.start.strftime("%H:%M").to_string(),
            });
        }
        let zone = match (w.time_zone, w.utc_offset) {
            (Some(_), Some(_)) => return Err(WindowError::TwoZones),
            (Some(zone), None) | (None, Some(zone)) => zone,
            (None, None) => Zone::utc(),
        };
        Ok(Window {
            days: w.days,
            start: w.start,
            end: w.end,
            zone,
        })
    }
}

fn hh_mm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then_some((h, m))
}

fn time(key: &'static str, s: &str) -> Result<Time, WindowError> {
    let bad = || WindowError::Time {
        key,
        value: s.to_owned(),
    };
    let (h, m) = hh_mm(s.trim()).ok_or_else(bad)?;
    Time::new(h as i8, m as i8, 0, 0).map_err(|_| bad())
}

fn de_start<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    time("start", &String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_end<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    time("end", &String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_days<'de, D: Deserializer<'de>>(d: D) -> Result<Days, D::Error> {
    let mut days = Days::default();
    for name in Vec::<String>::deserialize(d)? {
        let i = DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| serde::de::Error::custom(WindowError::Day { value: name }))?;
        days.0 |= 1 << i;
    }
    Ok(days)
}

fn de_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zone>, D::Error> {
    Zone::named(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_offset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zone>, D::Error> {
    Zone::fixed(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn instant(at: Timestamp) -> jiff::Timestamp {
    // The server's clock is inside jiff's range (years -9999..=9999).
    jiff::Timestamp::from_millisecond(at.unix_millis()).unwrap_or(if at.unix_millis() < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    })
}

impl Window {
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// When the window that opens on local day `day` opens and closes, if
    /// it opens that day at all.
    fn occurrence(&self, day: Date) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
        if !self.days.allows(day.weekday()) {
            return None;
        }
        let end_day = if self.end < self.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        let open = self.zone.first_reaching(day.to_datetime(self.start))?;
        let close = self.zone.first_reaching(end_day.to_datetime(self.end))?;
        Some((open, close))
    }

    /// Local days whose window could hold or follow `t`: the day before
    /// (a window across midnight) through `ahead` days on.
    fn days_around(&self, t: jiff::Timestamp, ahead: i8) -> impl Iterator<Item = Date> {
        let today = self.zone.tz.to_datetime(t).date();
        (-1..=ahead).filter_map(move |n| today.checked_add(jiff::Span::new().days(n)).ok())
    }

    /// Whether a new node may start at `now`.
    pub fn contains(&self, now: Timestamp) -> bool {
        let t = instant(now);
        // The day after too: a clock set back across midnight shows
        // yesterday's date after tomorrow's window opened.
        self.days_around(t, 1)
            .filter_map(|d| self.occurrence(d))
            .any(|(open, close)| open <= t && t < close)
    }

    /// The next time the window opens after `now`.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let t = instant(now);
        // A week and a day always holds an allowed day's opening.
        self.days_around(t, 8)
            .filter_map(|d| self.occurrence(d))
            .map(|(open, _)| open)
            .filter(|open| *open > t)
            .min()
            .map(|open| Timestamp::from_unix_millis(open.as_millisecond()))
    }

    /// Why no node starts at `now`, or `None` inside the window: the note
    /// says when it opens, in the window's zone and in UTC.
    pub fn wait_reason(&self, now: Timestamp) -> Option<String> {
        if self.contains(now) {
            return None;
        }
        let reason = "outside the maintenance window";
        let Some(next) = self.next_open(now) else {
            return Some(reason.into());
        };
        let at = instant(next);
        let local = at.to_zoned(self.zone.tz.clone());
        let mut note = format!(
            "{reason}; it opens {} {}",
            local.strftime("%a %Y-%m-%d %H:%M"),
            self.zone.label
        );
        if self.zone.tz != TimeZone::UTC {
            note.push_str(&format!(" ({} UTC)", at.strftime("%Y-%m-%d %H:%M")));
        }
        Some(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(toml: &str) -> Window {
        #[derive(Deserialize)]
        struct Spec {
            window: Window,
        }
        rollcall_proto::diag::parse_toml::<Spec>(&format!("[window]\n{toml}"))
            .expect("window parses")
            .window
    }

    fn error(toml: &str) -> String {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Spec {
            window: Window,
        }
        rollcall_proto::diag::parse_toml::<Spec>(&format!("[window]\n{toml}"))
            .expect_err("window is refused")
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).expect("time")
    }

    // Europe/Berlin in 2026: CET (+01:00) until 29 March 02:00, when the
    // clock jumps to 03:00 CEST (+02:00); 25 October 03:00 CEST falls back
    // to 02:00 CET, so 02:00-02:59 happens twice.

    #[test]
    fn a_window_that_starts_in_the_spring_gap_opens_at_the_jump() {
        let w = window(
            "start = \"02:30\"\nend = \"04:00\"\ntime_zone = \"Europe/Berlin\"\ndays = [\"sun\"]",
        );
        // 01:59 CET: not yet.
        assert!(!w.contains(at("2026-03-29T00:59:00Z")));
        // The clock jumps from 02:00 CET to 03:00 CEST at 01:00 UTC: it has
        // passed 02:30, so the window is open from that instant.
        assert!(w.contains(at("2026-03-29T01:00:00Z")), "03:00 CEST");
        assert!(w.contains(at("2026-03-29T01:59:00Z")), "03:59 CEST");
        assert!(
            !w.contains(at("2026-03-29T02:00:00Z")),
            "04:00 CEST: closed"
        );
        assert_eq!(
            w.next_open(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        // A week later it is a plain 02:30 CEST.
        assert_eq!(
            w.next_open(at("2026-03-29T03:00:00Z")),
            Some(at("2026-04-05T00:30:00Z"))
        );
    }

    #[test]
    fn the_autumn_fold_neither_opens_twice_nor_closes_in_the_repeated_hour() {
        let starts_in_fold = window(
            "start = \"02:30\"\nend = \"04:00\"\ntime_zone = \"Europe/Berlin\"\ndays = [\"sun\"]",
        );
        // It opens at the first 02:30 (CEST, 00:30 UTC) ...
        assert!(!starts_in_fold.contains(at("2026-10-25T00:29:00Z")));
        assert!(starts_in_fold.contains(at("2026-10-25T00:30:00Z")));
        // ... stays open when the clock falls back to 02:00 CET (01:00 UTC)
        // and shows 02:10, before 02:30, again ...
        assert!(starts_in_fold.contains(at("2026-10-25T01:10:00Z")));
        // ... and closes at 04:00 CET: two and a half hours that night.
        assert!(starts_in_fold.contains(at("2026-10-25T02:59:00Z")));
        assert!(!starts_in_fold.contains(at("2026-10-25T03:00:00Z")));

        let ends_in_fold = window(
            "start = \"01:00\"\nend = \"02:30\"\ntime_zone = \"Europe/Berlin\"\ndays = [\"sun\"]",
        );
        // It closes the first time the clock shows 02:30 (00:30 UTC) and
        // stays closed when the clock shows 02:00-02:29 a second time.
        assert!(ends_in_fold.contains(at("2026-10-25T00:29:00Z")));
        assert!(!ends_in_fold.contains(at("2026-10-25T00:30:00Z")));
        assert!(
            !ends_in_fold.contains(at("2026-10-25T01:10:00Z")),
            "02:10 CET"
        );
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_opens() {
        let w = window(
            "start = \"22:00\"\nend = \"04:00\"\ntime_zone = \"Europe/Berlin\"\ndays = [\"sat\"]",
        );
        // 2026-11-21 is a Saturday; Berlin is at +01:00.
        assert!(!w.contains(at("2026-11-21T20:59:00Z")), "Sat 21:59");
        assert!(w.contains(at("2026-11-21T21:00:00Z")), "Sat 22:00");
        assert!(w.contains(at("2026-11-22T02:59:00Z")), "Sun 03:59");
        assert!(!w.contains(at("2026-11-22T03:00:00Z")), "Sun 04:00");
        assert!(
            !w.contains(at("2026-11-22T21:30:00Z")),
            "Sun 22:30: not a window day"
        );
        assert!(
            !w.contains(at("2026-11-21T02:00:00Z")),
            "Sat 03:00: the window of Friday night, not a window day"
        );
    }

    #[test]
    fn a_berlin_window_keeps_its_local_hours_across_the_dst_change() {
        // What a fixed offset got wrong: the same local hours in winter
        // and in summer are an hour apart in UTC.
        let w = window("start = \"22:00\"\nend = \"23:00\"\ntime_zone = \"Europe/Berlin\"");
        assert!(w.contains(at("2026-01-15T21:30:00Z")), "22:30 CET");
        assert!(w.contains(at("2026-07-15T20:30:00Z")), "22:30 CEST");
        assert!(!w.contains(at("2026-07-15T21:30:00Z")), "23:30 CEST");
    }

    #[test]
    fn fixed_offsets_mean_what_they_meant() {
        let w = window(
            "days = [\"sat\", \"SUN\"]\nstart = \"22:00\"\nend = \"06:00\"\nutc_offset = \"+01:00\"",
        );
        assert_eq!(w.zone().label(), "UTC+01:00");
        assert!(w.contains(at("2026-11-21T21:30:00Z")), "Sat 22:30 local");
        assert!(w.contains(at("2026-11-22T04:59:00Z")), "Sun 05:59 local");
        assert!(!w.contains(at("2026-11-22T05:00:00Z")), "Sun 06:00 local");
        assert!(w.contains(at("2026-11-22T21:30:00Z")), "Sun 22:30 local");
        assert!(
            w.contains(at("2026-11-23T04:59:00Z")),
            "Mon 05:59, opened Sunday"
        );
        assert!(!w.contains(at("2026-11-23T21:30:00Z")), "Mon 22:30 local");
        // A fixed offset does not follow summer time: 22:00 at +01:00 is
        // 21:00 UTC in July as in November.
        assert!(w.contains(at("2026-07-18T21:00:00Z")));
        assert!(!w.contains(at("2026-07-18T20:59:00Z")));

        let west = window("start = \"09:00\"\nend = \"17:00\"\nutc_offset = \"-05:00\"");
        assert!(west.contains(at("2026-11-23T14:00:00Z")));
        assert!(!west.contains(at("2026-11-23T22:00:00Z")));
        for utc in [
            "utc_offset = \"UTC\"",
            "utc_offset = \"\"",
            "utc_offset = \"Z\"",
            "",
        ] {
            let w = window(&format!("start = \"09:00\"\nend = \"17:00\"\n{utc}"));
            assert_eq!(w.zone().label(), "UTC", "{utc}");
            assert!(w.contains(at("2026-11-23T09:00:00Z")), "{utc}");
            assert!(!w.contains(at("2026-11-23T17:00:00Z")), "{utc}");
        }
    }

    #[test]
    fn the_wait_reason_says_when_the_window_opens_in_its_zone_and_in_utc() {
        let w = window(
            "start = \"22:00\"\nend = \"04:00\"\ntime_zone = \"Europe/Berlin\"\ndays = [\"sat\"]",
        );
        assert_eq!(
            w.wait_reason(at("2026-11-23T12:00:00Z")).as_deref(),
            Some(
                "outside the maintenance window; it opens Sat 2026-11-28 22:00 Europe/Berlin (2026-11-28 21:00 UTC)"
            )
        );
        assert_eq!(w.wait_reason(at("2026-11-28T21:00:00Z")), None);
        let utc = window("start = \"01:00\"\nend = \"02:00\"");
        assert_eq!(
            utc.wait_reason(at("2026-11-21T23:00:00Z")).as_deref(),
            Some("outside the maintenance window; it opens Sun 2026-11-22 01:00 UTC")
        );
    }

    #[test]
    fn bad_windows_are_one_line_that_names_the_key_and_the_value() {
        for (toml, needle) in [
            (
                "start = \"22:00\"\nend = \"04:00\"\ntime_zone = \"Europe/Berln\"",
                "window.time_zone \"Europe/Berln\" is not a time zone",
            ),
            (
                "start = \"25:00\"\nend = \"04:00\"",
                "window.start \"25:00\" is not a time",
            ),
            (
                "start = \"22:00\"\nend = \"4pm\"",
                "window.end \"4pm\" is not a time",
            ),
            (
                "start = \"22:00\"\nend = \"04:00\"\ndays = [\"someday\"]",
                "window.days \"someday\" is not a day",
            ),
            (
                "start = \"22:00\"\nend = \"04:00\"\nutc_offset = \"CET\"",
                "window.utc_offset \"CET\" is not an offset",
            ),
            (
                "start = \"22:00\"\nend = \"04:00\"\nutc_offset = \"+01:00\"\ntime_zone = \"Europe/Berlin\"",
                "both time_zone and utc_offset",
            ),
            ("start = \"22:00\"\nend = \"22:00\"", "would never open"),
        ] {
            let err = error(toml);
            assert!(err.contains(needle) && !err.contains('\n'), "{toml}: {err}");
        }
    }

    #[test]
    fn the_bundled_database_answers_when_the_system_has_no_tz_database() {
        let zone = Zone::named_in(&TimeZoneDatabase::none(), "Europe/Berlin").expect("bundled");
        assert_eq!(zone.label(), "Europe/Berlin");
        assert_eq!(
            Zone::named_in(&TimeZoneDatabase::none(), "Europe/Berln"),
            Err(WindowError::Zone {
                value: "Europe/Berln".into()
            })
        );
    }
}
