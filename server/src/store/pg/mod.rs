//! The fleet's state in PostgreSQL, shared by several replicas of which
//! one leads (see `crate::replica`).
//!
//! The same tables, the same writes and the same durability as SQLite: a
//! write returns `Ok` once PostgreSQL committed it. Every write the leader
//! makes first locks the lease row `FOR KEY SHARE` and checks that it
//! still holds it, with its epoch, and that the lease has not ended by
//! PostgreSQL's clock: a deposed leader's write fails instead of landing,
//! and a takeover (which locks the row `FOR UPDATE`) waits for a write
//! under way, while a renewal (which changes no key) does not.

mod load;
mod schema;
pub mod tls;

use std::time::Duration;

use postgres::Client;
use rollcall_proto::model::ActionResult;
use rollcall_proto::timestamp::Timestamp;

use super::{NodeWrite, SignedCertificate, StoreError, encode};
use crate::audit::AuditRecord;
use crate::campaign::record::CampaignWrite;
use crate::config::StoreConfig;
use crate::replica::Fence;
use crate::revoke::{Revocation, Serial};

/// Where a PostgreSQL store is, as it may be shown: the URL's hosts,
/// ports and database, never its user's password.
#[derive(Clone, Debug)]
pub struct Target {
    config: tokio_postgres::Config,
    shown: String,
    tls: tls::MakeRustls,
}

impl Target {
    /// Parses `[store]`: the URL and the TLS files.
    pub fn new(store: &StoreConfig) -> Result<Target, StoreError> {
        let url = store.url.as_deref().unwrap_or_default();
        let mut config = parse(url).map_err(StoreError::Config)?;
        // A CA given means TLS is wanted: never fall back to plain text
        // because the server declined (tokio-postgres' default, `prefer`).
        if store.ca.is_some() && !url.contains("sslmode=") {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let shown = show(&config);
        let tls = tls::MakeRustls::new(
            store.ca.as_deref(),
            store.cert.as_deref(),
            store.key.as_deref(),
        )
        .map_err(|e| StoreError::Config(format!("[store] TLS: {e}")))?;
        Ok(Target { config, shown, tls })
    }

    /// Has PostgreSQL end a session of this target that sits idle inside a
    /// transaction for `after` (`idle_in_transaction_session_timeout`).
    /// Every write holds the lease row `FOR KEY SHARE` until it commits: a
    /// leader cut off in the middle of one would otherwise keep that lock,
    /// and with it every follower from the lease, for as long as
    /// PostgreSQL believes the dead connection lives (hours, with default
    /// keepalives). A URL's own `options` are kept.
    pub fn ending_idle_transactions_after(mut self, after: Duration) -> Target {
        let setting = format!(
            "-c idle_in_transaction_session_timeout={}",
            after.as_millis().max(1)
        );
        let options = match self.config.get_options() {
            Some(own) if !own.is_empty() => format!("{own} {setting}"),
            _ => setting,
        };
        self.config.options(&options);
        self
    }

    /// `postgres://user@host:port/db`, without a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A new connection named `application_name` (what `pg_stat_activity`
    /// shows). A peer that stops answering fails its queries within about
    /// `dead_after` instead of hanging: TCP keepalives and a user timeout.
    pub async fn connect_async(
        &self,
        application_name: &str,
        dead_after: Duration,
    ) -> Result<tokio_postgres::Client, StoreError> {
        let config = self.tuned(application_name, dead_after);
        let (client, connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|e| pg_error(self, e))?;
        tokio::spawn(async move {
            // Ends with the client; its error shows in the client's next
            // query, which is where it is handled.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A blocking connection, for the writer thread and the tools.
    pub fn connect(
        &self,
        application_name: &str,
        dead_after: Duration,
    ) -> Result<Client, StoreError> {
        postgres::Config::from(self.tuned(application_name, dead_after))
            .connect(self.tls.clone())
            .map_err(|e| pg_error(self, e))
    }

    fn tuned(&self, application_name: &str, dead_after: Duration) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        // PostgreSQL's side of the same: a session whose client died in
        // the middle of a transaction (power loss, a cut network) must not
        // hold the lease row's lock until the kernel gives up on it (two
        // hours by default): its own keepalives and user timeout end it,
        // an idle transaction ends after `dead_after`, and a lock is never
        // waited for longer than half of it.
        // Settings given later win: the target's own (a URL's `options`,
        // `ending_idle_transactions_after`) come after these defaults.
        let ms = dead_after.as_millis();
        let defaults = format!(
            "-c idle_in_transaction_session_timeout={ms} -c lock_timeout={} \
             -c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout={ms}",
            ms / 2
        );
        config.options(&match self.config.get_options() {
            Some(own) if !own.is_empty() => format!("{defaults} {own}"),
            _ => defaults,
        });
        config
            .application_name(application_name)
            .connect_timeout(dead_after)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(2))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(dead_after);
        config
    }
}

/// Whether `url` is a PostgreSQL URL this server can use; the error never
/// quotes the URL (it may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    parse(url).map(|_| ())
}

fn parse(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "must be a postgres:// URL, e.g. postgres://rollcall@db.example.org:5432/rollcall"
                .into(),
        );
    }
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("cannot be read as a PostgreSQL URL ({e})"))?;
    if config.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    // An unescaped `@` in a password ends the user part early, and the
    // rest of the password would be taken (and shown) as a host name.
    if config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(h) if h.contains('@')))
    {
        return Err("has an `@` after the user part: write an `@` in the password as %40".into());
    }
    if config.get_user().is_none() {
        return Err("names no user (postgres://USER@HOST/DB)".into());
    }
    if config.get_dbname().is_none() {
        return Err("names no database (postgres://USER@HOST/DB)".into());
    }
    Ok(config)
}

