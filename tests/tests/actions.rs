//! The server names an action, the agent runs what its own configuration
//! defines, over real mTLS: results are stored before they are
//! acknowledged, ids never run twice, and a reboot completes when the agent
//! returns under a new boot id, and a patch that outlives its agent is
//! re-adopted by the next one. The reboot here is a fake (this machine
//! cannot reboot): `FakeReboot` records the request and "boots" the agent
//! again under a new boot id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_agent::actions::{Actions, Definitions};
use rollcall_agent::collect::{Sources, SystemCollector};
use rollcall_agent::config::HostConfig;
use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, ActionState, Role};
use rollcall_proto::v1;
use rollcall_server::fleet::NotSent;
use rollcall_tests::{Pki, RawSession, TempDir, TestAgent, TestServer, eventually, hello, init};

fn request(id: &str, kind: ActionKind, name: &str, args: &[&str]) -> ActionRequest {
    ActionRequest {
        id: id.into(),
        kind,
        name: name.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        timeout_secs: 30,
        leader_epoch: 0,
    }
}

fn definitions(work: &Path) -> Definitions {
    let sh = |script: String| vec!["sh".to_owned(), "-c".to_owned(), script];
    Definitions {
        patch: sh(format!(
            "echo run >> {}/patch-runs; echo patched",
            work.display()
        )),
        // FakeReboot: records that a reboot was asked for; the test then
        // "boots" the agent again under a new boot id.
        reboot: sh(format!("echo reboot >> {}/fake-reboots", work.display())),
        hooks: [(
            "drain".to_owned(),
            vec!["echo".to_owned(), "draining".to_owned()],
        )]
        .into(),
        patch_env: vec![],
    }
}

struct Node {
    work: PathBuf,
    store: PathBuf,
}

impl Node {
    fn start(&self, server: &TestServer, pki: &Pki, boot_id: &str) -> TestAgent {
        self.start_defined(server, pki, boot_id, definitions(&self.work))
    }

    fn start_defined(
        &self,
        server: &TestServer,
        pki: &Pki,
        boot_id: &str,
        defs: Definitions,
    ) -> TestAgent {
        // The boot id the collector reports, as /proc/sys/kernel/random/boot_id would.
        let boot_file = self.work.join("boot_id");
        std::fs::write(&boot_file, boot_id).expect("write boot id");
        let host = HostConfig {
            boot_id_path: boot_file,
            ..HostConfig::default()
        };
        let actions = Actions::load(defs, &self.store, boot_id).expect("load actions");
        TestAgent::start_full(
            &server.url(),
            pki,
            "cmp1",
            Role::Compute,
            boot_id,
            |_| Sources::host_only(SystemCollector::new(host)),
            Some(actions),
        )
    }
}

async fn result(
    server: &TestServer,
    id: &str,
    what: &str,
    done: impl Fn(&ActionResult) -> bool,
) -> ActionResult {
    let fleet = &server.server.as_ref().expect("running").fleet;
    eventually(Duration::from_secs(15), what, || async {
        fleet.action(id).await.expect("fleet").filter(|r| done(r))
    })
    .await
}

