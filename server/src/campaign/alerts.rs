//! Alert gating, pure: the spec's `[alerts]` (which monitoring APIs to
//! ask, which alerts hold a campaign), Prometheus-style label matchers, and
//! the one decision: does what the APIs said last hold new starts now?
//!
//! The rules:
//! - An alert holds when its name fully matches `alertname` (if set) and
//!   it matches every matcher of one entry of `matchers` (if any). Pending
//!   alerts (only Prometheus knows them) hold only with `pending = true`.
//! - With `ignore_nodes_in_flight`, an alert about a node the campaign is
//!   working on is left out: one of its `node_labels` is the node's name,
//!   or the name followed by `:` (a port) or `.` (a domain). Patching a
//!   node is expected to make its own alerts fire.
//! - With `ignore_silenced`, an alert Alertmanager reports inhibited, or
//!   silenced by a silence that is not one of the campaign's own leases,
//!   is left out, and so is Prometheus's copy of it (a Prometheus alert
//!   whose labels all appear, equal, on such an Alertmanager alert:
//!   Alertmanager adds the external labels). The campaign's own silences
//!   hide nothing from it: the moment a node leaves flight its alerts hold
//!   again, and `ignore_nodes_in_flight = false` means what it says.
//! - Fail closed: a source whose last try failed, that never answered, or
//!   whose last answer is older than twice `check_secs` holds too, with
//!   the reason; so does an answer asked before the last time a node left
//!   flight (its alerts, no longer left out, may be missing from it).
//!
//! The work is split by cost. The poller (`runner/monitor.rs`) calls
//! [`blocking`] once per look: which alerts hold at all (state, matchers,
//! suppression, one copy each), with hash indexes, off the scheduler's
//! task. Each pass calls [`verdict`], which only checks the answers' age
//! and leaves out the alerts about the nodes in flight at that moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rollcall_proto::text::cut;
use rollcall_proto::timestamp::Timestamp;
use serde::Deserialize;

pub mod answer;
mod matcher;

pub use matcher::{Matcher, MatcherSet, Op, Pattern, silence_matchers};
use matcher::{escaped, quoted};

/// The longest label value a hold's description shows; the rest is cut
/// with `…`. Labels come from the monitoring API: untrusted.
const SHOWN_VALUE_CHARS: usize = 64;
/// The longest a hold's description gets.
const SHOWN_CHARS: usize = 400;

/// `[alerts]`: the monitoring APIs a campaign asks, and the alerts that
/// hold it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSpec {
    /// Prometheus's base URL (`http://prometheus:9090`): `/api/v1/alerts`
    /// gives pending and firing alerts.
    pub prometheus_url: Option<String>,
    /// Alertmanager's base URL (`http://alertmanager:9093`): `/api/v2/alerts`
    /// gives firing alerts and whether they are silenced; silences for
    /// nodes in flight are made there.
    pub alertmanager_url: Option<String>,
    /// An alert holds when it matches every matcher of one entry.
    pub matchers: Vec<MatcherSet>,
    /// A regex an alert's name must match whole.
    pub alertname: Option<Pattern>,
    /// Pending alerts hold too (Prometheus only).
    pub pending: bool,
    /// Leave out alerts about the nodes in flight.
    pub ignore_nodes_in_flight: bool,
    /// The labels that name an alert's node.
    pub node_labels: Vec<String>,
    /// Leave out alerts Alertmanager reports inhibited, or silenced by a
    /// silence that is not one of the campaign's own.
    pub ignore_silenced: bool,
    /// Seconds between two looks.
    pub check_secs: u64,
    /// Seconds one request may take; the smaller of 10 and `check_secs`
    /// if unset.
    pub timeout_secs: Option<u64>,
    /// A CA file (PEM) for https URLs; the system's roots if unset.
    pub ca: Option<PathBuf>,
    pub silence: SilenceSpec,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            prometheus_url: None,
            alertmanager_url: None,
            matchers: Vec::new(),
            alertname: None,
            pending: false,
            ignore_nodes_in_flight: true,
            node_labels: ["instance", "node", "host", "hostname"]
                .map(String::from)
                .to_vec(),
            ignore_silenced: true,
            check_secs: 15,
            timeout_secs: None,
            ca: None,
            silence: SilenceSpec::default(),
        }
    }
}

