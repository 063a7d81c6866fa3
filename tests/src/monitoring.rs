//! The monitoring stack operators already run, for real: Debian's
//! `prometheus` and `prometheus-alertmanager` started on loopback ports of
//! the test's own, with configs and data in a temporary directory, and
//! `Switch`, a scrape target in the test process whose one series the test
//! turns on and off, so an alert rule over it fires and resolves when the
//! test says.
//!
//! Outside CI a missing binary skips the test that asks (`start` returns
//! `None` and says so); with CI=true it fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_server::http::{HttpClient, HttpOptions, join, query_escape};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::{TempDir, eventually, in_ci, port_outside_ephemeral_range};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// The binary at `path`, or `None` outside CI with a line saying why the
/// test skips. In CI a missing binary is a failure: scripts/test.sh
/// installs Debian's `prometheus` and `prometheus-alertmanager`.
pub fn binary(path: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    assert!(
        !in_ci(),
        "{path} is missing: install Debian's prometheus and prometheus-alertmanager \
         (scripts/test.sh does)"
    );
    eprintln!("SKIP: {path} is missing (apt-get install prometheus prometheus-alertmanager)");
    None
}

/// A client for the APIs of both, with a short deadline.
pub fn client() -> HttpClient {
    HttpClient::new(HttpOptions {
        timeout: Duration::from_secs(5),
        max_body_bytes: 16 * 1024 * 1024,
        ca_file: None,
    })
    .expect("http client")
}

