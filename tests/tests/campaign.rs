//! Rolling campaigns across one real server and 20 real agents in one
//! process, over real mTLS and a real SQLite file. Patch and reboot are the
//! harness's named fakes (`FakePatch`, `FakeReboot`: this machine cannot
//! patch or reboot itself 20 times); everything between them is the real
//! scheduler, the real agent action store and the real reboot check.

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_server::campaign::CampaignView;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::NodeRun;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::fleet::{Fleet, max_unavailable};
use rollcall_tests::{eventually, init};

const FLEET: &[(Role, usize)] = &[
    (Role::Compute, 12),
    (Role::Storage, 5),
    (Role::Controller, 3),
];
const LONG: Duration = Duration::from_secs(120);

fn step_of(v: &CampaignView, node: &str) -> Step {
    v.nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.step)
        .unwrap_or_else(|| panic!("{node} is not in the campaign"))
}

/// Waits for the campaign to end within `within` (well inside the 30 s
/// between the agents' full reports), naming where each node stood if not.
async fn ended_within(fleet: &Fleet, id: &str, within: Duration) -> CampaignView {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = fleet.status(id).await;
        if v.ended {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the campaign did not end within {within:?}: {:?}",
            v.nodes
                .iter()
                .map(|n| (n.node.as_str(), n.step, n.note.as_str()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finished(
    v: &CampaignView,
    role: Role,
) -> Vec<(
    rollcall_proto::timestamp::Timestamp,
    rollcall_proto::timestamp::Timestamp,
)> {
    v.nodes
        .iter()
        .filter(|n| n.role == role)
        .map(|n| {
            (
                n.started_at.expect("started"),
                n.finished_at.expect("finished"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_patches_every_role_in_order_within_its_concurrency() {
    init();
    let fleet = Fleet::start(FLEET).await;
    let spec = r#"
name = "november"
reboot = "if-required"
[concurrency]
compute = 4
storage = "40%"
[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
run_on = "controller"
[hooks.storage]
drain = "ceph-noout-set"
undrain = "ceph-noout-unset"
run_on = "self"
"#;
    let started = fleet.start_campaign(spec).await;
    assert_eq!(started.campaign.phase, Phase::Running);
    assert_eq!(started.campaign.started_by, "test-operator");
    let done = fleet.wait_ended(&started.campaign.id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{:#?}", done);

    for n in &done.nodes {
        assert_eq!(n.step, Step::Done, "{}: {}", n.node, n.note);
        let node = fleet.node(&n.node);
        assert_eq!(node.patch_runs(), 1, "{} patched once", n.node);
        // FakePatch asks for a reboot, so if-required reboots every node once.
        assert_eq!(node.reboots(), 1, "{} rebooted once", n.node);
    }
    // Roles in order: every compute node finished before any storage node
    // started, and storage before the controllers.
    let last = |r| {
        finished(&done, r)
            .iter()
            .map(|(_, f)| *f)
            .max()
            .expect("some")
    };
    let first = |r| {
        finished(&done, r)
            .iter()
            .map(|(s, _)| *s)
            .min()
            .expect("some")
    };
    assert!(last(Role::Compute) <= first(Role::Storage));
    assert!(last(Role::Storage) <= first(Role::Controller));
    // Never more out of service at once than each role's concurrency, and
    // the concurrency was used.
    assert_eq!(max_unavailable(&done.nodes, Role::Compute), 4);
    assert_eq!(max_unavailable(&done.nodes, Role::Storage), 2);
    assert_eq!(max_unavailable(&done.nodes, Role::Controller), 1);

    // Compute drains ran on a controller with the target's name; storage
    // set and unset noout on itself.
    let on_controllers: Vec<String> = ["ctl01", "ctl02", "ctl03"]
        .iter()
        .flat_map(|c| fleet.node(c).hooks())
        .collect();
    for i in 1..=12 {
        let target = format!("cmp{i:02}");
        assert!(
            on_controllers.contains(&format!("nova-drain {target}")),
            "drain of {target}"
        );
        assert!(
            on_controllers.contains(&format!("nova-undrain {target}")),
            "undrain of {target}"
        );
    }
    assert_eq!(
        fleet.node("sto03").hooks(),
        ["ceph-noout-set sto03", "ceph-noout-unset sto03"]
    );
    assert!(
        fleet.node("cmp01").hooks().is_empty(),
        "compute hooks are delegated"
    );

    // The audit log names the operator and every step with its outcome.
    let audit = fleet.audit(&started.campaign.id).await;
    assert_eq!(audit[0].actor, "operator:test-operator");
    assert_eq!(audit[0].event, "started");
    let patch = audit
        .iter()
        .find(|e| e.node == "cmp05" && e.detail.starts_with("patch done"))
        .expect("cmp05's patch in the audit log");
    assert_eq!(patch.exit_code, Some(0));
    assert!(
        patch.output_tail.contains("FakePatch: 1 upgraded"),
        "{patch:?}"
    );
    assert_eq!(audit.last().map(|e| e.event.as_str()), Some("completed"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_pauses_at_the_budget_and_resume_goes_on() {
    init();
    let fleet = Fleet::start(FLEET).await;
    fleet.node("cmp03").fail_patch(true);
    // cmp01 and cmp02 start with cmp03 and are still patching when its
    // failure pauses the campaign: the passes that take them to the end
    // are passes over a paused campaign.
    for node in ["cmp01", "cmp02"] {
        fleet.node(node).slow_patch(3.0);
    }
    let spec = r#"
name = "budget"
select = { roles = ["compute"] }
concurrency = { compute = 3 }
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let paused = fleet
        .wait_for(&id, "the campaign to pause", LONG, |v| {
            v.campaign.phase == Phase::Paused && v.nodes.iter().all(|n| !n.step.is_active())
        })
        .await;
    assert!(
        paused.campaign.reason.contains("error budget"),
        "{}",
        paused.campaign.reason
    );
    assert_eq!(step_of(&paused, "cmp03"), Step::Failed);
    let note = &paused
        .nodes
        .iter()
        .find(|n| n.node == "cmp03")
        .expect("cmp03")
        .note;
    assert!(
        note.contains("exit code 100") && note.contains("told to fail"),
        "{note}"
    );
    // Barrier: the scheduler moved cmp01 and cmp02 on after the pause, so
    // it looked at the paused campaign; it started nothing there.
    let audit = fleet.audit(&id).await;
    let pause = audit
        .iter()
        .position(|e| e.event == "paused")
        .expect("the pause is in the audit log");
    let moved: Vec<&str> = audit[pause + 1..].iter().map(|e| e.node.as_str()).collect();
    assert!(
        moved.contains(&"cmp01") && moved.contains(&"cmp02"),
        "cmp01 and cmp02 were in flight at the pause: {audit:#?}"
    );
    assert!(
        moved
            .iter()
            .all(|n| ["cmp01", "cmp02", "cmp03"].contains(n)),
        "only the nodes in flight moved after the pause: {moved:?}"
    );
    // The nodes after cmp03 wait, never patched.
    let pending: Vec<&str> = paused
        .nodes
        .iter()
        .filter(|n| n.step == Step::Pending)
        .map(|n| n.node.as_str())
        .collect();
    assert_eq!(pending.len(), 9, "{pending:?}");
    for node in pending {
        assert_eq!(
            fleet.node(node).patch_runs(),
            0,
            "a paused campaign starts nothing: {node}"
        );
    }

    // Resume, retrying the failed node once the cause is fixed.
    fleet.node("cmp03").fail_patch(false);
    let mut client = fleet.campaigns().await;
    let resumed = client
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            reason: "fixed the mirror".into(),
            retry_failed: true,
        })
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(resumed.phase(), v1::Phase::Running);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed);
    assert!(done.nodes.iter().all(|n| n.step == Step::Done), "{done:#?}");
    let cmp03 = done
        .nodes
        .iter()
        .find(|n| n.node == "cmp03")
        .expect("cmp03");
    assert_eq!(cmp03.attempt, 2);
    // One failed run and one good one, under different action ids.
    assert_eq!(fleet.node("cmp03").patch_runs(), 2);
    assert_eq!(fleet.node("cmp03").reboots(), 1);

    // Pausing and resuming a finished campaign is refused, and says why.
    let err = client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("a completed campaign cannot pause");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let audit = fleet.audit(&id).await;
    assert!(audit.iter().any(|e| e.event == "resumed"
        && e.actor == "operator:test-operator"
        && e.detail.contains("retrying cmp03")
        && e.detail.contains("fixed the mirror")));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_campaign_resumes_without_repeating_a_step() {
    init();
    let mut fleet = Fleet::start(FLEET).await;
    let spec = r#"
name = "restart"
concurrency = { compute = 3, storage = 2 }
[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
run_on = "controller"
"#;
    for node in fleet.nodes.values() {
        node.slow_patch(0.5);
    }
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    // Restart the server while patches run, then again later.
    for round in 0..3 {
        fleet
            .wait_for(&id, "a node patching", LONG, |v| {
                v.nodes.iter().filter(|n| n.step == Step::Done).count() >= round * 4
                    && v.nodes.iter().any(|n| n.step == Step::Patch)
            })
            .await;
        fleet.server.restart().await;
    }
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    for n in &done.nodes {
        assert_eq!(n.step, Step::Done, "{}: {}", n.node, n.note);
        let node = fleet.node(&n.node);
        assert_eq!(
            (node.patch_runs(), node.reboots()),
            (1, 1),
            "{} patched and rebooted once",
            n.node
        );
    }
    let drains: usize = ["ctl01", "ctl02", "ctl03"]
        .iter()
        .map(|c| {
            fleet
                .node(c)
                .hooks()
                .iter()
                .filter(|h| h.starts_with("nova-drain"))
                .count()
        })
        .sum();
    assert_eq!(drains, 12, "each compute node drained exactly once");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_returns_fails_at_its_timeout_and_the_budget_decides() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 4), (Role::Controller, 1)]).await;
    fleet.node("cmp02").never_return();
    let spec = r#"
name = "lost node"
select = { roles = ["compute"] }
concurrency = { compute = 1 }
error_budget = 1
timeouts = { return_secs = 3 }
"#;
    let c = fleet.start_campaign(spec).await;
    let done = fleet.wait_ended(&c.campaign.id, LONG).await;
    // One failure is within the budget: the campaign goes on and completes.
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    let cmp02 = done
        .nodes
        .iter()
        .find(|n| n.node == "cmp02")
        .expect("cmp02");
    assert_eq!(cmp02.step, Step::Failed);
    assert!(
        cmp02.note.contains("wait-return did not finish within 3s"),
        "{}",
        cmp02.note
    );
    for n in ["cmp01", "cmp03", "cmp04"] {
        assert_eq!(step_of(&done, n), Step::Done, "{n}");
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_holds_every_step_and_cancel_lets_nodes_in_flight_finish() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 6), (Role::Controller, 1)]).await;
    for node in fleet.nodes.values() {
        node.slow_patch(1.0);
    }
    let spec = r#"
name = "hold"
select = { roles = ["compute"] }
concurrency = { compute = 2 }
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "a node patching", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.step == Step::Patch && !n.action_id.is_empty())
        })
        .await;
    let mut client = fleet.campaigns().await;
    let paused = client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "db alarm".into(),
        })
        .await
        .expect("pause")
        .into_inner();
    assert!(
        paused.held && paused.phase() == v1::Phase::Paused,
        "{paused:?}"
    );
    let held = fleet.status(&id).await;
    let patching: Vec<&NodeRun> = held
        .nodes
        .iter()
        .filter(|n| n.step == Step::Patch && !n.action_id.is_empty())
        .collect();
    assert!(!patching.is_empty(), "{held:#?}");
    // The patches that were running finish on their nodes, and the server
    // has what would move them on: each result, and a reboot check newer
    // than it...
    let ledger = &fleet.server.server.as_ref().expect("running").fleet;
    for run in &patching {
        let result = eventually(LONG, &format!("{}'s patch result", run.node), || async {
            let result = ledger.action(&run.action_id).await.expect("fleet");
            result.filter(|r| r.state.is_final())
        })
        .await;
        let finished = result.finished_at.expect("a final result has an end");
        fleet
            .server
            .wait_node(&run.node, "checked for a reboot after its patch", |d| {
                d.report
                    .as_ref()
                    .and_then(|r| r.reboot.as_ref())
                    .and_then(|r| r.checked_at)
                    .is_some_and(|checked| checked >= finished)
            })
            .await;
    }
    // ...and the scheduler makes a pass after every operator call, refused
    // ones too, before it answers the next: the status read after this one
    // is the state after a pass that had all of it.
    let again = client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "twice".into(),
        })
        .await
        .expect_err("a paused campaign cannot be paused again");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let still = fleet.status(&id).await;
    let steps = |v: &CampaignView| {
        v.nodes
            .iter()
            .map(|n| (n.node.clone(), n.step))
            .collect::<Vec<_>>()
    };
    assert_eq!(steps(&held), steps(&still), "no step moves while held");

    // Cancel: pending nodes are skipped, the ones in flight finish.
    let cancelled = client
        .cancel_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "window over".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.phase(), v1::Phase::Cancelled);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Cancelled);
    let count = |s| done.nodes.iter().filter(|n| n.step == s).count();
    assert_eq!(
        (count(Step::Done), count(Step::Skipped)),
        (2, 4),
        "{done:#?}"
    );
    for n in done.nodes.iter().filter(|n| n.step == Step::Skipped) {
        assert_eq!(
            fleet.node(&n.node).patch_runs(),
            0,
            "{} never patched",
            n.node
        );
    }
    // Nothing moved between the pause and the cancel.
    let audit = fleet.audit(&id).await;
    let event = |name: &str| {
        audit
            .iter()
            .position(|e| e.event == name)
            .unwrap_or_else(|| panic!("no {name} in the audit log: {audit:#?}"))
    };
    let moved: Vec<_> = audit[event("paused") + 1..event("cancelled")]
        .iter()
        .filter(|e| !e.node.is_empty())
        .collect();
    assert!(moved.is_empty(), "moved while held: {moved:#?}");
    let err = client
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a cancelled campaign cannot resume");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    fleet.stop().await;
}

