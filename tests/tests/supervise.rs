//! A server that loses a part of itself exits, so that systemd restarts it,
//! rather than stay up answering "the server is shutting down" to every
//! call: the real binary, its exit status and its one line on stderr.
//!
//! The part is made to fail by the one test hook the binary has
//! (`rollcall_server::FLEET_PANIC_ENV`: the fleet actor panics at the first
//! command it handles); the in-process side is tested on `RunningServer`
//! in the server's own unit tests.

use std::process::Stdio;
use std::time::Duration;

use rollcall_tests::{Pki, TempDir, bin, init};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn a_server_whose_fleet_panics_exits_1_with_one_line_naming_it() {
    init();
    let pki = Pki::new();
    let data = TempDir::new("supervise");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(bin("rollcall-server"))
        .args([
            "serve",
            "--listen",
            &addr,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--ca")
        .arg(pki.ca_cert())
        .arg("--cert")
        .arg(pki.path().join("server.crt"))
        .arg("--key")
        .arg(pki.path().join("server.key"))
        .env(rollcall_server::FLEET_PANIC_ENV, "1")
        // Only the final error line: the panic itself is a log line.
        .env("ROLLCALL_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rollcall-server");

    // An operator's call is the fleet's first command; until the server
    // listens, the call fails to connect and is made again.
    let op = pki.operator("supervisor-test");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.try_wait().expect("server status").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not exit after its fleet panicked"
        );
        let mut call = std::process::Command::new(bin("rollcall-server"));
        call.args(["nodes", "list", "--json"])
            .env("ROLLCALL_SERVER", format!("https://localhost:{port}"))
            .env("ROLLCALL_CA", pki.ca_cert())
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key)
            .env("ROLLCALL_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let answered = tokio::task::spawn_blocking(move || call.status())
            .await
            .expect("join")
            .expect("run rollcall-server nodes list");
        assert!(
            !answered.success(),
            "a fleet armed to panic answers no call"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = tokio::time::timeout(Duration::from_secs(30), server.wait_with_output())
        .await
        .expect("the server's output ends")
        .expect("server output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines,
        ["error: the fleet actor panicked: injected fault: the fleet actor was told to panic"],
        "one line naming the part and why"
    );
}
