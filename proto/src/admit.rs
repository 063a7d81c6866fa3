//! What the server admits from an agent: the limits every report and action
//! update must keep, applied once, where the message enters the server.
//!
//! An agent's certificate proves who sent a message, not that the message
//! is sane. The rules, one per kind of violation:
//! - a string longer than its limit is cut to the limit (health-check and
//!   action output keep their tail, everything else its head), on a
//!   character boundary;
//! - a list of labels, reboot reasons, errors or package names longer than
//!   its limit keeps its first entries;
//! - a section whose item count is over its limit (containers, filesystems,
//!   interfaces), or whose numbers are not finite or negative (metrics), is
//!   refused as a whole: the server keeps what it held of that section;
//! - a report collected far in the future, or before 2000, is dated at its
//!   arrival;
//! - a report without a time, or an action update without a usable id, is
//!   refused.
//!
//! Every cut and refusal becomes a line of [`Admitted::notes`], which the
//! server logs (rate-limited) and tells the agent. Nothing here panics on
//! any input.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::convert::{ConvertError, action_result_from_wire};
use crate::model;
use crate::timestamp::Timestamp;
use crate::v1;

/// Containers in one report. A kolla node runs 40–60.
pub const MAX_CONTAINERS: usize = 1_000;
/// Filesystems in one report.
pub const MAX_FILESYSTEMS: usize = 1_000;
/// Network interfaces in one report: a compute node with hundreds of
/// instances has four per port (tap, qvb, qvo, qbr).
pub const MAX_INTERFACES: usize = 4_096;
/// Labels on one container (kolla sets 11).
pub const MAX_LABELS: usize = 128;
/// Pending package names listed in one updates section.
pub const MAX_PACKAGES: usize = 20_000;
/// Reasons in one reboot section, and packages named in one reason.
pub const MAX_REASONS: usize = 64;
pub const MAX_REASON_PACKAGES: usize = 1_000;
/// Errors in one reboot section.
pub const MAX_ERRORS: usize = 16;

/// Names, ids, paths, versions: bytes.
pub const NAME_BYTES: usize = 256;
/// Image references (registry, path, tag and digest): bytes.
pub const IMAGE_BYTES: usize = 512;
/// Label values, error messages, details: bytes.
pub const TEXT_BYTES: usize = 1_024;
/// Health-check output and action output, kept as a tail: bytes.
pub const TAIL_BYTES: usize = 8_192;
/// An action id: bytes of `[A-Za-z0-9._:-]`.
pub const ACTION_ID_BYTES: usize = 512;

/// How far ahead of the server's clock a report may be dated.
pub const MAX_CLOCK_AHEAD_MILLIS: i64 = 5 * 60 * 1_000;
/// 2000-01-01T00:00:00Z: no agent collected a report before this.
pub const EARLIEST_MILLIS: i64 = 946_684_800_000;

/// A report as the server may hold it, and what was cut or refused to
/// make it so.
#[derive(Debug)]
pub struct Admitted<T> {
    pub value: T,
    /// One line per kind of violation; empty for a sane message.
    pub notes: Vec<String>,
}

/// Why a whole message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("report refused: {0}")]
    Report(ConvertError),
    #[error("action update refused: {0}")]
    ActionUpdate(String),
}