/// A patch that leaves the node's reboot state as it was (nothing in it
/// needs a reboot, or a reboot was asked for before it) still gets its
/// answer at once: the agent sends the check it ran after the patch even
/// though the outcome did not change. It used to go only with the agent's
/// next full report (30 s here, minutes with the shipped defaults), and the
/// node sat in "waiting for a reboot check after the patch" until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_leaves_the_reboot_state_unchanged_moves_on_without_a_full_report() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 2), (Role::Controller, 1)]).await;
    fleet.node("cmp01").patch_needs_no_reboot();
    fleet.node("cmp02").ask_for_reboot();
    // The server must know cmp02 asks for a reboot before the patch, or its
    // post-patch check would be a changed outcome and go out anyway.
    fleet
        .server
        .wait_node("cmp02", "asking for a reboot", |d| {
            d.report.as_ref().is_some_and(|r| r.reboot_required())
        })
        .await;
    let spec = r#"
name = "no news"
select = { roles = ["compute"] }
concurrency = { compute = 2 }
reboot = "if-required"
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let done = ended_within(&fleet, &id, Duration::from_secs(10)).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    for n in &done.nodes {
        assert_eq!(n.step, Step::Done, "{}: {}", n.node, n.note);
    }
    // Nothing asked cmp01 for a reboot; cmp02 still did after its patch.
    assert_eq!(
        (
            fleet.node("cmp01").patch_runs(),
            fleet.node("cmp01").reboots()
        ),
        (1, 0)
    );
    assert_eq!(
        (
            fleet.node("cmp02").patch_runs(),
            fleet.node("cmp02").reboots()
        ),
        (1, 1)
    );
    fleet.stop().await;
}

