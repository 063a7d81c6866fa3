//! What a node must look like to be taken out (precheck) and to be given
//! back (postcheck), and whether it asks for a reboot after its patch: pure
//! checks over what the fleet knows of it. `Err` says what is missing; the
//! step waits for it until its timeout.

use std::collections::BTreeMap;

use rollcall_proto::model::{ContainerHealth, ContainerState, Report, Role};
use rollcall_proto::timestamp::Timestamp;

use super::drive::View;
use super::record::NodeRun;
use super::schedule::Health;
use super::spec::{CampaignSpec, RebootPolicy};

/// Whether the node asks for a reboot, judged by a check that ran after
/// `since`; `None` while no such check has been reported. A node that
/// reports no reboot section does not check: it never asks.
pub fn reboot_required_after(report: Option<&Report>, since: Timestamp) -> Option<bool> {
    let report = report?;
    match &report.reboot {
        None => Some(false),
        Some(r) if r.checked_at.is_some_and(|t| t >= since) => Some(r.required),
        Some(_) => None,
    }
}

/// Precheck: the node may be taken out now. Returns the containers running.
pub fn precheck(
    spec: &CampaignSpec,
    run: &NodeRun,
    view: View<'_>,
    fleet: &BTreeMap<String, Health>,
) -> Result<Vec<String>, String> {
    let node = view
        .node
        .filter(|n| n.online)
        .ok_or("the node is offline")?;
    let report = view.report.ok_or("no report from the node yet")?;
    if let Some(disks) = &report.disks {
        for mount in ["/", "/var"] {
            if let Some(fs) = disks.filesystems.iter().find(|f| f.mount_point == mount) {
                let free = 100.0 - fs.used_percent();
                if free < f64::from(spec.min_free_percent) {
                    return Err(format!(
                        "{mount} has {free:.0}% free, below min_free_percent {}",
                        spec.min_free_percent
                    ));
                }
            }
        }
    }
    let running = containers_ready(report, None)?;
    if node.role == Role::Controller
        && let Some((name, _)) = fleet
            .iter()
            .find(|(name, h)| h.role == Role::Controller && !h.available() && **name != run.node)
    {
        return Err(format!(
            "controller quorum guard: {name} is offline or unhealthy"
        ));
    }
    Ok(running)
}

/// Every container (or every one of `wanted`) runs, and none is unhealthy
/// or still starting. Returns the names of those running.
fn containers_ready(report: &Report, wanted: Option<&[String]>) -> Result<Vec<String>, String> {
    let Some(section) = &report.containers else {
        return Ok(Vec::new());
    };
    if !section.available {
        return Err(format!("container engine unavailable: {}", section.error));
    }
    let mut running = Vec::new();
    for c in &section.containers {
        if wanted.is_some_and(|w| !w.contains(&c.name)) {
            continue;
        }
        if c.is_down() {
            return Err(format!("container {} is {}", c.name, c.state));
        }
        if matches!(
            c.health,
            ContainerHealth::Unhealthy | ContainerHealth::Starting
        ) {
            return Err(format!("container {} is {}", c.name, c.health));
        }
        if c.state == ContainerState::Running {
            running.push(c.name.clone());
        }
    }
    if let Some(wanted) = wanted
        && let Some(missing) = wanted.iter().find(|w| !running.contains(w))
    {
        return Err(format!("container {missing} is not running again yet"));
    }
    Ok(running)
}

/// Postcheck: the node came back as it was. Containers that ran at
/// precheck run and are healthy, the reboot-required flag is cleared (unless
/// the policy never reboots), and the report is newer than the patch.
pub fn postcheck(policy: RebootPolicy, run: &NodeRun, view: View<'_>) -> Result<(), String> {
    view.node
        .filter(|n| n.online)
        .ok_or("the node is offline")?;
    let report = view.report.ok_or("no report from the node yet")?;
    if let Some(patched) = run.patched_at
        && report.collected_at < patched
    {
        return Err("waiting for a report newer than the patch".into());
    }
    containers_ready(report, Some(&run.containers))?;
    // A new session's first report carries the agent's reboot state before
    // its first check ran (never checked): wait for a real check, one that
    // ran after the patch.
    if let Some(reboot) = &report.reboot {
        let fresh = match (reboot.checked_at, run.patched_at) {
            (Some(checked), Some(patched)) => checked >= patched,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fresh {
            return Err("waiting for a reboot check since the patch and boot".into());
        }
    }
    if policy != RebootPolicy::Never && report.reboot_required() {
        let why = report
            .reboot
            .as_ref()
            .and_then(|r| r.reasons.first())
            .map(|r| format!(": {}", r.detail))
            .unwrap_or_default();
        return Err(format!("the node still asks for a reboot{why}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::*;
    use crate::campaign::lifecycle::Step;
    use rollcall_proto::model::{DisksSection, Filesystem, Node};

    #[test]
    fn precheck_names_what_blocks_it() {
        let spec = CampaignSpec::default();
        let run = run_in(Step::Precheck, Role::Compute, 0);
        let n = node("cmp1", Role::Compute, "b");
        let ok = fleet(&[]);
        let check = |r: &Report, n: &Node, f: &BTreeMap<String, Health>| {
            precheck(
                &spec,
                &run,
                View {
                    node: Some(n),
                    report: Some(r),
                },
                f,
            )
        };
        assert_eq!(
            check(&report(0, None, healthy()), &n, &ok),
            Ok(vec!["nova_compute".to_owned(), "cron".to_owned()])
        );
        let mut sick = healthy();
        sick[0].health = ContainerHealth::Unhealthy;
        assert_eq!(
            check(&report(0, None, sick), &n, &ok),
            Err("container nova_compute is unhealthy".into())
        );
        let mut full = report(0, None, healthy());
        full.disks = Some(DisksSection {
            filesystems: vec![Filesystem {
                mount_point: "/var".into(),
                used_bytes: 95,
                available_bytes: 5,
                ..Default::default()
            }],
            error: String::new(),
        });
        assert_eq!(
            check(&full, &n, &ok),
            Err("/var has 5% free, below min_free_percent 10".into())
        );
        let mut off = n.clone();
        off.online = false;
        assert_eq!(
            check(&report(0, None, healthy()), &off, &ok),
            Err("the node is offline".into())
        );
        // A controller goes only while every other controller is healthy.
        let ctl = node("ctl1", Role::Controller, "b");
        let mut ctl_run = run.clone();
        ctl_run.node = "ctl1".into();
        let degraded = fleet(&[
            ("ctl1", Role::Controller, true),
            ("ctl2", Role::Controller, false),
        ]);
        assert_eq!(
            precheck(
                &spec,
                &ctl_run,
                View {
                    node: Some(&ctl),
                    report: Some(&report(0, None, vec![]))
                },
                &degraded
            ),
            Err("controller quorum guard: ctl2 is offline or unhealthy".into())
        );
    }
}
