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

use std::time::{Duration, Instant};

use rollcall_tests::clusters::{self, Galera, GateRun, Gates, JOIN_TIMEOUT, Rabbit};
use rollcall_tests::in_ci;
use rollcall_tests::nodes::{self, NodeLab};

const MEMBERS: [&str; 3] = ["ctl1", "ctl2", "ctl3"];
/// The member taken down and brought back.
const DOWN: &str = "ctl3";
/// The members that stay up.
const UP: [&str; 2] = ["ctl1", "ctl2"];
const GALERA: &str = "galera-synced";
const RABBIT: &str = "rabbitmq-healthy";
/// Tries per timed gate call.
const TRIES: usize = 10;

/// The gates' source, or a loud skip outside CI (a failure in CI).
fn ready() -> Option<Gates> {
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
    match gates {
        Some(gates) if missing.is_empty() => Some(gates),
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
    let Some(gates) = ready() else { return };
    let t0 = Instant::now();
    let mut lab = NodeLab::new("gates");
    clusters::start_nodes(&mut lab, &MEMBERS, &[]);
    let suite = Suite { lab, t0 };
    suite.log("three cluster nodes booted");
    for node in MEMBERS {
        gates.install(&suite.lab, node);
    }
    suite.log(&format!("gate scripts installed from {}", gates.describe()));

    // Both clusters at once, as on a kolla controller.
    let (galera, rabbit) = std::thread::scope(|s| {
        let galera = s.spawn(|| Galera::start(&suite.lab, &MEMBERS));
        let rabbit = s.spawn(|| Rabbit::start(&suite.lab, &MEMBERS));
        let galera = galera
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let rabbit = rabbit
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (galera, rabbit)
    });
    suite.log(&format!(
        "TIMING clusters formed: Galera in {:.1}s, RabbitMQ in {:.1}s (side by side)",
        galera.started_in().as_secs_f32(),
        rabbit.started_in().as_secs_f32()
    ));

    galera_scenarios(&suite, &galera);
    rabbit_scenarios(&suite, &rabbit);
    suite.log("done");
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
