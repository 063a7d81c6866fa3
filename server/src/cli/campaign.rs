//! `campaign plan|start|status|watch|pause|resume|cancel|list|audit|undrain`.
//!
//! A spec comes from `--spec FILE` (TOML), from flags, or both (flags win);
//! either way it is checked here first, so a bad spec exits 2 before the
//! server is asked anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use rollcall_proto::model::Role;
use rollcall_proto::text::for_terminal as safe;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::client::{ConnectArgs, all_pages};
use super::render::{ago, table};
use super::{CliError, status_error};
use crate::campaign::CampaignView;
use crate::campaign::lifecycle::Step;
use crate::campaign::record::AuditEntry;
use crate::campaign::spec::CampaignSpec;
use crate::campaign::wire::{audit_from_wire, view_from_wire};

#[derive(Args, Debug, Clone)]
pub struct SpecArgs {
    /// Campaign spec file (TOML; see packaging/campaign.example.toml).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Campaign name (recorded in the audit log).
    #[arg(long)]
    pub name: Option<String>,
    /// Only nodes of this role (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<Role>,
    /// Only nodes whose name matches this glob, e.g. 'cmp-*' (repeatable).
    #[arg(long = "node", value_name = "GLOB")]
    pub nodes: Vec<String>,
    /// Nodes of ROLE unavailable at once: ROLE=N or ROLE=N% (repeatable;
    /// controllers always go one at a time).
    #[arg(long = "concurrency", value_name = "ROLE=AMOUNT")]
    pub concurrency: Vec<String>,
    /// Failed nodes borne before the campaign pauses: N or N% [default: 0].
    #[arg(long, value_name = "AMOUNT")]
    pub error_budget: Option<String>,
    /// if-required, always or never [default: if-required].
    #[arg(long, value_name = "POLICY")]
    pub reboot: Option<String>,
}

impl SpecArgs {
    /// The spec as TOML text: the file, with the flags on top. Checked.
    pub fn to_toml(&self) -> Result<String, CliError> {
        let usage = CliError::Usage;
        let mut table: toml::Table = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("cannot read spec {}: {e}", path.display())))?;
                text.parse().map_err(|e: toml::de::Error| {
                    usage(format!(
                        "spec {}: {}",
                        path.display(),
                        e.message().trim_end()
                    ))
                })?
            }
            None => toml::Table::new(),
        };
        if let Some(name) = &self.name {
            table.insert("name".into(), name.clone().into());
        }
        let strings =
            |v: &[String]| toml::Value::Array(v.iter().map(|s| s.clone().into()).collect());
        let select = table
            .entry("select")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(select) = select.as_table_mut() {
            if !self.roles.is_empty() {
                let roles: Vec<String> = self.roles.iter().map(|r| r.to_string()).collect();
                select.insert("roles".into(), strings(&roles));
            }
            if !self.nodes.is_empty() {
                select.insert("nodes".into(), strings(&self.nodes));
            }
        }
        if !self.concurrency.is_empty() {
            let c = table
                .entry("concurrency")
                .or_insert_with(|| toml::Table::new().into());
            for pair in &self.concurrency {
                let (role, amount) = pair.split_once('=').ok_or_else(|| {
                    usage(format!("--concurrency {pair:?}: use ROLE=N or ROLE=N%"))
                })?;
                if let Some(c) = c.as_table_mut() {
                    c.insert(role.into(), amount.to_owned().into());
                }
            }
        }
        if let Some(b) = &self.error_budget {
            table.insert("error_budget".into(), b.clone().into());
        }
        if let Some(r) = &self.reboot {
            table.insert("reboot".into(), r.clone().into());
        }
        let text = toml::to_string(&table).map_err(|e| usage(format!("spec: {e}")))?;
        CampaignSpec::parse(&text).map_err(|e| usage(format!("campaign spec: {e}")))?;
        Ok(text)
    }
}

