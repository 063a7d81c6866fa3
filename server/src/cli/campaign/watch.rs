//! `campaign watch`: the snapshot, then a line per event and the per-role
//! progress after each node that finished; with `--json`, one object per
//! message. Exits 0 only for a campaign that completed with no failed node.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rollcall_proto::model::Role;
use rollcall_proto::text::for_terminal as safe;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::show::progress;
use super::unexpected;
use crate::campaign::CampaignEvent;
use crate::campaign::lifecycle::Step;
use crate::campaign::record::Phase;
use crate::campaign::wire::{Watched, watched_from_wire};
use crate::cli::client::ConnectArgs;
use crate::cli::{CliError, status_error};

pub(super) async fn watch(id: String, json: bool, connect: ConnectArgs) -> Result<(), CliError> {
    let mut stream = connect
        .campaigns()
        .await?
        .watch_campaign(v1::CampaignRef { id: id.clone() })
        .await
        .map_err(status_error)?
        .into_inner();
    // Each node's step and role, kept current from the events, for the
    // per-role progress line.
    let mut steps: BTreeMap<String, (Role, Step)> = BTreeMap::new();
    let mut phase = None;
    loop {
        let watched = match stream.message().await {
            Ok(Some(e)) => watched_from_wire(e).map_err(unexpected)?,
            Ok(None) => break,
            Err(s) => return Err(status_error(s)),
        };
        let line = WatchLine::of(&watched);
        phase = Some(line.phase);
        match &watched {
            Watched::Snapshot(v) => {
                for n in &v.nodes {
                    steps.insert(n.node.clone(), (n.role, n.step));
                }
                if !json {
                    println!(
                        "campaign {} ({}) is {}",
                        safe(&v.campaign.id),
                        safe(&v.campaign.name),
                        v.campaign.phase
                    );
                    println!("{}", progress(&steps));
                }
            }
            Watched::Event(e) => {
                if let Some(step) = e.step
                    && let Some(slot) = steps.get_mut(&e.node)
                {
                    slot.1 = step;
                }
                if !json {
                    print!("{}", render_event(e, &steps));
                }
            }
        }
        if json {
            println!(
                "{}",
                serde_json::to_string(&line).expect("a watch line serializes")
            );
        }
        if line.ended {
            break;
        }
    }
    let failed = steps.values().filter(|(_, s)| *s == Step::Failed).count();
    if phase == Some(Phase::Completed) && failed == 0 {
        Ok(())
    } else {
        Err(CliError::Runtime(format!(
            "campaign {id} ended {} with {failed} failed node(s)",
            phase.map_or("", Phase::as_str)
        )))
    }
}

/// One line of `watch --json`, in the form it has always had: keys in
/// sorted order, `step` empty when the event is about no one step, no `at`
/// on the snapshot.
#[derive(serde::Serialize)]
struct WatchLine<'a> {
    at: Option<Timestamp>,
    campaign: &'a str,
    ended: bool,
    kind: &'static str,
    message: &'a str,
    node: &'a str,
    phase: Phase,
    step: &'static str,
}

impl<'a> WatchLine<'a> {
    fn of(watched: &'a Watched) -> Self {
        match watched {
            Watched::Snapshot(v) => WatchLine {
                at: None,
                campaign: &v.campaign.id,
                ended: v.ended,
                kind: "snapshot",
                message: "",
                node: "",
                phase: v.campaign.phase,
                step: "",
            },
            Watched::Event(e) => WatchLine {
                at: Some(e.at),
                campaign: &e.campaign,
                ended: e.ended,
                kind: "event",
                message: &e.message,
                node: &e.node,
                phase: e.phase,
                step: e.step.map_or("", Step::as_str),
            },
        }
    }
}

/// `08:05:38  cmp03         MESSAGE`, and the progress line after a node
/// finished or something happened to the whole campaign.
fn render_event(e: &CampaignEvent, steps: &BTreeMap<String, (Role, Step)>) -> String {
    let c = e.at.civil();
    let who = if e.node.is_empty() {
        "campaign".into()
    } else {
        safe(&e.node)
    };
    let mut out = format!(
        "{:02}:{:02}:{:02}  {who:<12}  {}\n",
        c.hour,
        c.minute,
        c.second,
        safe(&e.message)
    );
    if e.node.is_empty() || e.step.is_some_and(Step::is_terminal) {
        let _ = writeln!(out, "{}", progress(steps));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::CampaignView;
    use crate::campaign::record::Campaign;

    #[test]
    fn watch_json_lines_keep_their_shape() {
        let now = Timestamp::from_unix_millis(1_795_421_138_123);
        let line = |w: &Watched| serde_json::to_string(&WatchLine::of(w)).expect("json");
        let event = |step| {
            Watched::Event(CampaignEvent {
                campaign: "c1".into(),
                at: now,
                node: "cmp1".into(),
                step,
                phase: Phase::Running,
                message: "cmp1: wait-return".into(),
                ended: false,
            })
        };
        assert_eq!(
            line(&event(Some(Step::WaitReturn))),
            r#"{"at":"2026-11-23T08:05:38.123Z","campaign":"c1","ended":false,"kind":"event","message":"cmp1: wait-return","node":"cmp1","phase":"running","step":"wait-return"}"#
        );
        assert!(line(&event(None)).ends_with(r#""step":""}"#));
        let view = CampaignView {
            campaign: Campaign {
                id: "c1".into(),
                name: "november".into(),
                spec_toml: String::new(),
                phase: Phase::Completed,
                reason: String::new(),
                started_by: "alice".into(),
                created_at: now,
                updated_at: now,
                finished_at: Some(now),
                held: false,
                blast: Default::default(),
            },
            nodes: vec![],
            nodes_by_step: BTreeMap::new(),
            waiting: String::new(),
            ended: true,
            alert_hold: String::new(),
            left_drained: vec![],
            impacts: Vec::new(),
        };
        assert_eq!(
            line(&Watched::Snapshot(Box::new(view))),
            r#"{"at":null,"campaign":"c1","ended":true,"kind":"snapshot","message":"","node":"","phase":"completed","step":""}"#
        );
    }

    #[test]
    fn an_event_line_shows_the_utc_clock() {
        let e = CampaignEvent {
            campaign: "c1".into(),
            at: Timestamp::from_unix_millis(1_795_421_138_123),
            node: "cmp1".into(),
            step: Some(Step::Done),
            phase: Phase::Running,
            message: "cmp1 done".into(),
            ended: false,
        };
        let steps = [("cmp1".to_owned(), (Role::Compute, Step::Done))].into();
        assert_eq!(
            render_event(&e, &steps),
            "08:05:38  cmp1          cmp1 done\nprogress: compute 1/1 done\n"
        );
    }
}