fn show(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// A PostgreSQL error as one line: the server's own message when it sent
/// one, with where it went wrong.
pub(crate) fn pg_error(target: &Target, e: postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut line = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                line = format!("{line}: {s}");
                source = s.source();
            }
            line
        }
    };
    StoreError::Postgres {
        target: target.shown.clone(),
        message,
    }
}

/// How long a connection may go unanswered before its query fails.
const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Connects once and brings the schema up to date (before any replica
/// looks at the lease row, which the schema makes). Blocking.
pub fn prepare(target: &Target) -> Result<(), StoreError> {
    let mut client = target.connect("rollcall-migrate", DEAD_AFTER)?;
    schema::apply(&mut client, target)
}

/// The store in PostgreSQL, as the writer thread uses it.
pub struct PgStore {
    target: Target,
    client: Client,
    /// The lease every write must still hold (unfenced: the migration
    /// tool, which refuses to run while a replica leads).
    fence: Fence,
}

impl PgStore {
    /// Connects, and brings the schema up to date.
    pub fn open(target: &Target, fence: Fence) -> Result<PgStore, StoreError> {
        let mut client = target.connect("rollcall-store", DEAD_AFTER)?;
        schema::apply(&mut client, target)?;
        Ok(PgStore {
            target: target.clone(),
            client,
            fence,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection that broke (PostgreSQL restarted, failed over) is
    /// made again before the next write; the write fails if it cannot be.
    fn ready(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            tracing::warn!(store = %self.target.shown(), "The connection to PostgreSQL was lost; connecting again.");
            self.client = self.target.connect("rollcall-store", DEAD_AFTER)?;
        }
        Ok(())
    }

    /// A transaction that holds the lease row (key share) after checking that
    /// this replica still leads with its epoch; every write runs in one.
    fn fenced(&mut self) -> Result<postgres::Transaction<'_>, StoreError> {
        // A replica that may no longer act does not even reconnect.
        let fence = self.fence.clone();
        if !fence.valid() {
            return Err(StoreError::Deposed {
                epoch: fence.epoch(),
            });
        }
        self.ready()?;
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.client.transaction().map_err(err)?;
        if let Some((holder, epoch)) = fence.lease_row() {
            let held = tx
                .query_opt(
                    "SELECT 1 FROM leader WHERE id = 1 AND holder = $1 AND epoch = $2
                     AND expires_at > now() FOR KEY SHARE",
                    &[&holder, &epoch],
                )
                .map_err(err)?;
            if held.is_none() {
                fence.revoke();
                return Err(StoreError::Deposed {
                    epoch: fence.epoch(),
                });
            }
        }
        Ok(tx)
    }
}

/// PostgreSQL's text cannot hold NUL; JSON escapes it, plain columns drop it.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "").into()
    } else {
        s.into()
    }
}

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

