//! Several `rollcall-server` replicas on one PostgreSQL database, for a
//! [`super::cloud::Cloud`] started with `start_replicated`: each replica a
//! process of its own under a supervisor that starts it again when it
//! exits (systemd's Restart=on-failure, a short delay), listening on a
//! loopback port of its own and advertised as `https://localhost:PORT`, its
//! PostgreSQL connections through a [`Relay`] of its own that a test can
//! blackhole or reset.
//!
//! Who leads is read from the lease row (psql, as an operator would look),
//! and when a replica won the lease and what it sent, from its own log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use super::cloud::{Procs, ServerProc, Session, free_port, server_toml_text, supervise_server};
use super::record::{self, Act, LogLine};
use super::relay::Relay;
use crate::postgres::{Postgres, SUPERUSER};

/// How the replicas of a cloud are set up.
#[derive(Clone, Copy)]
pub struct ReplicaSetup {
    pub pg: &'static Postgres,
    pub count: usize,
    /// `[replica] lease_ms`; `None`: the server's default (10 s).
    pub lease_ms: Option<u64>,
    /// `[replica] poll_ms`; `None`: the server's default (1 s).
    pub poll_ms: Option<u64>,
}

impl ReplicaSetup {
    /// `count` replicas with the server's default lease and poll.
    pub fn new(pg: &'static Postgres, count: usize) -> ReplicaSetup {
        ReplicaSetup {
            pg,
            count,
            lease_ms: None,
            poll_ms: None,
        }
    }
}

/// One replica.
pub struct Replica {
    pub index: usize,
    pub port: u16,
    /// `[replica] advertise`: what agents, the CLI and followers call it.
    pub url: String,
    /// Its stderr, appended across restarts.
    pub log: PathBuf,
    pub proc: Arc<ServerProc>,
    /// Its PostgreSQL connections go through this.
    pub relay: Relay,
}

impl Replica {
    pub fn log(&self) -> Vec<LogLine> {
        record::read_log(&self.log)
    }

    /// When it won the lease, with which epoch.
    pub fn leases_won(&self) -> Vec<(f64, u64)> {
        record::leases_won(&self.log())
    }

    /// When a process of it started serving as the leader ("rollcall-server
    /// listening.", which a follower never logs) at or after `since`.
    pub fn serving_since(&self, since: f64) -> Option<f64> {
        self.log()
            .iter()
            .find(|l| l.at >= since && l.says("rollcall-server listening."))
            .map(|l| l.at)
    }

    /// What it sent.
    pub fn sends(&self) -> Vec<Act> {
        record::sends(self.index, &self.log())
    }

    /// The leader it named as a follower in a process started after
    /// `since`: `Some(URL)` once a start after `since` logged "Following
    /// the leader." (that process looked at the lease and found another).
    pub fn following_since(&self, since: f64) -> Option<String> {
        let log = self.log();
        let started = log
            .iter()
            .rposition(|l| l.at >= since && l.says("rollcall-server following"))?;
        log[started..]
            .iter()
            .filter(|l| l.says("Following the leader."))
            .filter_map(|l| l.field("leader").map(str::to_owned))
            .next_back()
    }
}

/// The lease row as PostgreSQL holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRow {
    pub address: String,
    pub epoch: u64,
    /// `expires_at > now()` by PostgreSQL's clock.
    pub live: bool,
    /// `expires_at - now()` in seconds: what is left of the lease.
    pub remaining: f64,
}

/// What [`Replicas::kill_leader`] killed.
#[derive(Clone, Copy, Debug)]
pub struct Killed {
    pub index: usize,
    pub epoch: u64,
    /// Unix seconds, taken just before the signal.
    pub at: f64,
    /// What was left of its lease, read just before the kill: no
    /// follower can take over sooner.
    pub remaining: f64,
}

/// The replicas of a cloud.
pub struct Replicas {
    pub pg: &'static Postgres,
    /// The database's URL, straight to PostgreSQL (not through a relay).
    pub db: String,
    pub lease: Duration,
    pub poll: Duration,
    pub members: Vec<Replica>,
    procs: Arc<Procs>,
}

impl Replicas {
    /// Makes a fresh database, a relay per replica, writes each replica's
    /// `server.toml` under `dir/replica-I/` and starts their supervisors.
    pub(super) async fn start(
        session: &Session,
        dir: &Path,
        setup: ReplicaSetup,
        procs: &Arc<Procs>,
        stop: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
        seed: u64,
    ) -> anyhow::Result<Replicas> {
        anyhow::ensure!(setup.count > 0, "a cloud of replicas needs one at least");
        let pg = setup.pg;
        let db = tokio::task::spawn_blocking(move || pg.database("failover"))
            .await
            .context("psql task")??;
        let name = db
            .rsplit_once('/')
            .map(|(_, n)| n.to_owned())
            .context("a database URL ends in its name")?;
        let upstream = SocketAddr::from(([127, 0, 0, 1], pg.port()));
        let defaults = rollcall_server::config::ReplicaConfig::default();
        let lease_ms = setup.lease_ms.unwrap_or(defaults.lease_ms);
        let poll_ms = setup.poll_ms.unwrap_or(defaults.poll_ms);
        let mut members = Vec::new();
        for index in 0..setup.count {
            let rdir = dir.join(format!("replica-{index}"));
            std::fs::create_dir_all(rdir.join("data"))?;
            let port = free_port()?;
            let url = format!("https://localhost:{port}");
            let relay = Relay::start(upstream, stop.clone()).await?;
            let mut extra = format!(
                "\n[store]\nurl = \"postgres://{SUPERUSER}@127.0.0.1:{}/{name}?sslmode=require\"\n\
                 ca = \"{}\"\n\n[replica]\nadvertise = \"{url}\"\n",
                relay.port,
                pg.ca_file().display()
            );
            for (key, value) in [("lease_ms", setup.lease_ms), ("poll_ms", setup.poll_ms)] {
                if let Some(v) = value {
                    extra.push_str(&format!("{key} = {v}\n"));
                }
            }
            let config = rdir.join("server.toml");
            std::fs::write(
                &config,
                server_toml_text(session, port, &rdir.join("data"), &extra),
            )?;
            let replica = Replica {
                index,
                port,
                url,
                log: rdir.join("server.log"),
                proc: ServerProc::new(format!("replica {index}")),
                relay,
            };
            tasks.spawn(supervise_server(
                session.server_bin(),
                config,
                replica.log.clone(),
                replica.proc.clone(),
                procs.clone(),
                stop.clone(),
                fastrand::Rng::with_seed(seed ^ (0x5e5e + index as u64)),
            ));
            members.push(replica);
        }
        Ok(Replicas {
            pg,
            db,
            lease: Duration::from_millis(lease_ms),
            poll: Duration::from_millis(poll_ms),
            members,
            procs: procs.clone(),
        })
    }