#[tokio::test]
async fn actions_run_once_are_stored_then_acknowledged_and_reboots_complete_on_return() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let dir = TempDir::new("actions");
    let node = Node {
        work: dir.path().to_owned(),
        store: dir.path().join("store"),
    };
    let agent = node.start(&server, &pki, "boot-1");
    server.wait_online("cmp1").await;
    let fleet = server.server.as_ref().expect("running").fleet.clone();

    // Patch: runs, is stored, is acknowledged (the agent forgets it).
    fleet
        .send_action("cmp1", request("c1-cmp1-patch", ActionKind::Patch, "", &[]))
        .await
        .expect("fleet")
        .expect("sent");
    let patched = result(&server, "c1-cmp1-patch", "patch result", |r| {
        r.state.is_final()
    })
    .await;
    assert_eq!(
        (patched.state, patched.exit_code),
        (ActionState::Succeeded, Some(0))
    );
    assert_eq!(patched.output_tail.trim(), "patched");
    eventually(
        Duration::from_secs(5),
        "the agent to forget the acknowledged record",
        || async { (!node.store.join("c1-cmp1-patch.json").exists()).then_some(()) },
    )
    .await;
    // The same id again (a re-sent request): never a second run.
    fleet
        .send_action("cmp1", request("c1-cmp1-patch", ActionKind::Patch, "", &[]))
        .await
        .expect("fleet")
        .expect("sent");

    // Hooks get their arguments as argv; undefined ones are refused.
    fleet
        .send_action(
            "cmp1",
            request("c1-drain", ActionKind::Hook, "drain", &["cmp1"]),
        )
        .await
        .expect("fleet")
        .expect("sent");
    let drained = result(&server, "c1-drain", "hook result", |r| r.state.is_final()).await;
    assert_eq!(
        (drained.state, drained.output_tail.trim()),
        (ActionState::Succeeded, "draining cmp1")
    );
    // Barrier: the agent reads its requests in order, so with the hook's
    // result in, it has dealt with the patch asked again before it. A
    // second run would have been recorded on disk before it started.
    assert!(
        !node.store.join("c1-cmp1-patch.json").exists(),
        "the patch asked again was recorded to run again"
    );
    assert_eq!(
        lines(&node.work.join("patch-runs")),
        1,
        "the patch ran once"
    );
    fleet
        .send_action(
            "cmp1",
            request("c1-evil", ActionKind::Hook, "rm-rf", &["/"]),
        )
        .await
        .expect("fleet")
        .expect("sent");
    let refused = result(&server, "c1-evil", "refusal", |r| r.state.is_final()).await;
    assert_eq!(refused.state, ActionState::Rejected);
    assert!(
        refused.error.contains("no hook \"rm-rf\""),
        "{}",
        refused.error
    );

    // Reboot: recorded as running before the (fake) reboot command runs...
    fleet
        .send_action("cmp1", request("c1-reboot", ActionKind::Reboot, "", &[]))
        .await
        .expect("fleet")
        .expect("sent");
    let running = result(&server, "c1-reboot", "reboot running", |r| {
        r.state == ActionState::Running
    })
    .await;
    assert_eq!(running.boot_id, "boot-1");
    eventually(
        Duration::from_secs(5),
        "the fake reboot to be asked for",
        || async { node.work.join("fake-reboots").exists().then_some(()) },
    )
    .await;
    // ...the machine goes down (FakeReboot: the agent stops) and comes
    // back under a new boot id: the reboot is done.
    agent.stop().await;
    server.wait_offline("cmp1").await;
    let agent = node.start(&server, &pki, "boot-2");
    let back = server
        .wait_node("cmp1", "back under a new boot id", |d| {
            d.node.online && d.node.boot_id == "boot-2"
        })
        .await;
    assert!(back.node.online);
    let rebooted = result(&server, "c1-reboot", "reboot done", |r| r.state.is_final()).await;
    assert_eq!(rebooted.state, ActionState::Succeeded);
    // Results survive a server restart (they are in the store).
    agent.stop().await;
    let mut server = server;
    server.restart().await;
    let kept = server
        .server
        .as_ref()
        .expect("running")
        .fleet
        .action("c1-patch-none")
        .await
        .expect("fleet");
    assert!(kept.is_none());
    let kept = server
        .server
        .as_ref()
        .expect("running")
        .fleet
        .action("c1-cmp1-patch")
        .await
        .expect("fleet");
    assert_eq!(kept.map(|r| r.state), Some(ActionState::Succeeded));
}

