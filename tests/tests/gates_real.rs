//! The controller gates of packaging/gates/ (`galera-synced`,
//! `rabbitmq-healthy`) against real clusters: three Debian bookworm node
//! containers of the cluster image (scripts/build-cluster-image.sh), each
//! running Debian's MariaDB with Galera and Debian's RabbitMQ, clustered
//! three ways by tests/src/clusters.rs. Nothing here is a fake: the gates
//! ask the real `mysql` client and the real `rabbitmq-diagnostics`.
//!
//! The gate scripts come from the agent .deb (scripts/package.sh) when it
//! ships them, installed with dpkg as on a real controller; otherwise from
//! the workspace's packaging/gates, copied to the same path. The log says
//! which.
//!
//! One test function runs the scenarios in order on one lab: forming the
//! clusters takes most of a minute, and nextest runs each test function in
//! a process of its own, so a lab could not be shared between functions.
//! Gates run as the agent runs them with `run_on = "self"`: on the node,
//! with the node's own name as TARGET.
//!
//! Last, on the same clusters, a real campaign: the server .deb on a fourth
//! node `ops1` (the plain node image), the agent .deb on the three
//! controllers with both gates as hooks, the operator's CLI on ops1. With
//! ctl3's MariaDB stopped the campaign waits at ctl1's before gate, every
//! try in the audit, nothing patched; once ctl3 is back it goes through
//! the three controllers, each between a passing before and after gate.
//! Per-try timings of the scripts are `rollcall-bench-gates`' (BENCHMARKS.md).

use std::time::{Duration, Instant};

use rollcall_proto::timestamp::Timestamp;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::{AuditEntry, Phase};
use rollcall_tests::clusters::{self, Galera, GateRun, Gates, JOIN_TIMEOUT, Rabbit};
use rollcall_tests::nodes::{self, NodeLab};
use rollcall_tests::ops::{self, Kit, Ops, Status};
use rollcall_tests::{TempDir, in_ci};

const MEMBERS: [&str; 3] = ["ctl1", "ctl2", "ctl3"];
/// The member taken down and brought back.
const DOWN: &str = "ctl3";
/// The members that stay up.
const UP: [&str; 2] = ["ctl1", "ctl2"];
const GALERA: &str = "galera-synced";
const RABBIT: &str = "rabbitmq-healthy";
/// Tries per timed gate call: enough to see a try's cost here; the
/// per-try timings over more tries are `rollcall-bench-gates`'.
const TRIES: usize = 2;
/// The node that runs the server.
const OPS: &str = "ops1";
/// Both gates before and after each controller, retried every 2 s.
const SPEC: &str = r#"
name = "gated controllers"
role_order = ["controller"]
reboot = "never"
skip_up_to_date = false

[select]
roles = ["controller"]

[gates.controller]
before = ["galera-synced", "rabbitmq-healthy"]
after = ["galera-synced", "rabbitmq-healthy"]
run_on = "self"
interval_secs = 2
"#;
/// What galera-synced says while ctl3's MariaDB is stopped.
const SIZE_2: &str = "wsrep_cluster_size is 2, want at least 3";
/// For each fact the campaign is waited on; generous for a loaded machine.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(300);

/// The agent's gate hooks on a controller, as packaging/agent.toml shows.
fn agent_toml() -> String {
    let galera = format!("{}/{GALERA}", clusters::GATES_DIR);
    let rabbit = format!("{}/{RABBIT}", clusters::GATES_DIR);
    ops::controller_agent_toml(
        OPS,
        &[
            (GALERA, &[galera.as_str(), "--min-size", "3"]),
            (RABBIT, &[rabbit.as_str(), "--nodes", "3"]),
        ],
    )
}

