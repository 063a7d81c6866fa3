//! `audit list`: the audit of operator actions beyond campaigns (campaign
//! changes are in `campaign audit ID`). Names in it come from certificates:
//! every cell is escaped.

use clap::Subcommand;
use rollcall_proto::v1;

use super::CliError;
use super::client::{ConnectArgs, all_pages};
use super::render::table;
use crate::audit::AuditRecord;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Every operator action beyond campaigns (forget, revoke, renew, issue), oldest first.
    List {
        /// Print JSON (an array of lines) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run(cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::List { json, connect } => {
            let client = connect.admin().await?;
            let records = all_pages(|page_token| {
                let mut client = client.clone();
                async move {
                    let resp = client
                        .list_audit(v1::ListAuditRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((resp.records, resp.next_page_token))
                }
            })
            .await?;
            let lines = records
                .into_iter()
                .map(AuditRecord::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    CliError::Runtime(format!("server sent an invalid audit line: {e}"))
                })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&lines).expect("audit lines serialize")
                );
            } else {
                print!("{}", render_audit_records(&lines));
            }
        }
    }
    Ok(())
}

/// The audit as a table, every cell escaped and cut.
pub fn render_audit_records(lines: &[AuditRecord]) -> String {
    let mut rows = vec![
        ["SEQ", "AT", "WHO", "ROLE", "ACTION", "TARGET", "DETAIL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for l in lines {
        rows.push(vec![
            l.seq.to_string(),
            l.at.to_string(),
            l.who.clone(),
            l.role.clone(),
            l.action.as_str().to_owned(),
            l.target.clone(),
            l.detail.clone(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditAction;
    use rollcall_proto::timestamp::Timestamp;

    #[test]
    fn text_from_certificates_and_admins_stays_on_its_row() {
        let line = AuditRecord {
            seq: 1,
            at: Timestamp::from_unix_millis(0),
            who: "carol".into(),
            role: "admin".into(),
            action: AuditAction::ForgetNode,
            target: "cmp7".into(),
            detail: "gone\n2  forged\u{1b}[2J".into(),
        };
        let shown = render_audit_records(&[line]);
        assert_eq!(shown.lines().count(), 2, "{shown}");
        assert!(shown.contains(r"gone\n2  forged\x1b[2J"), "{shown}");
    }
}
