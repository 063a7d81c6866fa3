//! The monitoring APIs' answers, read into [`Alert`]s: Prometheus's
//! `GET /api/v1/alerts` and Alertmanager's `GET /api/v2/alerts`. What they
//! send is untrusted: an answer that is not what the API documents is an
//! error (and holds the campaign), and what is kept is bounded.

use std::collections::BTreeMap;

use rollcall_proto::timestamp::Timestamp;
use serde::Deserialize;

use super::{Alert, AlertState, SourceKind};

/// More alerts than this in one answer: refused (the campaign holds) rather
/// than cut, since the alert left out could be the one that holds.
pub const MAX_ALERTS: usize = 20_000;
/// Labels kept per alert; more is refused like too many alerts.
pub const MAX_LABELS: usize = 128;
/// A label name or value is cut after this many bytes.
pub const MAX_LABEL_BYTES: usize = 1_024;
/// Silence ids kept per alert. Past them one stands for the rest, as a
/// silence that is not the campaign's (the alert is silenced).
pub const MAX_SILENCES: usize = 32;
/// The longest silence id kept whole; Alertmanager's are UUIDs.
const MAX_ID_BYTES: usize = 128;

#[derive(Deserialize)]
struct PromAnswer {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    alerts: Vec<PromAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromAlert {
    labels: BTreeMap<String, String>,
    state: String,
    #[serde(default)]
    active_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    status: AmStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

/// Prometheus's `/api/v1/alerts`.
pub fn prometheus(body: &[u8]) -> Result<Vec<Alert>, String> {
    let answer: PromAnswer = serde_json::from_slice(body).map_err(undocumented)?;
    if answer.status != "success" {
        return Err(format!(
            "answered status {:?}: {}",
            cut(&answer.status),
            cut(answer.error.as_deref().unwrap_or("no error given"))
        ));
    }
    let alerts = answer
        .data
        .ok_or_else(|| "answered without data.alerts".to_owned())?
        .alerts;
    too_many(alerts.len())?;
    alerts
        .into_iter()
        .map(|a| {
            let state = match a.state.as_str() {
                "pending" => AlertState::Pending,
                "firing" => AlertState::Firing,
                other => {
                    return Err(format!(
                        "answered an alert in state {:?}, not pending or firing",
                        cut(other)
                    ));
                }
            };
            Ok(Alert {
                source: SourceKind::Prometheus,
                labels: labels(a.labels)?,
                state,
                since: a.active_at.as_deref().and_then(time),
                silenced_by: Vec::new(),
                inhibited: false,
            })
        })
        .collect()
}

/// Alertmanager's `/api/v2/alerts`: every alert it has is firing; the
/// silences on it are kept by id (the campaign's own do not count), and
/// an inhibited one, or one suppressed for no reason given, is `inhibited`.
pub fn alertmanager(body: &[u8]) -> Result<Vec<Alert>, String> {
    let alerts: Vec<AmAlert> = serde_json::from_slice(body).map_err(undocumented)?;
    too_many(alerts.len())?;
    alerts
        .into_iter()
        .map(|a| {
            let suppressed = match a.status.state.as_str() {
                "active" | "unprocessed" => false,
                "suppressed" => true,
                other => {
                    return Err(format!(
                        "answered an alert in state {:?}, not active, suppressed or unprocessed",
                        cut(other)
                    ));
                }
            };
            let inhibited = !a.status.inhibited_by.is_empty()
                || (suppressed && a.status.silenced_by.is_empty());
            let mut silenced_by = a.status.silenced_by;
            if silenced_by.len() > MAX_SILENCES {
                silenced_by.truncate(MAX_SILENCES);
                silenced_by.push("…".into());
            }
            for id in &mut silenced_by {
                if id.len() > MAX_ID_BYTES {
                    // Cut, it is no longer any silence's id: not the campaign's.
                    *id = format!("{}…", cut_bytes(std::mem::take(id), MAX_ID_BYTES));
                }
            }
            Ok(Alert {
                source: SourceKind::Alertmanager,
                labels: labels(a.labels)?,
                state: AlertState::Firing,
                since: a.starts_at.as_deref().and_then(time),
                silenced_by,
                inhibited,
            })
        })
        .collect()
}

fn undocumented(e: serde_json::Error) -> String {
    format!("answered what the API does not document: {e}")
}

fn too_many(n: usize) -> Result<(), String> {
    if n > MAX_ALERTS {
        return Err(format!(
            "answered {n} alerts, more than the {MAX_ALERTS} rollcall reads"
        ));
    }
    Ok(())
}

fn labels(labels: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "answered an alert with {} labels, more than the {MAX_LABELS} rollcall reads",
            labels.len()
        ));
    }
    Ok(labels
        .into_iter()
        .map(|(k, v)| (cut_bytes(k, MAX_LABEL_BYTES), cut_bytes(v, MAX_LABEL_BYTES)))
        .collect())
}