#[tokio::test]
async fn an_offline_node_cannot_be_asked_and_an_agent_without_actions_refuses() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let fleet = server.server.as_ref().expect("running").fleet.clone();
    let err = fleet
        .send_action("ghost", request("g1", ActionKind::Patch, "", &[]))
        .await
        .expect("fleet")
        .unwrap_err();
    assert_eq!(
        err,
        NotSent::Offline {
            node: "ghost".into()
        }
    );
    let agent = TestAgent::start(&server, &pki, "plain1", Role::Compute);
    server.wait_online("plain1").await;
    fleet
        .send_action("plain1", request("p1", ActionKind::Patch, "", &[]))
        .await
        .expect("fleet")
        .expect("sent");
    let refused = result(&server, "p1", "refusal", |r| r.state.is_final()).await;
    assert_eq!(refused.state, ActionState::Rejected);

    // Another node cannot answer for plain1's action, nor invent one.
    let cert = pki.agent("rogue1");
    let mut rogue = RawSession::open(&server, &cert, hello("rogue1", Role::Compute))
        .await
        .expect("session");
    rogue.next().await.expect("welcome").expect("welcome");
    for id in ["p1", "made-up-1"] {
        let update = v1::ActionUpdate {
            action_id: id.into(),
            state: v1::ActionState::Succeeded.into(),
            ..Default::default()
        };
        rogue
            .tx
            .send(v1::AgentMessage {
                msg: Some(v1::agent_message::Msg::ActionUpdate(update)),
            })
            .await
            .expect("send");
    }
    // Barrier: the server answers each update once it has judged it (an
    // acknowledgement, so that a confused agent forgets what it was never
    // asked): with both answered, both were handled.
    let mut acked = Vec::new();
    while acked.len() < 2 {
        let msg = rogue
            .next()
            .await
            .expect("the server answers the updates")
            .expect("the session stays open");
        if let Some(v1::server_message::Msg::Ack(ack)) = msg.msg {
            acked.extend(ack.action_ids);
        }
    }
    acked.sort();
    assert_eq!(acked, ["made-up-1", "p1"]);
    assert_eq!(
        fleet
            .action("p1")
            .await
            .expect("fleet")
            .map(|r| (r.node, r.state)),
        Some(("plain1".to_owned(), ActionState::Rejected))
    );
    assert_eq!(fleet.action("made-up-1").await.expect("fleet"), None);
    agent.stop().await;
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// A request as the leader of `epoch` sends it.
fn from_leader(mut req: ActionRequest, epoch: u64) -> ActionRequest {
    req.leader_epoch = epoch;
    req
}