#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Dry run: the waves in order and who would be skipped, nothing done.
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Start a campaign; prints its id.
    Start {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// A campaign with a row per node.
    Status {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Follow a campaign: progress per role and a line per event. Exits
    /// when it ends: 0 if it completed with no failed node, 1 otherwise.
    Watch {
        id: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Stop new steps everywhere; running actions finish.
    Pause {
        id: String,
        /// Why (written to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Go on. Failed nodes stay failed and stop counting against the
    /// error budget, unless --retry-failed starts them again.
    Resume {
        id: String,
        /// Start the failed nodes again (under new action ids).
        #[arg(long)]
        retry_failed: bool,
        /// Why (written to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// No new node starts; nodes in flight finish (and are undrained).
    Cancel {
        id: String,
        /// Why (written to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Run the undrain hook of a node that failed and stays drained (the
    /// hook its role's spec names, where the role's hooks run). The node
    /// stays failed; `status` shows when it is no longer left drained.
    Undrain {
        id: String,
        node: String,
        /// Why (written to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Every campaign, oldest first.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Who did what, and every step with its times, exit code and output tail.
    Audit {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("CLI output serializes")
}

fn view(s: v1::CampaignStatus) -> Result<CampaignView, CliError> {
    view_from_wire(s).map_err(|e| CliError::Runtime(format!("unexpected answer: {e}")))
}

pub async fn run(cmd: CampaignCommand) -> Result<(), CliError> {
    let now = Timestamp::now();
    match cmd {
        CampaignCommand::Plan {
            spec,
            json,
            connect,
        } => {
            let spec_toml = spec.to_toml()?;
            let plan = connect
                .campaigns()
                .await?
                .plan_campaign(v1::PlanCampaignRequest { spec_toml })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!("{}", json_line(&plan_json(&plan)));
            } else {
                print!("{}", render_plan(&plan));
            }
        }
        CampaignCommand::Start {
            spec,
            json,
            connect,
        } => {
            let spec_toml = spec.to_toml()?;
            let status = connect
                .campaigns()
                .await?
                .start_campaign(v1::StartCampaignRequest { spec_toml })
                .await
                .map_err(status_error)?
                .into_inner();
            let v = view(status)?;
            if json {
                println!("{}", json_line(&v));
            } else {
                println!("{}", safe(&v.campaign.id));
            }
        }
        CampaignCommand::Status { id, json, connect } => {
            let status = connect
                .campaigns()
                .await?
                .get_campaign(v1::CampaignRef { id })
                .await
                .map_err(status_error)?
                .into_inner();
            let v = view(status)?;
            if json {
                println!("{}", json_line(&v));
            } else {
                print!("{}", render_status(&v, now));
            }
        }
        CampaignCommand::Watch { id, json, connect } => return watch(id, json, connect).await,
        CampaignCommand::Pause {
            id,
            reason,
            connect,
        } => {
            let request = v1::ControlRequest { id, reason };
            let s = connect.campaigns().await?.pause_campaign(request).await;
            print_control(s)?;
        }
        CampaignCommand::Resume {
            id,
            retry_failed,
            reason,
            connect,
        } => {
            let request = v1::ResumeRequest {
                id,
                reason,
                retry_failed,
            };
            let s = connect.campaigns().await?.resume_campaign(request).await;
            print_control(s)?;
        }
        CampaignCommand::Cancel {
            id,
            reason,
            connect,
        } => {
            let request = v1::ControlRequest { id, reason };
            let s = connect.campaigns().await?.cancel_campaign(request).await;
            print_control(s)?;
        }
        CampaignCommand::Undrain {
            id,
            node,
            reason,
            connect,
        } => {
            let request = v1::UndrainRequest {
                campaign_id: id.clone(),
                node: node.clone(),
                reason,
            };
            let status = connect
                .campaigns()
                .await?
                .undrain(request)
                .await
                .map_err(status_error)?
                .into_inner();
            let v = view(status)?;
            let asked = v
                .nodes
                .iter()
                .find(|n| n.node == node)
                .and_then(|n| Some((n.left_drained.as_deref()?, n.undrain.as_ref()?)));
            match asked {
                Some((hook, u)) => println!(
                    "{} {}: hook {} asked of {} ({}); `campaign status {}` follows it",
                    safe(&id),
                    safe(&node),
                    safe(hook),
                    safe(&u.action_node),
                    safe(&u.action_id),
                    safe(&id)
                ),
                None => println!("{} {}: undrain asked", safe(&id), safe(&node)),
            }
        }
        CampaignCommand::List { json, connect } => {
            let campaigns = all_campaigns(&connect).await?;
            let views = campaigns
                .into_iter()
                .map(view)
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                println!("{}", json_line(&views));
            } else {
                let mut rows = vec![
                    ["ID", "NAME", "PHASE", "STARTED BY", "CREATED", "REASON"]
                        .map(String::from)
                        .to_vec(),
                ];
                for v in &views {
                    let c = &v.campaign;
                    rows.push(vec![
                        c.id.clone(),
                        c.name.clone(),
                        c.phase.to_string(),
                        c.started_by.clone(),
                        format!("{} ago", ago(now, c.created_at)),
                        c.reason.clone(),
                    ]);
                }
                print!("{}", table(&rows));
            }
        }
        CampaignCommand::Audit { id, json, connect } => {
            let entries: Vec<AuditEntry> = connect
                .campaigns()
                .await?
                .campaign_audit(v1::CampaignRef { id })
                .await
                .map_err(status_error)?
                .into_inner()
                .entries
                .into_iter()
                .map(audit_from_wire)
                .collect();
            if json {
                println!("{}", json_line(&entries));
            } else {
                print!("{}", render_audit(&entries));
            }
        }
    }
    Ok(())
}

/// The `Left drained:` line of `fleet status`: every node that failed in a
/// campaign and stays drained, across all campaigns. The fleet view does
/// not know campaigns, so this asks the campaign API; a failure to ask is
/// said on the line rather than failing the whole status.
pub async fn left_drained_line(connect: &ConnectArgs) -> String {
    match all_campaigns(connect).await {
        Ok(campaigns) => render_left_drained(&campaigns),
        Err(e) => format!(
            "Left drained: unknown (campaigns could not be listed: {})\n",
            safe(&e.to_string())
        ),
    }
}

/// Every campaign's summary, page after page.
async fn all_campaigns(connect: &ConnectArgs) -> Result<Vec<v1::CampaignStatus>, CliError> {
    let client = connect.campaigns().await?;
    all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let resp = client
                .list_campaigns(v1::ListCampaignsRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((resp.campaigns, resp.next_page_token))
        }
    })
    .await
}

fn render_left_drained(campaigns: &[v1::CampaignStatus]) -> String {
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

/// `ID PHASE[: REASON]` after a pause, resume or cancel.
fn print_control(
    answer: Result<tonic::Response<v1::CampaignStatus>, tonic::Status>,
) -> Result<(), CliError> {
    let s = answer.map_err(status_error)?.into_inner();
    let (id, phase) = (safe(&s.id), safe(&s.phase));
    if s.reason.is_empty() {
        println!("{id} {phase}");
    } else {
        println!("{id} {phase}: {}", safe(&s.reason));
    }
    Ok(())
}

async fn watch(id: String, json: bool, connect: ConnectArgs) -> Result<(), CliError> {
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
    let mut phase = String::new();
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(s) => return Err(status_error(s)),
        };
        phase.clone_from(&event.phase);
        if let Some(status) = event.status.clone() {
            let v = view(status)?;
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
        } else if let Some(step) = Step::from_name(&event.step)
            && let Some(slot) = steps.get_mut(&event.node)
        {
            slot.1 = step;
        }
        if json {
            let line = serde_json::json!({
                "kind": event.kind, "campaign": event.campaign,
                "at": event.at.as_ref().map(rollcall_proto::convert::timestamp_from_wire),
                "node": event.node, "step": event.step, "phase": event.phase,
                "message": event.message, "ended": event.ended,
            });
            println!("{line}");
        } else if event.kind != "snapshot" {
            let at = event
                .at
                .as_ref()
                .map(rollcall_proto::convert::timestamp_from_wire)
                .map(|t| serde_json::to_string(&t).unwrap_or_default())
                .unwrap_or_default();
            let clock = at.trim_matches('"').get(11..19).unwrap_or("").to_owned();
            let who = if event.node.is_empty() {
                "campaign".into()
            } else {
                safe(&event.node)
            };
            println!("{clock}  {who:<12}  {}", safe(&event.message));
            if event.node.is_empty() || Step::from_name(&event.step).is_some_and(Step::is_terminal)
            {
                println!("{}", progress(&steps));
            }
        }
        if event.ended {
            break;
        }
    }
    let failed = steps.values().filter(|(_, s)| *s == Step::Failed).count();
    if phase == "completed" && failed == 0 {
        Ok(())
    } else {
        Err(CliError::Runtime(format!(
            "campaign {id} ended {phase} with {failed} failed node(s)"
        )))
    }
}

/// `compute 4/10 done, 2 in flight | storage 0/3 | controller 0/3`.
fn progress(steps: &BTreeMap<String, (Role, Step)>) -> String {
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

fn plan_json(p: &v1::PlanCampaignResponse) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "waves": p.waves.iter().map(|w| serde_json::json!({"role": w.role, "nodes": w.nodes})).collect::<Vec<_>>(),
        "skipped": p.skipped.iter().map(|s| serde_json::json!({"node": s.node, "reason": s.reason})).collect::<Vec<_>>(),
    })
}

fn render_plan(p: &v1::PlanCampaignResponse) -> String {
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
            safe(&w.role),
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

fn render_status(v: &CampaignView, now: Timestamp) -> String {
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

fn render_audit(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let at = serde_json::to_string(&e.at).unwrap_or_default();
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
            at.trim_matches('"'),
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
    use crate::campaign::record::{Campaign, NodeRun};
    use crate::campaign::schedule::Phase;

    #[test]
    fn status_says_which_failed_node_stays_drained_and_how_to_undo_it() {
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let mut failed = NodeRun::new("cmp03".into(), Role::Compute, now);
        failed.enter(Step::Failed, now);
        failed.note = "patch on cmp03 failed (exit code 100): E: broken".into();
        failed.left_drained = Some("nova-undrain".into());
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
            },
            nodes: vec![failed],
            nodes_by_step: BTreeMap::new(),
            waiting: String::new(),
            ended: false,
            left_drained: vec!["cmp03".into()],
        };
        let text = render_status(&view, now);
        assert!(
            text.contains("[left drained] patch on cmp03 failed"),
            "{text}"
        );
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
}