const PUT_ACTION: &str =
    "INSERT INTO actions (id, node, state, updated_ms, result) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET node = excluded.node, state = excluded.state,
       updated_ms = excluded.updated_ms, result = excluded.result
     WHERE actions.state NOT IN ('succeeded', 'failed', 'rejected')";

impl super::Backend for PgStore {
    fn put_action(&mut self, result: &ActionResult) -> Result<(), StoreError> {
        let json = encode(|| format!("action {}", result.id), result)?;
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        tx.execute(
            PUT_ACTION,
            &[
                &text(&result.id),
                &text(&result.node),
                &result.state.as_str(),
                &now_ms(),
                &json,
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn write_campaign(&mut self, w: &CampaignWrite) -> Result<(), StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        if let Some(c) = &w.campaign {
            let json = encode(|| format!("campaign {}", c.id), c)?;
            tx.execute(
                "INSERT INTO campaigns (id, created_ms, phase, campaign) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, campaign = excluded.campaign",
                &[&text(&c.id), &c.created_at.unix_millis(), &c.phase.as_str(), &json],
            )
            .map_err(err)?;
        }
        for (campaign, run) in &w.nodes {
            let json = encode(|| format!("campaign {campaign} node {}", run.node), run)?;
            tx.execute(
                "INSERT INTO campaign_nodes (campaign, node, step, run) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (campaign, node) DO UPDATE SET step = excluded.step, run = excluded.run",
                &[&text(campaign), &text(&run.node), &run.step.as_str(), &json],
            )
            .map_err(err)?;
        }
        for issued in &w.actions {
            let json = encode(|| format!("action {}", issued.id), issued)?;
            tx.execute(
                "INSERT INTO actions (id, node, state, updated_ms, result) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &text(&issued.id),
                    &text(&issued.node),
                    &issued.state.as_str(),
                    &now_ms(),
                    &json,
                ],
            )
            .map_err(err)?;
        }
        for entry in &w.audit {
            let json = encode(
                || format!("an audit entry of campaign {}", entry.campaign),
                entry,
            )?;
            tx.execute(
                "INSERT INTO audit (campaign, at_ms, entry) VALUES ($1, $2, $3)",
                &[&text(&entry.campaign), &entry.at.unix_millis(), &json],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn write_nodes(
        &mut self,
        batch: &mut dyn Iterator<Item = &NodeWrite>,
    ) -> Result<usize, StoreError> {
        let target = self.target.clone();
        let mut tx = self.fenced()?;
        let mut n = 0;
        let mut chunk: Vec<&NodeWrite> = Vec::with_capacity(NODE_CHUNK);
        loop {
            chunk.clear();
            chunk.extend((&mut *batch).take(NODE_CHUNK));
            if chunk.is_empty() {
                break;
            }
            n += write_node_chunk(&mut tx, &target, &chunk)?;
        }
        tx.commit().map_err(|e| pg_error(&target, e))?;
        Ok(n)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        tx.execute(
            "INSERT INTO probe (id, at_ms) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
            &[&now_ms()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn revoke(&mut self, r: &Revocation) -> Result<Revocation, StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        // One writer at a time: a sequence number is taken at the insert
        // and seen at the commit, so two writers committing out of order
        // would let the leader's poll (`seq > last`) step over one.
        tx.batch_execute("LOCK TABLE revocations IN SHARE ROW EXCLUSIVE MODE")
            .map_err(err)?;
        tx.execute(
            "INSERT INTO revocations (serial, identity, reason, at_ms, revoked_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (serial) DO NOTHING",
            &[
                &r.serial.as_str(),
                &text(r.identity.as_deref().unwrap_or("")),
                &text(&r.reason),
                &r.at.unix_millis(),
                &text(&r.by),
            ],
        )
        .map_err(err)?;
        let stored = tx
            .query_opt(
                &format!("SELECT {REVOCATION} FROM revocations WHERE serial = $1"),
                &[&r.serial.as_str()],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(stored
            .and_then(|row| revocation(&row))
            .map(|(_, r)| r)
            .unwrap_or_else(|| r.clone()))
    }

    fn revocations_since(&mut self, seq: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
        self.ready()?;
        let rows = self
            .client
            .query(
                &format!("SELECT {REVOCATION} FROM revocations WHERE seq > $1 ORDER BY seq"),
                &[&seq],
            )
            .map_err(|e| pg_error(&self.target, e))?;
        Ok(rows.iter().filter_map(revocation).collect())
    }

    fn record_certificate(&mut self, cert: &SignedCertificate) -> Result<(), StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        tx.execute(
            "INSERT INTO certificates (serial, identity, issued_ms, not_after_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO NOTHING",
            &[
                &cert.serial.as_str(),
                &text(&cert.identity),
                &cert.issued.unix_millis(),
                &cert.not_after.unix_millis(),
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn serials_signed_for(&mut self, identity: &str) -> Result<Vec<Serial>, StoreError> {
        self.ready()?;
        let rows = self
            .client
            .query(
                "SELECT serial FROM certificates WHERE identity = $1 ORDER BY serial",
                &[&text(identity)],
            )
            .map_err(|e| pg_error(&self.target, e))?;
        let mut serials: Vec<Serial> = rows
            .iter()
            .filter_map(|row| {
                let s: String = row.get(0);
                Serial::parse(&s).ok()
            })
            .collect();
        serials.sort();
        Ok(serials)
    }

    fn forget_node(&mut self, node: &str, audit: &AuditRecord) -> Result<u64, StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        tx.execute("DELETE FROM node_sections WHERE node = $1", &[&node])
            .map_err(err)?;
        tx.execute("DELETE FROM nodes WHERE name = $1", &[&node])
            .map_err(err)?;
        let seq = insert_audit(&mut tx, audit).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(seq)
    }

    fn record_audit(&mut self, audit: &AuditRecord) -> Result<u64, StoreError> {
        let target = self.target.clone();
        let err = |e| pg_error(&target, e);
        let mut tx = self.fenced()?;
        let seq = insert_audit(&mut tx, audit).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(seq)
    }

    fn read_audit(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.ready()?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "SELECT seq, at_ms, who, role, action, target, detail FROM operator_audit
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .map_err(|e| pg_error(&self.target, e))?;
        let mut lines = Vec::new();
        for row in rows {
            let seq: i64 = row.get(0);
            let action: String = row.get(4);
            let Ok(action) = action.parse() else {
                tracing::warn!(seq, action = %action.escape_debug(), "An operator audit line names an unknown action; skipped.");
                continue;
            };
            lines.push(AuditRecord {
                seq: u64::try_from(seq).unwrap_or(0),
                at: Timestamp::from_unix_millis(row.get(1)),
                who: row.get(2),
                role: row.get(3),
                action,
                target: row.get(5),
                detail: row.get(6),
            });
        }
        Ok(lines)
    }

    fn each_node(&mut self, each: &mut dyn FnMut(super::StoredNode)) -> Result<(), StoreError> {
        self.ready()?;
        load::each_node(&mut self.client, &self.target, each)
    }

    fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError> {
        self.ready()?;
        load::actions(&mut self.client, &self.target)
    }

    fn load_campaigns(&mut self) -> Result<Vec<super::StoredCampaign>, StoreError> {
        self.ready()?;
        load::campaigns(&mut self.client, &self.target)
    }

    fn describe(&self) -> String {
        self.target.shown().to_owned()
    }
}

/// Nodes per statement: about 160 round trips for 10,000 nodes, and a
/// statement's JSON (a kolla node's sections are about 40 KB) and the
/// client's encoding of it stay near 3 MB, never the whole fleet's (the
/// client keeps its buffer at the largest statement's size: with 256 nodes
/// a statement the server's RSS at 10,000 agents was 553 MiB, with the
/// whole fleet in one, 848).
const NODE_CHUNK: usize = 64;

/// One statement per table for `chunk` (arrays unnested). Returns how many
/// nodes it wrote.
fn write_node_chunk(
    tx: &mut postgres::Transaction<'_>,
    target: &Target,
    chunk: &[&NodeWrite],
) -> Result<usize, StoreError> {
    let err = |e| pg_error(target, e);
    let mut names = Vec::new();
    let mut roles = Vec::new();
    let mut online = Vec::new();
    let mut seen = Vec::new();
    let mut records = Vec::new();
    let (mut put_node, mut put_section, mut put_data) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drop_node, mut drop_section) = (Vec::new(), Vec::new());
    for item in chunk {
        let record = match encode(|| format!("node {}", item.node.name), &item.node) {
            Ok(json) => json,
            Err(e) => {
                // Keep what is stored rather than write what cannot be
                // read back; the node's next change tries again.
                tracing::error!(node = %item.node.name, error = %e, "A node record cannot be written.");
                continue;
            }
        };
        let name = text(&item.node.name).into_owned();
        for section in &item.sections {
            match section.json(&item.node.name) {
                Ok(Some(json)) => {
                    put_node.push(name.clone());
                    put_section.push(section.name());
                    put_data.push(json);
                }
                Ok(None) => {
                    drop_node.push(name.clone());
                    drop_section.push(section.name());
                }
                Err(e) => {
                    tracing::error!(node = %item.node.name, section = section.name(), error = %e, "A report section cannot be written.");
                }
            }
        }
        names.push(name);
        roles.push(item.node.role.as_str());
        online.push(item.node.online);
        seen.push(item.node.last_seen.unix_millis());
        records.push(record);
    }
    if !names.is_empty() {
        tx.execute(
            "INSERT INTO nodes (name, role, online, last_seen_ms, node)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::int8[], $5::text[])
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, online = excluded.online,
               last_seen_ms = excluded.last_seen_ms, node = excluded.node",
            &[&names, &roles, &online, &seen, &records],
        )
        .map_err(err)?;
    }
    if !put_node.is_empty() {
        tx.execute(
            "INSERT INTO node_sections (node, section, data)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
             ON CONFLICT (node, section) DO UPDATE SET data = excluded.data",
            &[&put_node, &put_section, &put_data],
        )
        .map_err(err)?;
    }
    if !drop_node.is_empty() {
        tx.execute(
            "DELETE FROM node_sections WHERE (node, section) IN
             (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            &[&drop_node, &drop_section],
        )
        .map_err(err)?;
    }
    Ok(names.len())
}

const REVOCATION: &str = "seq, serial, identity, reason, at_ms, revoked_by";

fn revocation(row: &postgres::Row) -> Option<(i64, Revocation)> {
    let seq: i64 = row.get(0);
    let serial: String = row.get(1);
    let Ok(serial) = Serial::parse(&serial) else {
        tracing::error!(seq, serial = %rollcall_proto::text::Untrusted(&serial), "A stored revocation names no serial number; it is ignored.");
        return None;
    };
    let identity: String = row.get(2);
    Some((
        seq,
        Revocation {
            serial,
            identity: (!identity.is_empty()).then_some(identity),
            reason: row.get(3),
            at: Timestamp::from_unix_millis(row.get(4)),
            by: row.get(5),
        },
    ))
}

fn insert_audit(
    tx: &mut postgres::Transaction<'_>,
    a: &AuditRecord,
) -> Result<u64, postgres::Error> {
    let row = tx.query_one(
        "INSERT INTO operator_audit (at_ms, who, role, action, target, detail)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        &[
            &a.at.unix_millis(),
            &text(&a.who),
            &text(&a.role),
            &a.action.as_str(),
            &text(&a.target),
            &text(&a.detail),
        ],
    )?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::new(&StoreConfig {
            url: Some(url.to_owned()),
            ..StoreConfig::default()
        })
        .expect("a valid URL")
    }

    #[test]
    fn idle_transactions_end_after_the_given_time_and_a_urls_own_options_stay() {
        let t = target("postgres://rollcall@db:5432/rollcall")
            .ending_idle_transactions_after(Duration::from_millis(5_000));
        assert_eq!(
            t.config.get_options(),
            Some("-c idle_in_transaction_session_timeout=5000")
        );
        let t = target("postgres://rollcall@db:5432/rollcall?options=-c%20search_path%3Drc")
            .ending_idle_transactions_after(Duration::from_millis(2_000));
        assert_eq!(
            t.config.get_options(),
            Some("-c search_path=rc -c idle_in_transaction_session_timeout=2000")
        );
    }
}