#[tokio::test]
async fn a_request_from_a_deposed_leader_is_rejected_and_runs_nothing() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let dir = TempDir::new("epochs");
    let node = Node {
        work: dir.path().to_owned(),
        store: dir.path().join("store"),
    };
    // A hook that says who asked for it, as a test script records it.
    let mut defs = definitions(&node.work);
    defs.hooks.insert(
        "who".into(),
        vec![
            "sh".into(),
            "-c".into(),
            "echo \"$ROLLCALL_ACTION_ID $ROLLCALL_LEADER_EPOCH\"".into(),
        ],
    );
    let agent = node.start_defined(&server, &pki, "boot-1", defs);
    server.wait_online("cmp1").await;
    let fleet = server.server.as_ref().expect("running").fleet.clone();
    // This server has no replicas; its fleet sends whatever epoch a
    // request carries, as a leader of that epoch would.
    let send = |req: ActionRequest| {
        let fleet = fleet.clone();
        async move {
            fleet
                .send_action("cmp1", req)
                .await
                .expect("fleet")
                .expect("sent")
        }
    };
    let done = |r: &ActionResult| r.state.is_final();

    // A server without replicas (epoch 0) is heard while the agent has
    // seen no leader with replicas.
    send(from_leader(
        request("e0-who", ActionKind::Hook, "who", &[]),
        0,
    ))
    .await;
    let zero = result(&server, "e0-who", "the epoch 0 hook", done).await;
    assert_eq!(
        (zero.state, zero.output_tail.trim()),
        (ActionState::Succeeded, "e0-who 0")
    );

    send(from_leader(
        request("e4-who", ActionKind::Hook, "who", &[]),
        4,
    ))
    .await;
    let who = result(&server, "e4-who", "the epoch 4 hook", done).await;
    assert_eq!(
        (who.state, who.output_tail.trim()),
        (ActionState::Succeeded, "e4-who 4")
    );

    // The leader of epoch 3 was deposed and does not know it yet.
    send(from_leader(
        request("e3-patch", ActionKind::Patch, "", &[]),
        3,
    ))
    .await;
    let refused = result(&server, "e3-patch", "the epoch 3 answer", done).await;
    assert_eq!(
        (refused.state, refused.error.as_str()),
        (
            ActionState::Rejected,
            "sent by a deposed leader (epoch 3; this agent has seen epoch 4)"
        )
    );

    // Nor, now, a server without replicas (one left on the SQLite file the
    // fleet was migrated from): it is refused the same way.
    send(from_leader(
        request("e0-after", ActionKind::Hook, "who", &[]),
        0,
    ))
    .await;
    let late = result(&server, "e0-after", "the late epoch 0 answer", done).await;
    assert_eq!(late.state, ActionState::Rejected);
    assert!(
        late.error
            .starts_with("sent by a server without replicas (epoch 0)"),
        "{}",
        late.error
    );
    assert!(
        !node.work.join("patch-runs").exists(),
        "the deposed leader's patch never ran"
    );
    assert_eq!(
        std::fs::read_to_string(node.store.join("leader-epoch")).expect("epoch file"),
        "4\n"
    );
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_restarted_during_its_patch_readopts_it_and_reports_the_real_outcome() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let dir = TempDir::new("readopt");
    let node = Node {
        work: dir.path().to_owned(),
        store: dir.path().join("store"),
    };
    let (starts, runs) = (node.work.join("patch-starts"), node.work.join("patch-runs"));
    let mut defs = definitions(&node.work);
    defs.patch = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo start >> {}; sleep 3; echo run >> {}; echo patched",
            starts.display(),
            runs.display()
        ),
    ];
    let agent = node.start_defined(&server, &pki, "boot-1", defs.clone());
    server.wait_online("cmp1").await;
    let fleet = server.server.as_ref().expect("running").fleet.clone();
    let ask = || request("c1-cmp1-patch", ActionKind::Patch, "", &[]);
    fleet
        .send_action("cmp1", ask())
        .await
        .expect("fleet")
        .expect("sent");
    result(&server, "c1-cmp1-patch", "patch running", |r| {
        r.state == ActionState::Running
    })
    .await;

    // The agent stops under its patch (kill -9, or systemd restarting it
    // with KillMode=process): the patch, in its own process group, runs on.
    agent.stop().await;
    server.wait_offline("cmp1").await;
    assert_eq!(
        (lines(&starts), lines(&runs)),
        (1, 0),
        "the agent stopped while the patch ran"
    );
    let agent = node.start_defined(&server, &pki, "boot-1", defs);
    server.wait_online("cmp1").await;
    // Asked again while it runs (a server that re-asks what it believes
    // lost): answered from the running record, never started again.
    fleet
        .send_action("cmp1", ask())
        .await
        .expect("fleet")
        .expect("sent");
    let meanwhile = fleet.action("c1-cmp1-patch").await.expect("fleet");
    assert_eq!(
        meanwhile.map(|r| (r.state, r.error)),
        Some((ActionState::Running, String::new())),
        "still running when asked again"
    );

    let done = result(&server, "c1-cmp1-patch", "the real outcome", |r| {
        r.state.is_final()
    })
    .await;
    assert_eq!(
        (done.state, done.exit_code, done.output_tail.trim()),
        (ActionState::Succeeded, Some(0), "patched"),
        "{}",
        done.error
    );
    // The request asked again went down the stream before the patch ended,
    // so the agent had handled it before it sent this result.
    assert_eq!(
        (lines(&starts), lines(&runs)),
        (1, 1),
        "the patch ran exactly once"
    );
    // Stored, so acknowledged: the agent forgets it, files and all.
    eventually(
        Duration::from_secs(5),
        "the agent to forget the acknowledged record",
        || async {
            let gone = ["json", "log", "exit"]
                .iter()
                .all(|ext| !node.store.join(format!("c1-cmp1-patch.{ext}")).exists());
            gone.then_some(())
        },
    )
    .await;
    assert_eq!(lines(&starts), 1, "the patch ran exactly once");
    agent.stop().await;
}
