//! What the campaign commands print for people (and `plan --json`): a
//! plan, a status with its node table, the audit log, the per-role
//! progress line and `fleet status`'s left-drained line. Every string a
//! node, an action or an operator wrote is escaped (`safe`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rollcall_proto::model::Role;
use rollcall_proto::text::for_terminal as safe;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::json_line;
use crate::campaign::lifecycle::Step;
use crate::campaign::record::AuditEntry;
use crate::campaign::{CampaignView, Plan};
use crate::cli::render::{ago, table};

pub(super) fn render_left_drained(campaigns: &[v1::CampaignStatus]) -> String {
    let nodes: Vec<String> = campaigns
        .iter()
        .flat_map(|c| {
            c.left_drained
                .iter()
                .map(move |n| format!("{} (campaign {})", safe(n), safe(&c.id)))
        })
        .collect();
    // Said only when there is something to undo: the status of a fleet
    // that never failed a node reads as it always did.
    if nodes.is_empty() {
        String::new()
    } else {
        format!(
            "Left drained: {} (`campaign status ID` says how to undo it)\n",
            nodes.join(", ")
        )
    }
}

/// `compute 4/10 done, 2 in flight | storage 0/3 | controller 0/3`.
pub(super) fn progress(steps: &BTreeMap<String, (Role, Step)>) -> String {
    let mut parts = Vec::new();
    for role in [Role::Compute, Role::Storage, Role::Controller] {
        let of: Vec<Step> = steps
            .values()
            .filter(|(r, _)| *r == role)
            .map(|(_, s)| *s)
            .collect();
        if of.is_empty() {
            continue;
        }
        let count = |f: fn(&Step) -> bool| of.iter().filter(|s| f(s)).count();
        let mut line = format!("{role} {}/{} done", count(|s| *s == Step::Done), of.len());
        for (n, what) in [
            (count(|s| s.is_active()), "in flight"),
            (count(|s| *s == Step::Failed), "failed"),
            (count(|s| *s == Step::Skipped), "skipped"),
        ] {
            if n > 0 {
                let _ = write!(line, ", {n} {what}");
            }
        }
        parts.push(line);
    }
    format!("progress: {}", parts.join(" | "))
}

/// `plan --json`: through a `Value`, whose keys are sorted, as this output
/// has always had them.
pub(super) fn plan_json(p: &Plan) -> String {
    json_line(&serde_json::to_value(p).expect("a plan serializes"))
}

pub(super) fn render_plan(p: &Plan) -> String {
    let mut out = format!(
        "plan \"{}\": nothing is done until `campaign start`\n",
        safe(&p.name)
    );
    for (i, w) in p.waves.iter().enumerate() {
        let nodes: Vec<_> = w.nodes.iter().map(|n| safe(n)).collect();
        let _ = writeln!(
            out,
            "wave {:>3}  {:<10}  {}",
            i + 1,
            w.role,
            nodes.join(" ")
        );
    }
    if p.waves.is_empty() {
        out.push_str("no node would be patched\n");
    }
    for s in &p.skipped {
        let _ = writeln!(out, "skip      {:<10}  {}", safe(&s.node), safe(&s.reason));
    }
    out
}

pub(super) fn render_status(v: &CampaignView, now: Timestamp) -> String {
    let c = &v.campaign;
    let mut out = format!(
        "campaign {} ({}) is {}, started by {} {} ago\n",
        safe(&c.id),
        safe(&c.name),
        c.phase,
        safe(&c.started_by),
        ago(now, c.created_at)
    );
    if !c.reason.is_empty() {
        let _ = writeln!(out, "reason: {}", safe(&c.reason));
    }
    if !v.waiting.is_empty() {
        let _ = writeln!(out, "waiting: {}", safe(&v.waiting));
    }
    if !v.alert_hold.is_empty() && v.alert_hold != v.waiting {
        // Another reason waits first (a closed window): the hold still shows.
        let _ = writeln!(out, "alerts: {}", safe(&v.alert_hold));
    }
    for i in &v.impacts {
        let accepted = if i.accepted { " (accepted)" } else { "" };
        let _ = writeln!(out, "impact: {}{accepted}", safe(&i.describe()));
    }
    let steps = v
        .nodes
        .iter()
        .map(|n| (n.node.clone(), (n.role, n.step)))
        .collect();
    let _ = writeln!(out, "{}\n", progress(&steps));
    let mut rows = vec![
        ["NODE", "ROLE", "STEP", "FOR", "NOTE"]
            .map(String::from)
            .to_vec(),
    ];
    let mut drained = Vec::new();
    for n in &v.nodes {
        let mut note = n.note.clone();
        if n.failure_accepted {
            note = format!("(accepted) {note}");
        }
        if let Some(u) = &n.undrain {
            note = format!("[undrain asked of {}] {note}", u.action_node);
        }
        if let Some(hook) = &n.left_drained {
            note = format!("[left drained] {note}");
            drained.push((n.node.as_str(), hook.as_str(), n.undrain.is_some()));
        }
        if let Some(why) = &n.failure {
            note = format!("{note} (after: {why})");
        }
        if let Some(lease) = &n.silence {
            note = format!("[silence {}] {note}", lease.id);
        }
        rows.push(vec![
            n.node.clone(),
            n.role.to_string(),
            n.step.to_string(),
            ago(now, n.since),
            note,
        ]);
    }
    out.push_str(&table(&rows));
    if !drained.is_empty() {
        out.push('\n');
    }
    for (node, hook, running) in drained {
        let what = if running {
            "its undrain is running".to_owned()
        } else {
            format!(
                "run hook {} to undo, or `campaign undrain {} {}`",
                safe(hook),
                safe(&c.id),
                safe(node)
            )
        };
        let _ = writeln!(out, "left drained: {}: {what}", safe(node));
    }
    out
}