/// The gates' source and the packages, or a loud skip outside CI (a
/// failure in CI).
fn ready() -> Option<(Gates, Kit)> {
    let mut missing = Vec::new();
    if !nodes::docker_available() {
        missing.push("a Docker engine".to_owned());
    } else if !clusters::cluster_image_available() {
        missing.push(format!(
            "image {} (scripts/build-node-image.sh, then scripts/build-cluster-image.sh)",
            clusters::CLUSTER_IMAGE
        ));
    }
    let gates = Gates::find(&[GALERA, RABBIT]);
    if gates.is_none() {
        missing.push(format!(
            "{GALERA} and {RABBIT}: in neither target/debian/rollcall-agent_*.deb nor packaging/gates/"
        ));
    }
    let kit = Kit::find().map_err(|m| missing.extend(m)).ok();
    match (gates, kit) {
        (Some(gates), Some(kit)) if missing.is_empty() => Some((gates, kit)),
        _ => {
            assert!(
                !in_ci(),
                "CI is set but the real Galera and RabbitMQ suite cannot run; missing: {}",
                missing.join(", ")
            );
            eprintln!("SKIPPED: missing {}", missing.join(", "));
            None
        }
    }
}

struct Suite {
    lab: NodeLab,
    t0: Instant,
}

impl Suite {
    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.t0.elapsed().as_secs_f32());
    }

    fn gate(&self, node: &str, script: &str, args: &[&str]) -> GateRun {
        clusters::run_gate(&self.lab, node, script, args)
    }

    fn pass(&self, node: &str, script: &str, args: &[&str], reason: &str) -> GateRun {
        let run = self.gate(node, script, args);
        assert!(
            run.code == 0 && run.last_line().contains(reason),
            "{script} {args:?} on {node}: want a pass saying {reason:?}, got {run}"
        );
        run
    }

    fn fail(&self, node: &str, script: &str, args: &[&str], reason: &str) -> GateRun {
        let run = self.gate(node, script, args);
        assert!(
            run.code == 1 && run.last_line().contains(reason),
            "{script} {args:?} on {node}: want exit 1 saying {reason:?}, got {run}"
        );
        self.log(&format!(
            "{script} {} on {node}: exit 1, {:?}",
            args.join(" "),
            run.last_line()
        ));
        run
    }

    /// `TRIES` passing tries in a row; prints their wall times.
    fn time(&self, node: &str, script: &str, args: &[&str]) {
        let mut took: Vec<Duration> = (0..TRIES)
            .map(|_| self.pass(node, script, args, "").took)
            .collect();
        took.sort();
        let mean = took.iter().sum::<Duration>() / u32::try_from(TRIES).expect("few tries");
        self.log(&format!(
            "TIMING {script} {}: {TRIES} tries, min {:.2}s median {:.2}s mean {:.2}s max {:.2}s",
            args.join(" "),
            took[0].as_secs_f32(),
            took[TRIES / 2].as_secs_f32(),
            mean.as_secs_f32(),
            took[TRIES - 1].as_secs_f32()
        ));
    }

    /// Retries the gate every second, as a campaign's `after` gate does,
    /// until it passes; how long that took and the distinct reasons it
    /// gave on the way.
    fn until_pass(&self, node: &str, script: &str, args: &[&str]) -> (Duration, Vec<String>) {
        let started = Instant::now();
        let mut reasons: Vec<String> = Vec::new();
        loop {
            let run = self.gate(node, script, args);
            if run.code == 0 {
                return (started.elapsed(), reasons);
            }
            assert_eq!(run.code, 1, "{script} {args:?} on {node}: {run}");
            let reason = run.last_line().to_owned();
            if reasons.last() != Some(&reason) {
                reasons.push(reason);
            }
            assert!(
                started.elapsed() < JOIN_TIMEOUT,
                "{script} {args:?} on {node} still failing after {JOIN_TIMEOUT:?}: {run}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
fn galera_synced_and_rabbitmq_healthy_judge_real_three_node_clusters() {
    let Some((gates, kit)) = ready() else { return };
    let t0 = Instant::now();
    let mut lab = NodeLab::new("gates");
    clusters::start_nodes(&mut lab, &MEMBERS, &[]);
    // The server's node: the plain node image, no clusters.
    lab.start(OPS, &[]);
    lab.wait_systemd(OPS);
    let suite = Suite { lab, t0 };
    suite.log("three cluster nodes and the ops node booted");
    for node in MEMBERS {
        gates.install(&suite.lab, node);
    }
    suite.log(&format!("gate scripts installed from {}", gates.describe()));
    // The certificates, made on the host as an operator makes them.
    let pki = TempDir::new("gates-real-pki");
    nodes::make_pki(&kit.server_bin, pki.path(), OPS, MEMBERS, ops::OPERATOR);

    // Both clusters at once, as on a kolla controller; the server and the
    // agents go on meanwhile (dpkg and a few config files: light).
    let (galera, rabbit, ops) = std::thread::scope(|s| {
        let galera = s.spawn(|| Galera::start(&suite.lab, &MEMBERS));
        let rabbit = s.spawn(|| Rabbit::start(&suite.lab, &MEMBERS));
        let ops = s.spawn(|| install_rollcall(&suite.lab, &kit, pki.path()));
        (join(galera), join(rabbit), join(ops))
    });
    suite.log(&format!(
        "TIMING clusters formed: Galera in {:.1}s, RabbitMQ in {:.1}s (side by side, \
         rollcall installed meanwhile)",
        galera.started_in().as_secs_f32(),
        rabbit.started_in().as_secs_f32()
    ));

    galera_scenarios(&suite, &galera);
    rabbit_scenarios(&suite, &rabbit);
    suite.log("gate scenarios done");
    campaign_scenario(&suite, &galera, ops);
    suite.log("done");
}

/// A scoped thread's result, its panic passed on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The server on [`OPS`], the agent with both gates on every member.
fn install_rollcall(lab: &NodeLab, kit: &Kit, pki: &std::path::Path) -> Ops {
    let ops = Ops::install(lab, OPS, kit, pki);
    let toml = agent_toml();
    for node in MEMBERS {
        lab.install_agent(node, &kit.agent_deb, pki, &toml);
        lab.sh(node, "systemctl enable --now rollcall-agent");
    }
    ops
}

fn galera_scenarios(suite: &Suite, galera: &Galera) {
    // A healthy cluster: both phases pass on every member.
    for node in MEMBERS {
        for phase in ["before", "after"] {
            suite.pass(
                node,
                GALERA,
                &["--min-size", "3", phase, node],
                "cluster size 3",
            );
        }
    }
    suite.log("galera-synced passes before and after on all three members");
    suite.time("ctl1", GALERA, &["--min-size", "3", "before", "ctl1"]);

    let took = galera.stop_member(DOWN);
    suite.log(&format!(
        "Galera member {DOWN} stopped, the others Primary at size 2, in {:.1}s",
        took.as_secs_f32()
    ));
    for node in UP {
        for phase in ["before", "after"] {
            suite.fail(
                node,
                GALERA,
                &["--min-size", "3", phase, node],
                "wsrep_cluster_size is 2, want at least 3",
            );
        }
    }
    // The size alone failed it: the rest of the member's state is healthy.
    suite.pass(
        "ctl1",
        GALERA,
        &["--min-size", "2", "after", "ctl1"],
        "cluster size 2",
    );
    for phase in ["before", "after"] {
        suite.fail(
            DOWN,
            GALERA,
            &["--min-size", "3", phase, DOWN],
            "cannot query MariaDB",
        );
    }

    // The rejoin, watched through the gate as a campaign's `after` gate
    // watches it, on the returning member itself.
    galera.start_member_no_wait(DOWN);
    let (took, reasons) = suite.until_pass(DOWN, GALERA, &["--min-size", "3", "after", DOWN]);
    suite.log(&format!(
        "TIMING Galera rejoin: galera-synced after {DOWN} passed on {DOWN} {:.1}s after \
         `systemctl start mariadb`; on the way: {reasons:?}",
        took.as_secs_f32()
    ));
    galera.wait_whole(&MEMBERS, 3, JOIN_TIMEOUT);
    for node in MEMBERS {
        suite.pass(
            node,
            GALERA,
            &["--min-size", "3", "before", node],
            "cluster size 3",
        );
    }
    suite.log("galera-synced passes on all three members again");
}

fn rabbit_scenarios(suite: &Suite, rabbit: &Rabbit) {
    for node in MEMBERS {
        suite.pass(
            node,
            RABBIT,
            &["--nodes", "3", "before", node],
            "3 nodes running (want at least 3), not quorum-critical",
        );
        suite.pass(
            node,
            RABBIT,
            &["--nodes", "3", "after", node],
            "3 nodes running (want at least 3)",
        );
    }
    suite.log("rabbitmq-healthy passes before and after on all three nodes");
    suite.time("ctl1", RABBIT, &["--nodes", "3", "before", "ctl1"]);
    suite.time("ctl1", RABBIT, &["--nodes", "3", "after", "ctl1"]);

    // A quorum queue with a replica on each node: with all three up, no
    // node is critical to it.
    let replicas = rabbit.declare_quorum_queue("ctl1", "rollcall-gate-quorum");
    assert_eq!(
        replicas,
        MEMBERS.map(Rabbit::node),
        "one replica on each node"
    );
    suite.pass(
        "ctl1",
        RABBIT,
        &["--nodes", "3", "before", "ctl1"],
        "not quorum-critical",
    );

    let took = rabbit.stop_member(DOWN);
    suite.log(&format!(
        "RabbitMQ node {DOWN} stopped, the others see two running, in {:.1}s",
        took.as_secs_f32()
    ));
    for node in UP {
        for phase in ["before", "after"] {
            suite.fail(
                node,
                RABBIT,
                &["--nodes", "3", phase, node],
                "not running: rabbit@ctl3 (2 of 3 cluster members running)",
            );
        }
    }
    for phase in ["before", "after"] {
        suite.fail(
            DOWN,
            RABBIT,
            &["--nodes", "3", phase, DOWN],
            "RabbitMQ is not running here",
        );
    }
    // The quorum check alone: with only ctl1 and ctl2 expected, the cluster
    // check passes, and taking ctl1 down now would cost the queue its
    // quorum (2 of 3 replicas left): `before` refuses, `after` does not ask.
    let expect = "rabbit@ctl1,rabbit@ctl2";
    suite.fail(
        "ctl1",
        RABBIT,
        &["--expect", expect, "before", "ctl1"],
        "quorum critical: queue 'rollcall-gate-quorum' in vhost '/' would lose quorum",
    );
    suite.pass(
        "ctl1",
        RABBIT,
        &["--expect", expect, "after", "ctl1"],
        "all 2 expected nodes running",
    );

    rabbit.start_member_no_wait(DOWN);
    let (took, reasons) = suite.until_pass(DOWN, RABBIT, &["--nodes", "3", "after", DOWN]);
    suite.log(&format!(
        "TIMING RabbitMQ rejoin: rabbitmq-healthy after {DOWN} passed on {DOWN} {:.1}s after \
         `systemctl start rabbitmq-server`; on the way: {reasons:?}",
        took.as_secs_f32()
    ));
    rabbit.wait_running(&MEMBERS, &MEMBERS, JOIN_TIMEOUT);
    // The queue's replica on ctl3 catches up, and then no node is critical.
    for node in MEMBERS {
        let (took, reasons) = suite.until_pass(node, RABBIT, &["--nodes", "3", "before", node]);
        suite.log(&format!(
            "rabbitmq-healthy before {node} passes again after {:.1}s more; on the way: {reasons:?}",
            took.as_secs_f32()
        ));
    }
}

impl Suite {
    /// Polls `probe` every 500 ms until it says `Ok`; panics after
    /// `timeout` with what it last said and the journals.
    fn wait<T>(
        &self,
        ops: &Ops,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        loop {
            match probe() {
                Ok(v) => {
                    self.log(&format!(
                        "{what} (after {:.1}s)",
                        started.elapsed().as_secs_f32()
                    ));
                    return v;
                }
                Err(last) => assert!(
                    started.elapsed() < timeout,
                    "timed out after {timeout:?} waiting for {what}: {last}\n{}",
                    self.journals(ops)
                ),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn journals(&self, ops: &Ops) -> String {
        let mut out = ops.journal(&self.lab, 40);
        for node in MEMBERS {
            out.push('\n');
            out.push_str(&ops::agent_journal(&self.lab, node, 20));
        }
        out
    }
}

/// A patch asked of any node, from the audit (`patch asked of NODE (ID)`).
fn patches_asked(audit: &[AuditEntry]) -> Vec<&AuditEntry> {
    audit
        .iter()
        .filter(|e| e.event == "action" && e.detail.starts_with("patch asked of "))
        .collect()
}

/// ctl1 held at its before gate by ctl3's stopped MariaDB, as status and
/// the audit show it, or what is not there yet.
fn held_at_the_gate(status: &Status, audit: &[AuditEntry]) -> Result<usize, String> {
    let ctl1 = status.run("ctl1").ok_or("ctl1 is not in the campaign")?;
    let note_ok = ctl1.step == Step::GateBefore
        && ctl1
            .note
            .contains(&format!("{GALERA} on ctl1 failed (exit code 1)"))
        && ctl1.note.contains(SIZE_2);
    let waiting_ok = status
        .waiting
        .contains(&format!("ctl1 at its before gate: {GALERA}"))
        && status.waiting.contains(SIZE_2);
    let tries: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| {
            e.event == "gate"
                && e.node == "ctl1"
                && e.detail.starts_with(&format!(
                    "before gate: {GALERA} on ctl1 failed (exit code 1): "
                ))
                && e.exit_code == Some(1)
        })
        .collect();
    // The first failed try's output is audited whole; a try that failed the
    // same way after it says so instead of repeating it.
    let told = tries
        .first()
        .is_some_and(|e| e.output_tail.contains(SIZE_2))
        && tries[1..].iter().all(|e| {
            e.output_tail.contains(SIZE_2)
                || (e.output_tail.is_empty()
                    && e.detail.ends_with("(the same output as the try before)"))
        });
    let failed = tries.len();
    if note_ok && waiting_ok && told && failed >= 2 {
        Ok(failed)
    } else {
        Err(format!(
            "ctl1 {} note {:?}; waiting {:?}; {failed} failed tries audited",
            ctl1.step, ctl1.note, status.waiting
        ))
    }
}

/// A real campaign over the three controllers, held at ctl1's before gate
/// while ctl3's MariaDB is stopped, through once it is back.
fn campaign_scenario(suite: &Suite, galera: &Galera, mut ops: Ops) {
    ops.wait_online(&MEMBERS, CAMPAIGN_DEADLINE)
        .unwrap_or_else(|e| panic!("{e}\n{}", suite.journals(&ops)));
    suite.log("the three agents online");
    let took = galera.stop_member(DOWN);
    suite.log(&format!(
        "Galera member {DOWN} stopped again, the others Primary at size 2, in {:.1}s",
        took.as_secs_f32()
    ));
    let id = ops
        .start_campaign(&suite.lab, SPEC)
        .unwrap_or_else(|e| panic!("{e}"));
    suite.log(&format!("campaign {id} started on {OPS}"));

    // It waits at ctl1's before gate: tried again and again, each try in
    // the audit with the script's exit code and reason, nothing done.
    let (held, audit, failed) = suite.wait(
        &ops,
        "ctl1 held at its before gate, two failed tries audited",
        CAMPAIGN_DEADLINE,
        || {
            let status = ops.status(&id)?;
            let audit = ops.audit(&id)?;
            let failed = held_at_the_gate(&status, &audit)?;
            Ok((status, audit, failed))
        },
    );
    suite.log(&format!("{}; {failed} failed tries", held.summary()));
    assert_eq!(held.campaign.phase, Phase::Running, "{held:#?}");
    for node in ["ctl2", "ctl3"] {
        let run = held.run(node).expect("a member");
        assert_eq!(run.step, Step::Pending, "{node} waits its turn: {held:#?}");
    }
    assert_eq!(
        patches_asked(&audit),
        Vec::<&AuditEntry>::new(),
        "no patch while the gate fails"
    );
    let tries = ops::gate_tries(&audit);
    assert!(
        tries
            .iter()
            .all(|t| t.node == "ctl1" && t.phase == "before" && t.hook == GALERA && !t.passed),
        "only ctl1's {GALERA} was tried, and failed: {tries:#?}"
    );

    let back_from = Timestamp::now();
    let took = galera.start_member(DOWN);
    let back = Timestamp::now();
    suite.log(&format!(
        "Galera member {DOWN} back, the cluster whole, in {:.1}s",
        took.as_secs_f32()
    ));

    let done = suite.wait(&ops, "the campaign ended", CAMPAIGN_DEADLINE, || {
        let status = ops.status(&id)?;
        if status.campaign.phase != Phase::Running || status.any_failed() {
            Ok(status)
        } else {
            Err(status.summary())
        }
    });
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    for node in MEMBERS {
        let run = done.run(node).expect("a member");
        assert_eq!(run.step, Step::Done, "{node}: {done:#?}");
    }
    let audit = ops.audit(&id).unwrap_or_else(|e| panic!("{e}"));

    // Each controller between a passing before and a passing after gate,
    // one after the other, in order: its patch in between, and only one.
    let passes: Vec<(String, String, String)> = ops::gate_tries(&audit)
        .into_iter()
        .filter(|t| t.passed)
        .map(|t| (t.node, t.phase, t.hook))
        .collect();
    let expected: Vec<(String, String, String)> = MEMBERS
        .iter()
        .flat_map(|node| {
            ["before", "after"].into_iter().flat_map(move |phase| {
                [GALERA, RABBIT].map(|hook| ((*node).to_owned(), phase.to_owned(), hook.to_owned()))
            })
        })
        .collect();
    assert_eq!(passes, expected, "passing gate tries in order");
    for node in MEMBERS {
        let at = |what: &dyn Fn(&AuditEntry) -> bool| -> Vec<usize> {
            (0..audit.len()).filter(|i| what(&audit[*i])).collect()
        };
        let asked = at(&|e| {
            e.node == node && e.event == "action" && e.detail.starts_with("patch asked of ")
        });
        assert_eq!(asked.len(), 1, "{node} patched once: {audit:#?}");
        let patched =
            at(&|e| e.node == node && e.event == "step" && e.detail.starts_with("patch done"));
        assert_eq!(patched.len(), 1, "{node}: {audit:#?}");
        assert_eq!(
            audit[patched[0]].exit_code,
            Some(0),
            "{node}: {:#?}",
            audit[patched[0]]
        );
        let passed = |phase: &str, hook: &str| {
            let detail = format!("{phase} gate: {hook} on {node} passed");
            at(&|e| e.node == node && e.detail.starts_with(&detail))
                .first()
                .copied()
                .unwrap_or_else(|| panic!("no {detail:?}: {audit:#?}"))
        };
        assert!(
            passed("before", RABBIT) < asked[0] && patched[0] < passed("after", GALERA),
            "{node}: the patch between the gates: {audit:#?}"
        );
        let version = suite
            .lab
            .sh(node, "dpkg-query -W -f '${Version}' rollcall-demo-kernel");
        assert_eq!(version, "1.1", "{node}: the real apt-get upgrade ran");
    }

    // How long it held, and what the gates cost each node.
    let at = |detail: &str| {
        audit
            .iter()
            .find(|e| e.node == "ctl1" && e.detail.starts_with(detail))
            .unwrap_or_else(|| panic!("no {detail:?}: {audit:#?}"))
            .at
    };
    let galera_passed = at(&format!("before gate: {GALERA} on ctl1 passed"));
    let gate_passed = at("gate-before done");
    let finished = done.campaign.finished_at.expect("a completed campaign");
    suite.log(&format!(
        "TIMING campaign: ctl1's {GALERA} passed {:.1}s after `systemctl start mariadb` on \
         {DOWN} was called ({:+.1}s from when this test saw the cluster whole), its before \
         gate ({RABBIT} too) {:.1}s after the call; the campaign took {:.1}s in all, {:.1}s \
         after {DOWN} was back",
        galera_passed.since(back_from).as_secs_f32(),
        (galera_passed.unix_millis() - back.unix_millis()) as f64 / 1_000.0,
        gate_passed.since(back_from).as_secs_f32(),
        finished.since(done.campaign.created_at).as_secs_f32(),
        finished.since(back).as_secs_f32()
    ));
    let tries = ops::gate_tries(&audit);
    for node in MEMBERS {
        let run = done.run(node).expect("a member");
        let wall = match (run.started_at, run.finished_at) {
            (Some(s), Some(f)) => f.since(s),
            _ => Duration::ZERO,
        };
        let steps = ops::step_times(&audit, node);
        let secs = |step: &str| steps.get(step).map_or(0.0, Duration::as_secs_f32);
        let count = |phase: &str| {
            tries
                .iter()
                .filter(|t| t.node == node && t.phase == phase)
                .count()
        };
        suite.log(&format!(
            "TIMING campaign node {node}: {:.1}s in all; gate-before {:.1}s ({} tries), \
             gate-after {:.1}s ({} tries), patch {:.1}s",
            wall.as_secs_f32(),
            secs("gate-before"),
            count("before"),
            secs("gate-after"),
            count("after"),
            secs("patch")
        ));
    }
}