/// `[alerts.silence]`: a silence in Alertmanager for each node from its
/// drain to the end of its undrain (see `silence.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceSpec {
    /// On by default when `alertmanager_url` is set.
    pub enabled: Option<bool>,
    /// The silence's matchers; `{node}` stands for the node's name
    /// (regex-escaped in `=~` and `!~` matchers).
    pub matchers: Vec<String>,
    /// How long a silence lasts unless renewed; renewed when less than
    /// half is left.
    pub lease_secs: u64,
}

impl Default for SilenceSpec {
    fn default() -> Self {
        Self {
            enabled: None,
            matchers: vec![r#"instance=~"{node}([.:].*)?""#.into()],
            lease_secs: 1_800,
        }
    }
}

impl AlertsSpec {
    /// The checks made once, with the spec: one line each.
    pub fn validate(&self) -> Result<(), String> {
        if self.prometheus_url.is_none() && self.alertmanager_url.is_none() {
            return Err("alerts: set prometheus_url, alertmanager_url or both".into());
        }
        for (key, url) in [
            ("alerts.prometheus_url", &self.prometheus_url),
            ("alerts.alertmanager_url", &self.alertmanager_url),
        ] {
            if let Some(url) = url {
                check_url(key, url)?;
            }
        }
        if self.matchers.is_empty() && self.alertname.is_none() {
            return Err(
                "alerts: name the alerts that hold the campaign: matchers, alertname or both"
                    .into(),
            );
        }
        if let Some(empty) = self.matchers.iter().find(|m| m.0.is_empty()) {
            return Err(format!(
                "alerts.matchers: {empty} matches every alert; give at least one label matcher"
            ));
        }
        if self.pending && self.prometheus_url.is_none() {
            return Err(
                "alerts.pending needs prometheus_url: only Prometheus knows pending alerts".into(),
            );
        }
        if self.ignore_nodes_in_flight && self.node_labels.is_empty() {
            return Err("alerts.node_labels is empty: name the labels that carry a node's name (or set ignore_nodes_in_flight = false)".into());
        }
        if self.check_secs == 0 || self.timeout_secs == Some(0) {
            return Err("alerts: check_secs and timeout_secs must be at least 1 second".into());
        }
        if let Some(timeout) = self.timeout_secs.filter(|t| *t > self.check_secs) {
            return Err(format!(
                "alerts: timeout_secs ({timeout}) is longer than check_secs ({}): a look would outlast the next",
                self.check_secs
            ));
        }
        let silence = &self.silence;
        if silence.enabled == Some(true) && self.alertmanager_url.is_none() {
            return Err("alerts.silence.enabled needs alertmanager_url".into());
        }
        if self.silences() {
            if silence.matchers.is_empty() {
                return Err("alerts.silence.matchers is empty: a silence without matchers would silence everything".into());
            }
            if !silence.matchers.iter().any(|m| m.contains("{node}")) {
                return Err("alerts.silence.matchers: none names {node}: the silence would not be the node's".into());
            }
            silence_matchers(&silence.matchers, "node-1.example")
                .map_err(|e| format!("alerts.silence.matchers: {e}"))?;
            if silence.lease_secs < 60 {
                return Err("alerts.silence.lease_secs must be at least 60".into());
            }
            if silence.lease_secs < 4 * self.check_secs {
                return Err(format!(
                    "alerts.silence.lease_secs ({}) must be at least 4 × check_secs ({}): a lease is renewed at a check once half of it is left",
                    silence.lease_secs, self.check_secs
                ));
            }
        }
        Ok(())
    }

    /// Whether silences are made for nodes in flight.
    pub fn silences(&self) -> bool {
        self.alertmanager_url.is_some() && self.silence.enabled.unwrap_or(true)
    }

    pub fn check_every(&self) -> Duration {
        Duration::from_secs(self.check_secs)
    }

    /// How long one request may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(self.check_secs.min(10)))
    }

    /// The APIs asked, Prometheus first.
    pub fn sources(&self) -> Vec<Source> {
        let mut sources = Vec::new();
        if let Some(url) = &self.prometheus_url {
            sources.push(Source::new(SourceKind::Prometheus, url));
        }
        if let Some(url) = &self.alertmanager_url {
            sources.push(Source::new(SourceKind::Alertmanager, url));
        }
        sources
    }

