//! `campaign plan|start|status|watch|pause|resume|cancel|list|audit|undrain`.
//!
//! A spec comes from `--spec FILE` (TOML), from flags, or both (flags win);
//! either way it is checked here first, so a bad spec exits 2 before the
//! server is asked anything. What is printed for people is in `show`;
//! `watch` follows a campaign.

mod show;
mod watch;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rollcall_proto::model::Role;
use rollcall_proto::text::for_terminal as safe;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use self::show::{plan_json, render_audit, render_left_drained, render_plan, render_status};
use self::watch::watch;
use super::client::{ConnectArgs, all_pages};
use super::render::{ago, table};
use super::{CliError, status_error};
use crate::campaign::CampaignView;
use crate::campaign::record::AuditEntry;
use crate::campaign::spec::CampaignSpec;
use crate::campaign::wire::{audit_from_wire, plan_from_wire, view_from_wire};

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

fn unexpected(e: rollcall_proto::convert::ConvertError) -> CliError {
    CliError::Runtime(format!("unexpected answer: {e}"))
}

fn view(s: v1::CampaignStatus) -> Result<CampaignView, CliError> {
    view_from_wire(s).map_err(unexpected)
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
            let plan = plan_from_wire(plan).map_err(unexpected)?;
            if json {
                println!("{}", plan_json(&plan));
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

/// `ID PHASE[: REASON]` after a pause, resume or cancel.
fn print_control(
    answer: Result<tonic::Response<v1::CampaignStatus>, tonic::Status>,
) -> Result<(), CliError> {
    let c = view(answer.map_err(status_error)?.into_inner())?.campaign;
    let (id, phase) = (safe(&c.id), c.phase);
    if c.reason.is_empty() {
        println!("{id} {phase}");
    } else {
        println!("{id} {phase}: {}", safe(&c.reason));
    }
    Ok(())
}