pub(super) fn render_audit(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let node = if e.node.is_empty() {
            "-".into()
        } else {
            safe(&e.node)
        };
        let code = e
            .exit_code
            .map(|c| format!(" [exit {c}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<18}  {:<10}  {:<9}  {}{code}",
            e.at,
            safe(&e.actor),
            node,
            safe(&e.event),
            safe(&e.detail)
        );
        for line in e
            .output_tail
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(out, "    | {}", safe(line));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::record::Phase;
    use crate::campaign::record::{Campaign, NodeRun};

    #[test]
    fn status_says_which_failed_node_stays_drained_and_how_to_undo_it() {
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let mut failed = NodeRun::new("cmp03".into(), Role::Compute, now);
        failed.enter(Step::Failed, now);
        failed.note = "patch on cmp03 failed (exit code 100): E: broken".into();
        failed.left_drained = Some("nova-undrain".into());
        let mut patching = NodeRun::new("cmp04".into(), Role::Compute, now);
        patching.enter(Step::Patch, now);
        patching.silence = Some(crate::campaign::silence::Lease {
            id: "7d5f1d4e".into(),
            from: now,
            until: now,
        });
        let view = CampaignView {
            campaign: Campaign {
                id: "c1".into(),
                name: "november".into(),
                spec_toml: String::new(),
                phase: Phase::Paused,
                reason: "error budget exhausted".into(),
                started_by: "alice".into(),
                created_at: now,
                updated_at: now,
                finished_at: None,
                held: false,
                blast: Default::default(),
            },
            nodes: vec![failed, patching],
            nodes_by_step: BTreeMap::new(),
            waiting: "outside the maintenance window".into(),
            ended: false,
            alert_hold: "held by alert NodeDown{instance=\"x\x1b[2J\"} firing".into(),
            left_drained: vec!["cmp03".into()],
            impacts: vec![crate::campaign::blast::Impact {
                node: "cmp09\x1b[2J".into(),
                container: "nova_compute".into(),
                what: "unhealthy".into(),
                began_at: now,
                at: now.saturating_add(std::time::Duration::from_secs(120)),
                during: "while cmp03 was in patch".into(),
                accepted: true,
            }],
        };
        let text = render_status(&view, now);
        assert!(
            text.contains(
                "impact: container nova_compute on cmp09\\x1b[2J unhealthy for 120s (began while cmp03 was in patch) (accepted)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("[left drained] patch on cmp03 failed"),
            "{text}"
        );
        assert!(
            text.contains("alerts: held by alert NodeDown{instance=\"x\\x1b[2J\"} firing\n"),
            "{text}"
        );
        assert!(text.contains("[silence 7d5f1d4e]"), "{text}");
        assert!(
            text.contains(
                "left drained: cmp03: run hook nova-undrain to undo, or `campaign undrain c1 cmp03`"
            ),
            "{text}"
        );
    }

    #[test]
    fn fleet_status_names_left_drained_nodes_of_every_campaign() {
        let c = |id: &str, nodes: &[&str]| v1::CampaignStatus {
            id: id.into(),
            left_drained: nodes.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        };
        assert_eq!(render_left_drained(&[c("c1", &[]), c("c2", &[])]), "");
        assert_eq!(
            render_left_drained(&[c("c1", &["cmp03"]), c("c2", &["cmp07\x1b[2J"])]),
            "Left drained: cmp03 (campaign c1), cmp07\\x1b[2J (campaign c2) (`campaign status ID` says how to undo it)\n"
        );
    }

    #[test]
    fn plan_json_keeps_its_sorted_keys() {
        use crate::campaign::api::{Skip, Wave};
        let plan = Plan {
            name: "november".into(),
            waves: vec![Wave {
                role: Role::Storage,
                nodes: vec!["st1".into(), "st2".into()],
            }],
            skipped: vec![Skip {
                node: "st3".into(),
                reason: "offline".into(),
            }],
        };
        let want = r#"{
  "name": "november",
  "skipped": [
    {
      "node": "st3",
      "reason": "offline"
    }
  ],
  "waves": [
    {
      "nodes": [
        "st1",
        "st2"
      ],
      "role": "storage"
    }
  ]
}"#;
        assert_eq!(plan_json(&plan), want);
    }
}