    /// Whether `alert` is one of those that hold the campaign.
    pub fn blocks(&self, alert: &Alert) -> bool {
        self.alertname
            .as_ref()
            .is_none_or(|p| p.is_match(alert.name()))
            && (self.matchers.is_empty() || self.matchers.iter().any(|m| m.matches(&alert.labels)))
    }
}

/// `cmp-01`, `cmp-01:9100` and `cmp-01.example.org` name `cmp-01`;
/// `cmp-010` does not.
pub fn names_node(value: &str, node: &str) -> bool {
    value
        .strip_prefix(node)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('.'))
}

/// A monitoring API's base URL: one the HTTP client takes (http or https,
/// a host, no user information), without a query.
fn check_url(key: &str, url: &str) -> Result<(), String> {
    crate::http::check_url(key, url)?;
    if url.contains(['?', '#']) {
        return Err(format!(
            "{key} {}: give the API's base URL, without a query",
            crate::http::origin(url)
        ));
    }
    Ok(())
}

/// Which monitoring API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Prometheus,
    Alertmanager,
}

rollcall_proto::names!(SourceKind, "source" {
    Prometheus => "prometheus", Alertmanager => "alertmanager",
});

/// A monitoring API the campaign asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// The base URL, without a trailing `/`.
    pub url: String,
}

impl Source {
    pub fn new(kind: SourceKind, url: &str) -> Self {
        Source {
            kind,
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// The URL's host (and port), for messages: never user information.
    pub fn host(&self) -> &str {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        crate::http::host_of(rest.split(['/', '?', '#']).next().unwrap_or(rest))
    }

    /// What to ask for the alerts: every active one (Alertmanager's
    /// silenced ones too, so that Prometheus's copies of them can be left
    /// out).
    pub fn alerts_url(&self) -> String {
        match self.kind {
            SourceKind::Prometheus => format!("{}/api/v1/alerts", self.url),
            SourceKind::Alertmanager => format!(
                "{}/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
                self.url
            ),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.host())
    }
}

/// Whether an alert fires or waits out its `for:` (pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    Pending,
    Firing,
}

rollcall_proto::names!(AlertState, "alert state" {
    Pending => "pending", Firing => "firing",
});

/// An alert as a monitoring API reported it (bounded by `answer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub source: SourceKind,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// Since when it is active (Prometheus) or firing (Alertmanager).
    pub since: Option<Timestamp>,
    /// The ids of the silences that silence it (Alertmanager).
    pub silenced_by: Vec<String>,
    /// Alertmanager inhibits it, or suppresses it without saying why.
    pub inhibited: bool,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Whether Alertmanager suppresses it for a reason other than the
    /// campaign's `own` silences.
    pub fn suppressed(&self, own: &HashSet<String>) -> bool {
        self.inhibited || self.silenced_by.iter().any(|id| !own.contains(id))
    }

    /// Whether `am`, an Alertmanager alert, is this Prometheus alert as
    /// Alertmanager got it (with the external labels added).
    fn is_copy_in(&self, am: &Alert) -> bool {
        self.labels.iter().all(|(k, v)| am.labels.get(k) == Some(v))
    }

    /// `GaleraClusterSize{instance="ctl2:9104", severity="critical"}`,
    /// each value cut and every character a terminal could obey escaped.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        out.push_str(&escaped(&cut(self.name(), SHOWN_VALUE_CHARS), false));
        out.push('{');
        let mut first = true;
        for (k, v) in self.labels.iter().filter(|(k, _)| *k != "alertname") {
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push_str(&escaped(&cut(k, SHOWN_VALUE_CHARS), false));
            out.push('=');
            out.push_str(&quoted(&cut(v, SHOWN_VALUE_CHARS)));
        }
        out.push('}');
        out
    }
}