    /// Every replica's URL, in order.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|r| r.url.clone()).collect()
    }

    /// The replica advertised as `url`.
    pub fn index_of(&self, url: &str) -> Option<usize> {
        let url = url.trim_end_matches('/');
        self.members.iter().position(|r| r.url == url)
    }

    /// The lease row, if anyone ever led.
    pub async fn lease_row(&self) -> anyhow::Result<Option<LeaseRow>> {
        let (pg, db) = (self.pg, self.db.clone());
        let out = tokio::task::spawn_blocking(move || {
            pg.psql(
                &db,
                "SELECT address, epoch, expires_at > now(), \
                 extract(epoch FROM expires_at - now()) FROM leader WHERE id = 1;",
            )
        })
        .await
        .context("psql task")??;
        if out.is_empty() {
            return Ok(None);
        }
        match out.split('|').collect::<Vec<_>>()[..] {
            [address, epoch, live, remaining] => Ok(Some(LeaseRow {
                address: address.to_owned(),
                epoch: epoch.parse().context("the lease's epoch")?,
                live: live == "t",
                remaining: remaining.parse().context("the lease's time left")?,
            })),
            _ => bail!("an unexpected lease row from psql: {out}"),
        }
    }

    /// The replica whose lease is live now, and its epoch.
    pub async fn leader(&self) -> Option<(usize, u64)> {
        let row = self.lease_row().await.ok()??;
        row.live
            .then(|| self.index_of(&row.address).map(|i| (i, row.epoch)))
            .flatten()
    }

    /// Waits until a replica that `accept`s (index, epoch) holds a live lease.
    pub async fn wait_leader(
        &self,
        within: Duration,
        accept: impl Fn(usize, u64) -> bool,
    ) -> anyhow::Result<(usize, u64)> {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            match self.lease_row().await {
                Ok(Some(row)) => {
                    if let Some(i) = self.index_of(&row.address)
                        && row.live
                        && accept(i, row.epoch)
                    {
                        return Ok((i, row.epoch));
                    }
                    last = Some(format!("{row:?}"));
                }
                Ok(None) => last = Some("no lease row yet".into()),
                Err(e) => last = Some(format!("{e:#}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "no replica led as wanted within {within:?}; last: {}\n{}",
            last.unwrap_or_default(),
            self.tails(5)
        )
    }

    /// The last `n` lines of every replica's log, for a failure message.
    pub fn tails(&self, n: usize) -> String {
        let mut out = String::new();
        for e in self.procs.events() {
            out.push_str(&e);
            out.push('\n');
        }
        for r in &self.members {
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("replica {} ({}):\n", r.index, r.log.display()));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str("    ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// SIGKILL of the replica that leads now.
    pub async fn kill_leader(&self) -> anyhow::Result<Killed> {
        let row = self
            .lease_row()
            .await?
            .filter(|r| r.live)
            .context("no replica leads: nothing to kill")?;
        let index = self
            .index_of(&row.address)
            .with_context(|| format!("the lease names {}, none of ours", row.address))?;
        let (epoch, remaining) = (row.epoch, row.remaining);
        let at = record::now();
        anyhow::ensure!(
            self.members[index].proc.kill(),
            "replica {index} (the leader) has no process to kill"
        );
        self.procs.event(format_args!(
            "kill -9 replica {index}, the leader (epoch {epoch})"
        ));
        Ok(Killed {
            index,
            epoch,
            at,
            remaining,
        })
    }

    /// Waits until some replica's log says it won the lease with an epoch
    /// above `above`: (replica, epoch, when).
    pub async fn wait_won(
        &self,
        above: u64,
        within: Duration,
    ) -> anyhow::Result<(usize, u64, f64)> {
        let deadline = Instant::now() + within;
        loop {
            let won = self
                .members
                .iter()
                .flat_map(|r| {
                    r.leases_won()
                        .into_iter()
                        .map(move |(at, e)| (r.index, e, at))
                })
                .filter(|(_, e, _)| *e > above)
                .min_by_key(|(_, e, _)| *e);
            if let Some(w) = won {
                return Ok(w);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no replica won the lease with an epoch above {above} within {within:?}\n{}",
                    self.tails(4)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every action every replica sent, in time order.
    pub fn sends(&self) -> Vec<Act> {
        let mut all: Vec<Act> = self.members.iter().flat_map(Replica::sends).collect();
        all.sort_by(|a, b| a.at.total_cmp(&b.at));
        all
    }
}