/// After the reboot, the agent's first report goes out before its first
/// reboot check has finished (a slow `needs-restarting` or sentinel): the
/// check that follows a moment later is news and goes out at once, though
/// it found what the never-checked section already said (no reboot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_reboot_check_after_the_boot_that_ends_late_still_goes_out_at_once() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 1), (Role::Controller, 1)]).await;
    fleet.node("cmp01").slow_reboot_check(1.5);
    let spec = r#"
name = "slow check"
select = { roles = ["compute"] }
reboot = "if-required"
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "cmp01 back from its reboot", LONG, |v| {
            step_of(v, "cmp01") == Step::Postcheck
        })
        .await;
    let done = ended_within(&fleet, &id, Duration::from_secs(8)).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    assert_eq!(step_of(&done, "cmp01"), Step::Done);
    assert_eq!(fleet.node("cmp01").reboots(), 1);
    fleet.stop().await;
}

fn run_of<'a>(v: &'a CampaignView, node: &str) -> &'a rollcall_server::campaign::record::NodeRun {
    v.nodes
        .iter()
        .find(|n| n.node == node)
        .unwrap_or_else(|| panic!("{node} is not in the campaign"))
}

const COMPUTE_HOOKS: &str = r#"
[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
run_on = "controller"
"#;

/// A compute node whose patch fails after its drain ran stays drained
/// (nova-compute disabled, in a real cloud). Status and the audit log say
/// so, with the hook that undoes it, and `campaign undrain` runs that hook
/// on the controller, once through the RPC and once through the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_after_its_drain_is_left_drained_until_an_operator_undrains_it() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 3), (Role::Controller, 1)]).await;
    fleet.node("cmp02").fail_patch(true);
    fleet.node("cmp03").fail_patch(true);
    let spec = format!(
        "name = \"left drained\"\nselect = {{ roles = [\"compute\"] }}\nerror_budget = 1\n{COMPUTE_HOOKS}"
    );
    let c = fleet.start_campaign(&spec).await;
    let id = c.campaign.id.clone();
    let mut events = fleet
        .campaigns()
        .await
        .watch_campaign(v1::CampaignRef { id: id.clone() })
        .await
        .expect("watch")
        .into_inner();
    let paused = fleet
        .wait_for(&id, "the campaign to pause at its budget", LONG, |v| {
            v.campaign.phase == Phase::Paused && v.nodes.iter().all(|n| !n.step.is_active())
        })
        .await;
    // Watchers hear it with the failure.
    let failed_event = tokio::time::timeout(LONG, async {
        while let Some(e) = events.message().await.expect("event") {
            if e.node == "cmp02" && e.step() == v1::Step::Failed {
                return e.message;
            }
        }
        panic!("the watch ended before cmp02 failed")
    })
    .await
    .expect("cmp02's failure is watched");
    assert!(
        failed_event.contains("left drained: run hook nova-undrain to undo"),
        "{failed_event}"
    );
    // So does `fleet status`, which knows nothing of campaigns otherwise.
    let out = fleet.cli(&["fleet", "status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Left drained: cmp02 (campaign {id}), cmp03 (campaign {id})"
        )),
        "{text}"
    );
    let ctl = fleet.node("ctl01");
    for node in ["cmp02", "cmp03"] {
        let run = run_of(&paused, node);
        assert_eq!(run.step, Step::Failed);
        assert_eq!(run.left_drained.as_deref(), Some("nova-undrain"), "{node}");
        assert!(ctl.hooks().contains(&format!("nova-drain {node}")));
        assert!(!ctl.hooks().contains(&format!("nova-undrain {node}")));
    }
    assert_eq!(run_of(&paused, "cmp01").left_drained, None);
    let audit = fleet.audit(&id).await;
    let failure = audit
        .iter()
        .find(|e| e.node == "cmp02" && e.event == "failed")
        .expect("cmp02's failure in the audit log");
    assert!(
        failure.detail.ends_with(&format!(
            "; left drained: run hook nova-undrain to undo, or `campaign undrain {id} cmp02`"
        )),
        "{}",
        failure.detail
    );

    // Refused for a node that is not failed, and for an unknown campaign.
    let mut client = fleet.campaigns().await;
    let undrain = |node: &str| v1::UndrainRequest {
        campaign_id: id.clone(),
        node: node.into(),
        reason: "tenant needs the capacity".into(),
    };
    let err = client
        .undrain(undrain("cmp01"))
        .await
        .expect_err("cmp01 is done");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not failed"), "{}", err.message());
    let err = client
        .undrain(v1::UndrainRequest {
            campaign_id: "20000101-000000-9".into(),
            ..undrain("cmp02")
        })
        .await
        .expect_err("no such campaign");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // Through the RPC: the hook runs on the controller for cmp02.
    let asked = client.undrain(undrain("cmp02")).await.expect("undrain");
    let asked = rollcall_server::campaign::wire::view_from_wire(asked.into_inner()).expect("view");
    let u = run_of(&asked, "cmp02")
        .undrain
        .clone()
        .expect("an undrain runs");
    assert_eq!(
        (u.action_node.as_str(), u.action_id.as_str()),
        ("ctl01", format!("{id}.cmp02.1.undrain-1").as_str())
    );
    let undone = fleet
        .wait_for(&id, "cmp02 no longer left drained", LONG, |v| {
            run_of(v, "cmp02").left_drained.is_none()
        })
        .await;
    assert_eq!(
        run_of(&undone, "cmp02").step,
        Step::Failed,
        "it stays failed"
    );
    assert!(run_of(&undone, "cmp02").undrain.is_none());
    assert!(ctl.hooks().contains(&"nova-undrain cmp02".to_owned()));
    let err = client
        .undrain(undrain("cmp02"))
        .await
        .expect_err("nothing left to undo");
    assert!(
        err.message().contains("not left drained"),
        "{}",
        err.message()
    );

    // Through the CLI: status says it, undrain runs it.
    let out = fleet.cli(&["campaign", "status", &id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "left drained: cmp03: run hook nova-undrain to undo, or `campaign undrain {id} cmp03`"
        )) && !text.contains("left drained: cmp02"),
        "{text}"
    );
    let out = fleet
        .cli(&[
            "campaign",
            "undrain",
            &id,
            "cmp03",
            "--reason",
            "checked by hand",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hook nova-undrain asked of ctl01"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fleet
        .wait_for(&id, "cmp03 no longer left drained", LONG, |v| {
            run_of(v, "cmp03").left_drained.is_none()
        })
        .await;
    assert!(ctl.hooks().contains(&"nova-undrain cmp03".to_owned()));
    let audit = fleet.audit(&id).await;
    for node in ["cmp02", "cmp03"] {
        let events: Vec<&str> = audit
            .iter()
            .filter(|e| e.node == node && e.event.starts_with("undrain"))
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(events, ["undrain", "undrained"], "{node}");
    }
    assert!(audit.iter().any(|e| e.node == "cmp03"
        && e.event == "undrain"
        && e.actor == "operator:test-operator"
        && e.detail.contains("checked by hand")));
    fleet.stop().await;
}

/// With `undrain_on_failure`, the undrain runs by itself after the failure
/// and the node ends failed with its patch's reason, not left drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrain_on_failure_undrains_a_failed_node_by_itself() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 2), (Role::Controller, 1)]).await;
    fleet.node("cmp01").fail_patch(true);
    let spec = format!(
        "name = \"undrain on failure\"\nselect = {{ roles = [\"compute\"] }}\nundrain_on_failure = true\n{COMPUTE_HOOKS}"
    );
    let c = fleet.start_campaign(&spec).await;
    let id = c.campaign.id.clone();
    let paused = fleet
        .wait_for(&id, "the campaign to pause at its budget", LONG, |v| {
            v.campaign.phase == Phase::Paused && v.nodes.iter().all(|n| !n.step.is_active())
        })
        .await;
    let cmp01 = run_of(&paused, "cmp01");
    assert_eq!(cmp01.step, Step::Failed);
    assert!(cmp01.note.contains("told to fail"), "{}", cmp01.note);
    assert_eq!(cmp01.left_drained, None);
    assert_eq!(
        fleet.node("ctl01").hooks(),
        ["nova-drain cmp01", "nova-undrain cmp01"]
    );
    let audit = fleet.audit(&id).await;
    let failed: Vec<&str> = audit
        .iter()
        .filter(|e| e.node == "cmp01" && e.event == "failed")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].contains("undrain_on_failure"), "{}", failed[0]);
    assert!(
        failed[1].starts_with("undrain done, the node ends failed: patch on cmp01 failed"),
        "{}",
        failed[1]
    );
    fleet.stop().await;
}