fn cut_bytes(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// An error text from the API, for one line.
fn cut(s: &str) -> String {
    let s = rollcall_proto::text::cut(s, 200);
    rollcall_proto::text::for_terminal(&s).into_owned()
}

/// RFC 3339 with any offset and precision; Go's zero time (an alert that
/// never was active) is no time.
fn time(s: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = s.parse().ok()?;
    let millis = t.as_millisecond();
    (millis > 0).then(|| Timestamp::from_unix_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_alerts_read_with_their_state_and_time() {
        let body = br#"{"status":"success","data":{"alerts":[
            {"labels":{"alertname":"GaleraClusterSize","instance":"ctl2:9104","severity":"critical"},
             "annotations":{"summary":"x"},"state":"firing","activeAt":"2026-11-21T12:03:10.123456789+01:00","value":"2e+00"},
            {"labels":{"alertname":"Disk"},"annotations":{},"state":"pending","activeAt":"2026-11-21T11:00:00Z","value":"1"}]}}"#;
        let alerts = prometheus(body).expect("reads");
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].name(), "GaleraClusterSize");
        assert_eq!(alerts[0].state, AlertState::Firing);
        assert_eq!(
            alerts[0].since,
            Timestamp::parse_rfc3339("2026-11-21T11:03:10.123Z"),
            "the offset is read"
        );
        assert_eq!(alerts[1].state, AlertState::Pending);
        assert!(
            alerts
                .iter()
                .all(|a| a.source == SourceKind::Prometheus && !a.suppressed(&Default::default()))
        );
    }

    #[test]
    fn an_undocumented_or_failed_prometheus_answer_is_an_error() {
        for (body, needle) in [
            (&b"<html>proxy error</html>"[..], "does not document"),
            (
                br#"{"status":"error","errorType":"x","error":"boom"}"#,
                "boom",
            ),
            (br#"{"status":"success"}"#, "without data.alerts"),
            (
                br#"{"status":"success","data":{"alerts":[{"labels":{},"state":"odd"}]}}"#,
                "\"odd\"",
            ),
            (
                br#"{"status":"success","data":{"alerts":[{"state":"firing"}]}}"#,
                "labels",
            ),
        ] {
            let e = prometheus(body).expect_err(needle);
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn alertmanager_alerts_keep_their_silences_and_whether_inhibited() {
        let body = br#"[
            {"labels":{"alertname":"A","instance":"cmp1:9100"},"annotations":{},"startsAt":"2026-11-21T12:00:00.5Z",
             "endsAt":"2026-11-21T13:00:00Z","updatedAt":"2026-11-21T12:00:00Z","fingerprint":"f1","receivers":[{"name":"r"}],
             "status":{"state":"active","silencedBy":[],"inhibitedBy":[]}},
            {"labels":{"alertname":"B"},"startsAt":"2026-11-21T12:00:00Z",
             "status":{"state":"suppressed","silencedBy":["s1"],"inhibitedBy":[]}},
            {"labels":{"alertname":"C"},"startsAt":"0001-01-01T00:00:00Z",
             "status":{"state":"unprocessed","silencedBy":[],"inhibitedBy":["i"]}},
            {"labels":{"alertname":"D"},"status":{"state":"suppressed"}}]"#;
        let alerts = alertmanager(body).expect("reads");
        let own: std::collections::HashSet<String> = ["s1".to_owned()].into();
        let summary: Vec<(&str, bool, bool, bool)> = alerts
            .iter()
            .map(|a| {
                (
                    a.name(),
                    a.suppressed(&Default::default()),
                    a.suppressed(&own),
                    a.since.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("A", false, false, true),
                ("B", true, false, true),
                ("C", true, true, false),
                ("D", true, true, false)
            ],
            "silenced only by the campaign's own silence is not suppressed"
        );
        assert_eq!(alerts[1].silenced_by, ["s1"]);
        assert!(alerts.iter().all(|a| a.state == AlertState::Firing));
        let e = alertmanager(br#"{"alerts":[]}"#).expect_err("an object");
        assert!(e.contains("does not document"), "{e}");
        let e = alertmanager(br#"[{"labels":{},"status":{"state":"gone"}}]"#).expect_err("state");
        assert!(e.contains("\"gone\""), "{e}");
    }

    #[test]
    fn answers_are_bounded() {
        let long = "x".repeat(5_000);
        let body =
            format!(r#"[{{"labels":{{"alertname":"{long}"}},"status":{{"state":"active"}}}}]"#);
        let alerts = alertmanager(body.as_bytes()).expect("reads");
        assert_eq!(alerts[0].name().len(), MAX_LABEL_BYTES);
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!(r#""l{i}":"v""#)).collect();
        let body = format!(
            r#"[{{"labels":{{{}}},"status":{{"state":"active"}}}}]"#,
            many.join(",")
        );
        assert!(alertmanager(body.as_bytes()).is_err());
        let one = r#"{"labels":{},"status":{"state":"active"}}"#;
        let body = format!("[{}]", vec![one; MAX_ALERTS + 1].join(","));
        let e = alertmanager(body.as_bytes()).expect_err("too many");
        assert!(e.contains("more than the 20000"), "{e}");
        // Many silences: the last kept stands for the rest, none of them own.
        let ids: Vec<String> = (0..40).map(|i| format!(r#""s{i}""#)).collect();
        let body = format!(
            r#"[{{"labels":{{}},"status":{{"state":"suppressed","silencedBy":[{}]}}}}]"#,
            ids.join(",")
        );
        let alerts = alertmanager(body.as_bytes()).expect("reads");
        assert_eq!(alerts[0].silenced_by.len(), MAX_SILENCES + 1);
        let own: std::collections::HashSet<String> = (0..40).map(|i| format!("s{i}")).collect();
        assert!(
            alerts[0].suppressed(&own),
            "the ids left out may be another's"
        );
    }
}