/// GET `url`; its JSON, or a panic naming the URL and the answer.
pub async fn get_json(url: &str) -> Value {
    let answer = client()
        .get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(
        answer.is_success(),
        "GET {url}: status {}: {}",
        answer.status,
        answer.body_line(300)
    );
    serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// One of the two servers: its process (killed on drop), its directory
/// and its address.
struct Process {
    child: Child,
    dir: TempDir,
    url: String,
    name: &'static str,
}

impl Process {
    async fn spawn(
        name: &'static str,
        binary: &Path,
        args: Vec<String>,
        dir: TempDir,
        port: u16,
    ) -> Self {
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut process = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            name,
        };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&mut self) {
        let ready = join(&self.url, "/-/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(answer) = client().get(&ready).await
                && answer.is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready: {}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within 60 s: {}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of the process's log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Debian's Alertmanager on a loopback port, one instance (no cluster),
/// alerts routed nowhere: what the tests read is its API.
pub struct Alertmanager(Process);

impl Alertmanager {
    pub async fn start() -> Option<Self> {
        let binary = binary(ALERTMANAGER)?;
        let dir = TempDir::new("alertmanager");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nowhere\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: nowhere\n",
        )
        .expect("write alertmanager.yml");
        let port = port_outside_ephemeral_range();
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // One instance: no gossip port to collide with another test's.
            "--cluster.listen-address=".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        Some(Self(
            Process::spawn("alertmanager", &binary, args, dir, port).await,
        ))
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// `GET /api/v2/silences`: every silence, active, pending or expired.
    pub async fn silences(&self) -> Vec<Value> {
        array(get_json(&join(self.url(), "/api/v2/silences")).await)
    }

    /// `GET /api/v2/alerts`: the alerts it holds (active, silenced and
    /// inhibited alike).
    pub async fn alerts(&self) -> Vec<Value> {
        array(get_json(&join(self.url(), "/api/v2/alerts")).await)
    }
}

/// What Prometheus scrapes, evaluates and tells.
#[derive(Clone, Debug, Default)]
pub struct PrometheusSetup {
    /// `host:port` targets of one job, `rollcall`, scraped every second.
    pub scrape: Vec<String>,
    /// A rules file (`groups: …`), evaluated every second; none if empty.
    pub rules_yaml: String,
    /// An Alertmanager's URL to send alerts to.
    pub alertmanager: Option<String>,
}

/// Debian's Prometheus on a loopback port: 1 s scrape and evaluation
/// intervals, alerts re-sent every second, TSDB in the temp directory.
pub struct Prometheus(Process);

impl Prometheus {
    pub async fn start(setup: PrometheusSetup) -> Option<Self> {
        let binary = binary(PROMETHEUS)?;
        let dir = TempDir::new("prometheus");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !setup.rules_yaml.is_empty() {
            let rules = dir.path().join("rules.yml");
            std::fs::write(&rules, &setup.rules_yaml).expect("write rules");
            config.push_str(&format!("rule_files:\n  - {}\n", rules.display()));
        }
        if let Some(alertmanager) = &setup.alertmanager {
            let target = alertmanager
                .trim_start_matches("http://")
                .trim_end_matches('/');
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{target}\"]\n"
            ));
        }
        let targets: Vec<String> = setup.scrape.iter().map(|t| format!("\"{t}\"")).collect();
        config.push_str(&format!(
            "scrape_configs:\n  - job_name: rollcall\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("write prometheus.yml");
        let port = port_outside_ephemeral_range();
        let args = vec![
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rules.alert.resend-delay=1s".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        Some(Self(
            Process::spawn("prometheus", &binary, args, dir, port).await,
        ))
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// `GET /api/v1/alerts`: every pending and firing alert.
    pub async fn alerts(&self) -> Vec<Value> {
        let answer = get_json(&join(self.url(), "/api/v1/alerts")).await;
        array(answer["data"]["alerts"].clone())
    }

    /// The state (`pending`, `firing`) of the alert named `name`, if any.
    pub async fn alert_state(&self, name: &str) -> Option<String> {
        self.alerts()
            .await
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }

    /// Waits until the alert named `name` is in `state` (`None`: gone).
    pub async fn wait_alert(&self, name: &str, state: Option<&str>, timeout: Duration) {
        eventually(
            timeout,
            &format!("alert {name} to be {state:?}"),
            || async { (self.alert_state(name).await.as_deref() == state).then_some(()) },
        )
        .await;
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let url = join(
            self.url(),
            &format!("/api/v1/query?query={}", query_escape(expr)),
        );
        array(get_json(&url).await["data"]["result"].clone())
    }

    /// Waits until every target was scraped and is up; returns the targets.
    pub async fn wait_targets_up(&self, timeout: Duration) -> Vec<Value> {
        eventually(timeout, "every scrape target up", || async {
            let answer = get_json(&join(self.url(), "/api/v1/targets")).await;
            let targets = array(answer["data"]["activeTargets"].clone());
            (!targets.is_empty() && targets.iter().all(|t| t["health"] == "up")).then_some(targets)
        })
        .await
    }
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// A scrape target in the test process: `rollcall_test_switch{node="N"}`
/// is 1 for every node switched on, 0 for those switched off.
pub struct Switch {
    target: String,
    state: Arc<Mutex<BTreeMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind switch");
        let target = listener.local_addr().expect("addr").to_string();
        let state: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = exposition(&shared.lock().expect("switch state"));
                tokio::spawn(async move {
                    let mut asked = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !asked.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => asked.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            target,
            state,
            task,
        }
    }

    /// `host:port`, for [`PrometheusSetup::scrape`].
    pub fn target(&self) -> String {
        self.target.clone()
    }

    pub fn set(&self, node: &str, on: bool) {
        self.state
            .lock()
            .expect("switch state")
            .insert(node.to_owned(), on);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn exposition(state: &BTreeMap<String, bool>) -> String {
    let mut text = String::from(
        "# HELP rollcall_test_switch A test's switch: 1 while the test holds it on.\n\
         # TYPE rollcall_test_switch gauge\n",
    );
    for (node, on) in state {
        text.push_str(&format!(
            "rollcall_test_switch{{node=\"{node}\"}} {}\n",
            u8::from(*on)
        ));
    }
    text
}

/// A rule file with one alert, `name`, firing while some node's switch is
/// on (after `for_secs` pending), labelled with that node as `instance`.
pub fn switch_rule(name: &str, for_secs: u32) -> String {
    format!(
        "groups:\n  - name: test\n    rules:\n      - alert: {name}\n        \
         expr: rollcall_test_switch > 0\n        for: {for_secs}s\n        \
         labels:\n          severity: critical\n          instance: '{{{{ $labels.node }}}}:9100'\n        \
         annotations:\n          summary: switch on\n"
    )
}

/// What a webhook receiver does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200, and the body is recorded.
    Take,
    /// 503: the sender should try again.
    Unavailable,
    /// Reads the request and never answers.
    Hang,
}

/// A webhook receiver in the test process: records every body it took, in
/// the order it took them, and answers the first requests as scripted.
pub struct Receiver {
    url: String,
    taken: Arc<Mutex<Vec<Value>>>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// `script` answers the first requests in order; every later one is
    /// taken.
    pub async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/hooks/SECRET-TOKEN",
            listener.local_addr().expect("addr")
        );
        let taken: Arc<Mutex<Vec<Value>>> = Arc::default();
        let asked: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (record, count) = (taken.clone(), asked.clone());
        let task = tokio::spawn(async move {
            let script = Arc::new(script);
            while let Ok((mut socket, _)) = listener.accept().await {
                let (record, count, script) = (record.clone(), count.clone(), script.clone());
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut socket).await else {
                        return;
                    };
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = script.get(n).copied().unwrap_or(Answer::Take);
                    let status = match answer {
                        Answer::Hang => {
                            std::future::pending::<()>().await;
                            return;
                        }
                        Answer::Unavailable => "503 Service Unavailable",
                        Answer::Take => {
                            let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                                panic!("a webhook body that is not JSON ({e}): {body:?}")
                            });
                            record.lock().expect("receiver").push(value);
                            "200 OK"
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            url,
            taken,
            asked,
            task,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every body taken so far, in order.
    pub fn taken(&self) -> Vec<Value> {
        self.taken.lock().expect("receiver").clone()
    }

    /// The `event` of every body taken so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.taken()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until it took at least `n` bodies; their events, in order.
    pub async fn wait_events(&self, n: usize) -> Vec<String> {
        eventually(
            Duration::from_secs(30),
            &format!("{n} events at the webhook"),
            || async {
                let events = self.events();
                (events.len() >= n).then_some(events)
            },
        )
        .await
    }

    /// Requests that reached it, answered or not.
    pub fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request's body (by its Content-Length).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Some(data[end + 4..end + 4 + length].to_vec());
            }
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// What a test of alerts stands on: a real Alertmanager, the `Switch`, and
/// a real Prometheus that scrapes the switch with `switch_rule`'s alert and
/// sends to that Alertmanager, the switch already scraped once.
pub struct Stack {
    pub alertmanager: Alertmanager,
    pub switch: Switch,
    pub prometheus: Prometheus,
}

impl Stack {
    /// `None` (said why) outside CI when a binary is missing.
    pub async fn start(alert: &str, for_secs: u32) -> Option<Self> {
        let alertmanager = Alertmanager::start().await?;
        let switch = Switch::start().await;
        let prometheus = Prometheus::start(PrometheusSetup {
            scrape: vec![switch.target()],
            rules_yaml: switch_rule(alert, for_secs),
            alertmanager: Some(alertmanager.url().to_owned()),
        })
        .await?;
        prometheus.wait_targets_up(Duration::from_secs(30)).await;
        Some(Self {
            alertmanager,
            switch,
            prometheus,
        })
    }
}