/// Cuts `s` to at most `max` bytes on a character boundary, keeping its
/// head; says whether it cut.
pub fn cut_head(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// Collects what was cut: per field, how many strings or entries.
#[derive(Default)]
struct Notes {
    cut: BTreeMap<&'static str, u32>,
    lines: Vec<String>,
    refused: u32,
}

impl Notes {
    fn cut(&mut self, field: &'static str) {
        *self.cut.entry(field).or_default() += 1;
    }

    fn refuse(&mut self, section: &str, why: impl std::fmt::Display) {
        self.refused += 1;
        self.lines.push(format!(
            "{section} section refused: {why}; the last one is kept"
        ));
    }

    /// `section` if its `count` items are within `max`, else refused.
    fn within<T>(
        &mut self,
        section: &str,
        count: usize,
        max: usize,
        items: &str,
        value: T,
    ) -> Option<T> {
        if count > max {
            self.refuse(section, format_args!("{count} {items}, at most {max}"));
            None
        } else {
            Some(value)
        }
    }

    fn head(&mut self, s: &mut String, max: usize, field: &'static str) {
        if cut_head(s, max) {
            self.cut(field);
        }
    }

    fn tail(&mut self, s: &mut String, max: usize, field: &'static str) {
        if s.len() > max {
            let mut start = s.len() - max;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            s.drain(..start);
            self.cut(field);
        }
    }

    fn list<T>(&mut self, v: &mut Vec<T>, max: usize, field: &'static str) {
        if v.len() > max {
            v.truncate(max);
            self.cut(field);
        }
    }

    fn names(&mut self, v: &mut Vec<String>, max: usize, bytes: usize, field: &'static str) {
        self.list(v, max, field);
        for s in v {
            self.head(s, bytes, field);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.cut.is_empty() {
            let mut line = String::from("cut to the server's limits:");
            for (field, n) in &self.cut {
                let _ = write!(line, " {field} ×{n}");
            }
            self.lines.push(line);
        }
        self.lines
    }
}

/// Admits a report from an agent, as of `now` on the server's clock.
pub fn report(wire: v1::Report, now: Timestamp) -> Result<Admitted<model::Report>, Refused> {
    let mut notes = Notes::default();
    let Some(at) = wire.collected_at.as_ref() else {
        return Err(Refused::Report(ConvertError::Missing(
            "report.collected_at",
        )));
    };
    let mut collected_at = crate::convert::timestamp_from_wire(at);
    let ahead = collected_at.unix_millis().saturating_sub(now.unix_millis());
    if ahead > MAX_CLOCK_AHEAD_MILLIS || collected_at.unix_millis() < EARLIEST_MILLIS {
        notes.lines.push(format!(
            "collected_at {collected_at} is not a sane time (server time {now}); dated at arrival"
        ));
        collected_at = now;
    }
    let containers = wire
        .containers
        .and_then(|s| {
            let n = s.containers.len();
            notes.within("containers", n, MAX_CONTAINERS, "containers", s)
        })
        .and_then(|s| match model::ContainersSection::try_from(s) {
            Ok(mut s) => {
                containers_section(&mut s, &mut notes);
                Some(s)
            }
            Err(e) => {
                notes.refuse("containers", e);
                None
            }
        });
    let disks = wire
        .disks
        .and_then(|d| {
            let n = d.filesystems.len();
            notes.within("disks", n, MAX_FILESYSTEMS, "filesystems", d)
        })
        .map(|d| {
            let mut d = model::DisksSection::from(d);
            for fs in &mut d.filesystems {
                notes.head(&mut fs.mount_point, NAME_BYTES, "filesystem.mount_point");
                notes.head(&mut fs.device, NAME_BYTES, "filesystem.device");
                notes.head(&mut fs.fs_type, NAME_BYTES, "filesystem.fs_type");
            }
            notes.head(&mut d.error, TEXT_BYTES, "disks.error");
            d
        });
    let network = wire
        .network
        .and_then(|n| {
            let count = n.interfaces.len();
            notes.within("network", count, MAX_INTERFACES, "interfaces", n)
        })
        .map(|n| {
            let mut n = model::NetworkSection::from(n);
            for i in &mut n.interfaces {
                notes.head(&mut i.name, NAME_BYTES, "interface.name");
            }
            n
        });
    let metrics = match wire.metrics.map(model::HostMetrics::from) {
        Some(m) => match insane_metric(&m) {
            Some((field, value)) => {
                notes.refuse("metrics", format_args!("{field} is {value}"));
                None
            }
            None => Some(m),
        },
        None => None,
    };
    let host = wire.host.map(|h| {
        let mut h = model::HostFacts::from(h);
        notes.head(&mut h.hostname, NAME_BYTES, "host.hostname");
        notes.head(&mut h.os_pretty_name, NAME_BYTES, "host.os_pretty_name");
        notes.head(&mut h.os_id, NAME_BYTES, "host.os_id");
        notes.head(&mut h.os_version_id, NAME_BYTES, "host.os_version_id");
        notes.head(&mut h.kernel, NAME_BYTES, "host.kernel");
        notes.head(&mut h.arch, NAME_BYTES, "host.arch");
        notes.head(&mut h.boot_id, NAME_BYTES, "host.boot_id");
        h
    });
    let reboot = wire.reboot.map(|r| {
        let mut r = model::RebootSection::from(r);
        notes.list(&mut r.reasons, MAX_REASONS, "reboot.reasons");
        for reason in &mut r.reasons {
            notes.head(&mut reason.source, NAME_BYTES, "reboot.reason.source");
            notes.head(&mut reason.detail, TEXT_BYTES, "reboot.reason.detail");
            notes.names(
                &mut reason.packages,
                MAX_REASON_PACKAGES,
                NAME_BYTES,
                "reboot.reason.packages",
            );
        }
        notes.names(&mut r.errors, MAX_ERRORS, TEXT_BYTES, "reboot.errors");
        r
    });
    let updates = wire.updates.map(|u| {
        let mut u = model::UpdatesSection::from(u);
        notes.head(&mut u.manager, NAME_BYTES, "updates.manager");
        notes.head(&mut u.last_error, TEXT_BYTES, "updates.last_error");
        notes.names(
            &mut u.packages,
            MAX_PACKAGES,
            NAME_BYTES,
            "updates.packages",
        );
        u
    });
    // A full report replaces every section the server holds; with one
    // refused it must not clear what the server held of that one.
    let full = wire.full && notes.refused == 0;
    Ok(Admitted {
        value: model::Report {
            seq: wire.seq,
            collected_at,
            full,
            host,
            metrics,
            containers,
            disks,
            reboot,
            updates,
            network,
        },
        notes: notes.finish(),
    })
}

fn containers_section(s: &mut model::ContainersSection, notes: &mut Notes) {
    notes.head(&mut s.error, TEXT_BYTES, "containers.error");
    notes.head(&mut s.engine, NAME_BYTES, "containers.engine");
    for c in &mut s.containers {
        notes.head(&mut c.id, NAME_BYTES, "container.id");
        notes.head(&mut c.name, NAME_BYTES, "container.name");
        notes.head(&mut c.image, IMAGE_BYTES, "container.image");
        notes.head(&mut c.image_id, NAME_BYTES, "container.image_id");
        notes.tail(
            &mut c.last_health_output,
            TAIL_BYTES,
            "container.last_health_output",
        );
        if c.labels.len() > MAX_LABELS
            || c.labels
                .iter()
                .any(|(k, v)| k.len() > NAME_BYTES || v.len() > TEXT_BYTES)
        {
            notes.cut("container.labels");
            c.labels = std::mem::take(&mut c.labels)
                .into_iter()
                .take(MAX_LABELS)
                .map(|(mut k, mut v)| {
                    cut_head(&mut k, NAME_BYTES);
                    cut_head(&mut v, TEXT_BYTES);
                    (k, v)
                })
                .collect();
        }
    }
}

/// The first metric that is not a finite, non-negative number.
fn insane_metric(m: &model::HostMetrics) -> Option<(&'static str, f64)> {
    [
        ("cpu_usage_percent", f64::from(m.cpu_usage_percent)),
        ("load1", m.load1),
        ("load5", m.load5),
        ("load15", m.load15),
    ]
    .into_iter()
    .find(|(_, v)| !v.is_finite() || *v < 0.0)
}

/// Whether `id` can be an action id the server made: short, and of
/// characters that are safe in a log line and a file name.
pub fn is_action_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ACTION_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Admits an action update from `node`'s agent.
pub fn action_update(
    node: &str,
    wire: v1::ActionUpdate,
) -> Result<Admitted<model::ActionResult>, Refused> {
    if !is_action_id(&wire.action_id) {
        return Err(Refused::ActionUpdate(format!(
            "action_id must be 1 to {ACTION_ID_BYTES} bytes of letters, digits and ._:- ({} bytes given)",
            wire.action_id.len()
        )));
    }
    let mut result =
        action_result_from_wire(node, wire).map_err(|e| Refused::ActionUpdate(e.to_string()))?;
    let mut notes = Notes::default();
    notes.tail(&mut result.output_tail, TAIL_BYTES, "action.output_tail");
    notes.head(&mut result.error, TEXT_BYTES, "action.error");
    notes.head(&mut result.boot_id, NAME_BYTES, "action.boot_id");
    Ok(Admitted {
        value: result,
        notes: notes.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_795_421_138_000);

    fn wire() -> v1::Report {
        v1::Report {
            seq: 1,
            collected_at: Some(crate::convert::timestamp_to_wire(NOW)),
            full: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_sane_report_passes_unchanged_and_without_notes() {
        let mut w = wire();
        w.metrics = Some(v1::HostMetrics {
            load1: 0.5,
            cpu_usage_percent: 12.0,
            ..Default::default()
        });
        w.containers = Some(v1::ContainersSection {
            available: true,
            containers: vec![v1::Container {
                name: "nova_compute".into(),
                last_health_output: "ok\n".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let expected = model::Report::try_from(w.clone()).unwrap();
        let admitted = report(w, NOW).unwrap();
        assert_eq!(admitted.value, expected);
        assert!(admitted.notes.is_empty(), "{:?}", admitted.notes);
    }

    #[test]
    fn metrics_that_are_not_finite_refuse_the_section_only() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let mut w = wire();
            w.metrics = Some(v1::HostMetrics {
                load5: bad,
                ..Default::default()
            });
            w.host = Some(v1::HostFacts {
                hostname: "cmp1".into(),
                ..Default::default()
            });
            let a = report(w, NOW).unwrap();
            assert!(a.value.metrics.is_none(), "{bad}");
            assert!(
                !a.value.full,
                "a full report with a refused section merges as partial"
            );
            assert!(a.value.host.is_some());
            assert!(
                a.notes[0].contains("metrics section refused: load5"),
                "{:?}",
                a.notes
            );
        }
    }

    #[test]
    fn too_many_items_refuse_their_section() {
        let mut w = wire();
        w.containers = Some(v1::ContainersSection {
            containers: vec![v1::Container::default(); MAX_CONTAINERS + 1],
            ..Default::default()
        });
        w.network = Some(v1::NetworkSection {
            interfaces: vec![v1::NetInterface::default(); MAX_INTERFACES + 1],
        });
        w.disks = Some(v1::DisksSection {
            filesystems: vec![v1::Filesystem::default(); MAX_FILESYSTEMS + 1],
            ..Default::default()
        });
        let a = report(w, NOW).unwrap();
        assert!(a.value.containers.is_none() && a.value.network.is_none());
        assert!(a.value.disks.is_none());
        assert_eq!(a.notes.len(), 3, "{:?}", a.notes);
        assert!(a.notes[0].contains("1001 containers, at most 1000"));
    }

    #[test]
    fn long_strings_are_cut_on_char_boundaries_and_output_keeps_its_tail() {
        let mut w = wire();
        let long = "é".repeat(300_000);
        w.host = Some(v1::HostFacts {
            kernel: long.clone(),
            ..Default::default()
        });
        w.containers = Some(v1::ContainersSection {
            containers: vec![v1::Container {
                name: long.clone(),
                last_health_output: format!("{long}THE END"),
                labels: (0..200)
                    .map(|i| (format!("k{i:03}"), "v".repeat(5_000)))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let a = report(w, NOW).unwrap();
        let host = a.value.host.unwrap();
        assert!(host.kernel.len() <= NAME_BYTES && host.kernel.len() >= NAME_BYTES - 1);
        let c = &a.value.containers.unwrap().containers[0];
        assert!(c.name.len() <= NAME_BYTES);
        assert!(c.last_health_output.len() <= TAIL_BYTES);
        assert!(c.last_health_output.ends_with("THE END"));
        assert_eq!(c.labels.len(), MAX_LABELS);
        assert!(c.labels.values().all(|v| v.len() == TEXT_BYTES));
        assert_eq!(a.notes.len(), 1);
        assert!(a.notes[0].contains("container.labels ×1"), "{:?}", a.notes);
        assert!(a.notes[0].contains("host.kernel ×1"), "{:?}", a.notes);
    }

    #[test]
    fn absurd_report_times_are_dated_at_arrival() {
        for millis in [
            NOW.unix_millis() + MAX_CLOCK_AHEAD_MILLIS + 1,
            i64::MAX / 2,
            0,
        ] {
            let mut w = wire();
            w.collected_at = Some(crate::convert::timestamp_to_wire(
                Timestamp::from_unix_millis(millis),
            ));
            let a = report(w, NOW).unwrap();
            assert_eq!(a.value.collected_at, NOW, "{millis}");
            assert_eq!(a.notes.len(), 1);
        }
        let mut w = wire();
        w.collected_at = Some(crate::convert::timestamp_to_wire(
            NOW.saturating_add(std::time::Duration::from_secs(1)),
        ));
        assert_eq!(
            report(w, NOW).unwrap().value.collected_at,
            NOW.saturating_add(std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn a_report_without_a_time_is_refused() {
        assert!(report(v1::Report::default(), NOW).is_err());
    }

    #[test]
    fn unknown_container_states_refuse_the_section_not_the_report() {
        let mut w = wire();
        w.containers = Some(v1::ContainersSection {
            containers: vec![v1::Container {
                state: 99,
                ..Default::default()
            }],
            ..Default::default()
        });
        let a = report(w, NOW).unwrap();
        assert!(a.value.containers.is_none());
        assert_eq!(a.notes.len(), 1);
    }

    #[test]
    fn action_ids_must_be_plain() {
        for bad in ["", "a\nb", "x\u{1b}[2J", &"a".repeat(ACTION_ID_BYTES + 1)] {
            let u = v1::ActionUpdate {
                action_id: bad.into(),
                state: v1::ActionState::Succeeded.into(),
                ..Default::default()
            };
            assert!(action_update("n", u).is_err(), "{bad:?}");
        }
        let u = v1::ActionUpdate {
            action_id: "c-1:cmp1:patch.1".into(),
            state: v1::ActionState::Succeeded.into(),
            output_tail: format!("{}last line\n", "x".repeat(100_000)),
            ..Default::default()
        };
        let a = action_update("n", u).unwrap();
        assert!(a.value.output_tail.ends_with("last line\n"));
        assert_eq!(a.value.output_tail.len(), TAIL_BYTES);
    }
}