/// Alertmanager alerts by label pair, to find the copies of a Prometheus
/// alert (the alerts whose labels include all of its own) without trying
/// every pair of alerts.
struct CopyIndex<'a> {
    alerts: Vec<&'a Alert>,
    by_pair: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> CopyIndex<'a> {
    fn new(alerts: impl IntoIterator<Item = &'a Alert>) -> Self {
        let alerts: Vec<&Alert> = alerts.into_iter().collect();
        let mut by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, a) in alerts.iter().enumerate() {
            for (k, v) in &a.labels {
                by_pair.entry((k, v)).or_default().push(i);
            }
        }
        CopyIndex { alerts, by_pair }
    }

    /// The indexed alerts `prom` is a copy in: only those of its rarest
    /// label pair are compared.
    fn copies_of(&self, prom: &Alert) -> Vec<usize> {
        if prom.labels.is_empty() {
            return (0..self.alerts.len()).collect();
        }
        let mut rarest: &[usize] = &[];
        for (i, (k, v)) in prom.labels.iter().enumerate() {
            match self.by_pair.get(&(k.as_str(), v.as_str())) {
                // A label no indexed alert has: none is a copy.
                None => return Vec::new(),
                Some(list) if i == 0 || list.len() < rarest.len() => rarest = list,
                Some(_) => {}
            }
        }
        rarest
            .iter()
            .copied()
            .filter(|i| prom.is_copy_in(self.alerts[*i]))
            .collect()
    }
}

/// The alerts that hold the campaign whatever is in flight, worked out
/// once per look (see the module's rules): those the spec names, in a
/// state that holds, not suppressed (`own`: the campaign's silence ids),
/// one copy of each (Prometheus's, which knows pending and since when),
/// the one active longest first (then by labels).
pub fn blocking(spec: &AlertsSpec, alerts: &[&Alert], own: &HashSet<String>) -> Vec<Alert> {
    let from = |kind| alerts.iter().copied().filter(move |a| a.source == kind);
    let suppressed = CopyIndex::new(
        from(SourceKind::Alertmanager).filter(|a| spec.ignore_silenced && a.suppressed(own)),
    );
    let holds = |a: &&Alert| {
        (a.state == AlertState::Firing || spec.pending)
            && spec.blocks(a)
            && !(spec.ignore_silenced
                && match a.source {
                    SourceKind::Alertmanager => a.suppressed(own),
                    SourceKind::Prometheus => !suppressed.copies_of(a).is_empty(),
                })
    };
    let prom: Vec<&Alert> = from(SourceKind::Prometheus).filter(holds).collect();
    let am = CopyIndex::new(from(SourceKind::Alertmanager).filter(holds));
    // The same alert from both APIs holds once.
    let mut copied = vec![false; am.alerts.len()];
    for p in &prom {
        for i in am.copies_of(p) {
            copied[i] = true;
        }
    }
    let mut held: Vec<Alert> = prom.into_iter().cloned().collect();
    held.extend(
        am.alerts
            .iter()
            .zip(copied)
            .filter(|(_, copied)| !copied)
            .map(|(a, _)| (*a).clone()),
    );
    held.sort_by(|a, b| {
        (a.since.is_none(), a.since, &a.labels).cmp(&(b.since.is_none(), b.since, &b.labels))
    });
    held
}

/// What one API said last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub kind: SourceKind,
    /// When the last look that it answered as documented was asked: what
    /// it says is at least that new.
    pub answered_at: Option<Timestamp>,
    /// Why the last try failed (unreachable, an error status, an answer
    /// the API does not document); `None` when it answered.
    pub failure: Option<String>,
}

impl Answer {
    pub fn none(kind: SourceKind) -> Self {
        Answer {
            kind,
            answered_at: None,
            failure: None,
        }
    }
}

/// What the poller knows: how every source answered, and the alerts that
/// hold (`blocking`) from their last answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub answers: Vec<Answer>,
    pub blocking: Vec<Alert>,
    /// How many looks were made: a hold's end is audited only after a few
    /// looks in a row found it over.
    pub looks: u64,
}

/// Why no node starts: an alert, or a source that cannot be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    Alert {
        alert: Alert,
        /// Other alerts that would hold too.
        others: usize,
    },
    Blind {
        source: Source,
        why: String,
    },
    /// A source not asked yet (the poller just started): a hold, but not
    /// worth an audit line.
    FirstLook {
        source: Source,
    },
    /// A node left flight after the source's last answer was asked: its
    /// alerts count again and may not be in it. Gone at the next look
    /// (the poller looks at once); not worth an audit line.
    Recheck {
        source: Source,
    },
}

impl Hold {
    /// Whether it is worth an audit line (a first look is not: every
    /// campaign starts with one; nor is the look after a node finished).
    pub fn audited(&self) -> bool {
        !matches!(self, Hold::FirstLook { .. } | Hold::Recheck { .. })
    }