/// A controller that never comes back fails at its return timeout; the
/// next controller's quorum guard could never be met, so the campaign
/// pauses and names it. It used to stay running, waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_never_returns_pauses_the_campaign_instead_of_an_endless_wait() {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 3)]).await;
    fleet.node("ctl01").never_return();
    let spec = r#"
name = "lost controller"
error_budget = 1
timeouts = { return_secs = 3 }
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let paused = fleet
        .wait_for(&id, "the campaign to pause", Duration::from_secs(30), |v| {
            v.campaign.phase == Phase::Paused
        })
        .await;
    assert_eq!(
        paused.campaign.reason,
        "controller quorum guard cannot be met: ctl01 failed in this campaign and is offline or unhealthy"
    );
    let ctl01 = run_of(&paused, "ctl01");
    assert_eq!(ctl01.step, Step::Failed);
    assert!(
        ctl01.note.contains("wait-return did not finish within 3s"),
        "{}",
        ctl01.note
    );
    for n in ["ctl02", "ctl03"] {
        assert_eq!(step_of(&paused, n), Step::Pending, "{n}");
        assert_eq!(fleet.node(n).patch_runs(), 0, "{n} untouched");
    }
    fleet.stop().await;
}

/// A quorum guard that waits on a controller outside the campaign waits
/// at most `guard_secs`, then pauses the campaign with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_wait_longer_than_guard_secs_pauses_the_campaign() {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 3)]).await;
    fleet.power_off("ctl03").await;
    let spec = r#"
name = "guarded"
select = { nodes = ["ctl01", "ctl02"] }
timeouts = { guard_secs = 2 }
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let waiting = fleet
        .wait_for(&id, "the guard to wait", LONG, |v| !v.waiting.is_empty())
        .await;
    assert_eq!(waiting.campaign.phase, Phase::Running);
    assert_eq!(
        waiting.waiting,
        "controller quorum guard: ctl03 is offline or unhealthy"
    );
    let paused = fleet
        .wait_for(&id, "the campaign to pause", Duration::from_secs(20), |v| {
            v.campaign.phase == Phase::Paused
        })
        .await;
    assert_eq!(
        paused.campaign.reason,
        "controller quorum guard: ctl03 is offline or unhealthy, for more than guard_secs (2s)"
    );
    let waited = paused.campaign.updated_at.since(c.campaign.created_at);
    assert!(waited >= Duration::from_secs(2), "paused after {waited:?}");
    assert!(paused.nodes.iter().all(|n| n.step == Step::Pending));
    fleet.stop().await;
}