    /// What stays the same while the same thing holds: a hold and its end
    /// are audited once, not at every look.
    pub fn key(&self) -> String {
        match self {
            Hold::Alert { alert, .. } => format!("alert {:?}", alert.labels),
            Hold::Blind { source, .. } => format!("blind {source}"),
            Hold::FirstLook { source } => format!("first look {source}"),
            Hold::Recheck { source } => format!("recheck {source}"),
        }
    }

    /// One line for `waiting`, status and the audit.
    pub fn describe(&self) -> String {
        let text = match self {
            Hold::Alert { alert, others } => {
                let mut s = format!("held by alert {} {}", alert.describe(), alert.state);
                if let Some(since) = alert.since {
                    let c = since.civil();
                    s.push_str(&format!(
                        " since {:02}:{:02}:{:02}",
                        c.hour, c.minute, c.second
                    ));
                }
                if *others > 0 {
                    s.push_str(&format!(" (and {others} more)"));
                }
                s
            }
            Hold::Blind { source, why } => {
                format!("held: {source} {}", rollcall_proto::text::for_terminal(why))
            }
            Hold::FirstLook { source } => {
                format!("held: waiting for the first answer of {source}")
            }
            Hold::Recheck { source } => {
                format!("held: waiting for an answer of {source} newer than the last node's finish")
            }
        };
        cut(&text, SHOWN_CHARS).into_owned()
    }
}

/// The decision of one pass: what holds new starts (and drains), given
/// the latest observation, the nodes in flight, when a node last left
/// flight, and the time. Fails closed.
pub fn verdict(
    spec: &AlertsSpec,
    seen: &Observation,
    in_flight: &[&str],
    left_flight: Option<Timestamp>,
    now: Timestamp,
) -> Option<Hold> {
    let stale_after = spec.check_every() * 2;
    for source in spec.sources() {
        let answer = seen.answers.iter().find(|a| a.kind == source.kind);
        let why = match answer {
            None
            | Some(Answer {
                answered_at: None,
                failure: None,
                ..
            }) => return Some(Hold::FirstLook { source }),
            Some(Answer {
                failure: Some(f), ..
            }) => f.clone(),
            Some(Answer {
                answered_at: Some(at),
                ..
            }) if now.since(*at) > stale_after => format!(
                "has not answered for {}s (more than twice check_secs)",
                now.since(*at).as_secs()
            ),
            Some(Answer {
                answered_at: Some(at),
                ..
            }) if left_flight.is_some_and(|left| *at <= left) => {
                return Some(Hold::Recheck { source });
            }
            Some(_) => continue,
        };
        return Some(Hold::Blind { source, why });
    }
    holding(spec, &seen.blocking, in_flight)
}

/// The alert that holds among `blocking` (see [`blocking`]) once the
/// alerts about the nodes in flight are left out: the first, and how
/// many more.
pub fn holding(spec: &AlertsSpec, blocking: &[Alert], in_flight: &[&str]) -> Option<Hold> {
    let flying = InFlight::new(spec, in_flight);
    let mut held = blocking.iter().filter(|a| !flying.about(a));
    let first = held.next()?;
    Some(Hold::Alert {
        alert: first.clone(),
        others: held.count(),
    })
}

/// The nodes in flight, for `ignore_nodes_in_flight`: a hash lookup per
/// label value, whatever the number of nodes.
struct InFlight<'a> {
    spec: &'a AlertsSpec,
    nodes: HashSet<&'a str>,
}

impl<'a> InFlight<'a> {
    fn new(spec: &'a AlertsSpec, in_flight: &[&'a str]) -> Self {
        let nodes = if spec.ignore_nodes_in_flight {
            in_flight.iter().copied().collect()
        } else {
            HashSet::new()
        };
        InFlight { spec, nodes }
    }

    /// Whether one of `alert`'s node labels names a node in flight: the
    /// value itself, or what comes before one of its `:` or `.`, is one.
    fn about(&self, alert: &Alert) -> bool {
        if self.nodes.is_empty() {
            return false;
        }
        self.spec
            .node_labels
            .iter()
            .filter_map(|l| alert.labels.get(l))
            .any(|value| {
                std::iter::once(value.as_str())
                    .chain(value.match_indices([':', '.']).map(|(i, _)| &value[..i]))
                    .any(|name| self.nodes.contains(name))
            })
    }
}

#[cfg(test)]
mod tests;
