//! `certs init | issue | revoke | crl`: the certificate lifecycle.
//!
//! `revoke` talks to a running server when one is named (`--server` or
//! ROLLCALL_SERVER: the admin RPC, enforced at once) and otherwise writes
//! the server's store itself (`--data-dir`, or the config's `data_dir`),
//! which a running server picks up within `revoke::POLL_EVERY`.
//! `issue --force` revokes the certificate it replaces the same offline way.

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use rollcall_proto::identity::{Identity, Role};
use rollcall_proto::text::for_terminal;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::client::ConnectArgs;
use super::{CliError, status_error};
use crate::config::{self, ServerConfig};
use crate::pki;
use crate::revoke::{self, MAX_REASON_BYTES, Revocation, Serial};
use crate::store::{Backend, Store, pg};

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// Where the server keeps its data, for what is done offline.
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// The server's data directory (its rollcall.db) [default: the config's data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's configuration file, for its data_dir and pki directory
    /// [default: /etc/rollcall/server.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Which certificates to revoke.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Every certificate of this node's agent the server knows.
    #[arg(long, value_name = "NODE")]
    pub agent: Option<String>,
    /// Every certificate of this operator the server knows.
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// One certificate, by its serial number in hex (openssl x509 -noout -serial).
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA and a server certificate (for localhost, 127.0.0.1 and every --san).
    Init {
        /// Directory for ca.crt, ca.key, server.crt, server.key, agents/, operators/.
        #[arg(long)]
        pki: PathBuf,
        /// Another DNS name or IP address agents use to reach the server.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
    /// Issue an agent certificate (agents/NODE.crt) or an operator certificate (operators/NAME.crt).
    ///
    /// An operator certificate carries one role, signed in by the CA: viewer (read and watch
    /// everything), operator (also plan, start, pause, resume, cancel and undrain campaigns) or
    /// admin (also forget nodes and manage certificates). Without --role it is operator.
    Issue {
        #[arg(long)]
        pki: PathBuf,
        /// The node's name; the agent with this certificate reports as this node.
        #[arg(
            long,
            value_name = "NODE",
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        agent: Option<String>,
        /// The operator's name, recorded in the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
        /// What the operator may do: viewer, operator or admin (see above) [default: operator].
        #[arg(
            long,
            value_name = "ROLE",
            conflicts_with = "agent",
            value_parser = PossibleValuesParser::new(Role::ALL.map(Role::as_str))
                .try_map(|s| s.parse::<Role>()),
        )]
        role: Option<Role>,
        /// Replace an existing certificate and key of that name, and revoke the
        /// replaced certificate in the server's store (--data-dir or --config).
        #[arg(long)]
        force: bool,
        /// Days the certificate is valid [default: 30 for an agent (it renews its own), 398 for an operator].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: Option<u32>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke certificates: refused at their next connection, their open
    /// sessions and watches cut. Through a running server (--server or
    /// ROLLCALL_SERVER, an admin's certificate), or offline in its data
    /// directory (a running server picks it up within seconds).
    Revoke {
        #[command(flatten)]
        target: Target,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        /// Offline: the pki directory whose agents/ and operators/ hold the
        /// certificate to revoke by name [default: the directory of the
        /// config's tls.ca].
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// A running server to revoke through (replicas: each one's, comma-separated or repeated) [default: offline].
        #[arg(long, env = "ROLLCALL_SERVER", value_delimiter = ',')]
        server: Vec<String>,
        /// CA certificate that signed the server's certificate.
        #[arg(long, env = "ROLLCALL_CA")]
        ca: Option<PathBuf>,
        /// Admin certificate.
        #[arg(long, env = "ROLLCALL_CERT")]
        cert: Option<PathBuf>,
        /// Admin private key.
        #[arg(long, env = "ROLLCALL_KEY")]
        key: Option<PathBuf>,
        /// One JSON object per revoked certificate, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Write a standard X.509 CRL of every revoked certificate, signed by the CA.
    Crl {
        /// The pki directory (its ca.crt and ca.key sign the CRL).
        #[arg(long)]
        pki: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Where to write the CRL (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn pki_err(e: pki::PkiError) -> CliError {
    match e {
        pki::PkiError::Io { .. } | pki::PkiError::Generate(_) => CliError::Runtime(e.to_string()),
        _ => CliError::Usage(e.to_string()),
    }
}

pub async fn run(cmd: CertsCommand) -> Result<(), CliError> {
    match cmd {
        CertsCommand::Init { pki: dir, sans } => {
            let written = pki::init(&dir, &sans).map_err(pki_err)?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
        CertsCommand::Issue {
            pki: dir,
            agent,
            operator,
            role,
            force,
            days,
            data,
        } => offline(|| issue(&dir, agent, operator, role, force, days, &data)),
        CertsCommand::Revoke {
            target,
            reason,
            pki,
            data,
            server,
            ca,
            cert,
            key,
            json,
        } => {
            if reason.len() > MAX_REASON_BYTES {
                return Err(CliError::Usage(format!(
                    "--reason is {} bytes long; at most {MAX_REASON_BYTES} are kept",
                    reason.len()
                )));
            }
            let revoked = if server.is_empty() {
                offline(|| revoke_offline(target, reason, pki, &data))?
            } else {
                let connect = ConnectArgs {
                    server,
                    ca,
                    cert,
                    key,
                };
                revoke_online(&connect, target, reason).await?
            };
            print_revoked(&revoked, json);
            Ok(())
        }
        CertsCommand::Crl {
            pki: dir,
            data,
            out,
        } => offline(|| crl(&dir, &data, &out)),
    }
}

/// Runs an offline command, which may block on the store (PostgreSQL's
/// client waits on a runtime of its own), off the async runtime's hands.
fn offline<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn issue(
    dir: &Path,
    agent: Option<String>,
    operator: Option<String>,
    role: Option<Role>,
    force: bool,
    days: Option<u32>,
    data: &DataArgs,
) -> Result<(), CliError> {
    let who = match (agent, operator) {
        (Some(name), None) => Identity::agent(name),
        (None, Some(name)) => Identity::operator(name, role.unwrap_or(Role::Operator)),
        _ => {
            return Err(CliError::Usage(
                "pass exactly one of --agent NODE or --operator NAME".into(),
            ));
        }
    };
    // Revoked before the new one is written: if the store cannot take the
    // revocation, nothing changes and the old certificate is not left
    // valid beside a new one. Replaced are the pki directory's file and
    // every certificate the server signed for the name (renewals).
    if force {
        let old = revoke::serial_in_pki(dir, &who);
        match open_store(data) {
            Ok((mut store, _)) => {
                let known = signed_serials(store.as_mut(), &who)?;
                for serial in revoke::serials_of(&who, Some(dir), known) {
                    store
                        .revoke(&Revocation {
                            serial,
                            identity: Some(who.uri()),
                            reason: "replaced by a new certificate".into(),
                            at: Timestamp::now(),
                            by: revoke::BY_CERTS_ISSUE_FORCE.into(),
                        })
                        .map_err(|e| CliError::Runtime(e.to_string()))?;
                }
            }
            // No store and no old file: nothing is known to replace.
            Err(_) if old.is_none() => {}
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "--force revokes the certificate it replaces (serial {}) in the server's store: {e}",
                    old.map(|s| s.to_string()).unwrap_or_default()
                )));
            }
        }
    }
    let (crt, key) = match days {
        Some(days) => pki::issue_valid(dir, &who, force, pki::days(days)),
        None => pki::issue(dir, &who, force),
    }
    .map_err(pki_err)?;
    println!("{}\n{}", crt.display(), key.display());
    Ok(())
}

/// The serials of every certificate the server signed for `who`'s name
/// (under each role, for an operator).
fn signed_serials(store: &mut dyn Backend, who: &Identity) -> Result<Vec<Serial>, CliError> {
    let mut serials = Vec::new();
    for uri in revoke::uris_of(who) {
        serials.extend(store.serials_signed_for(&uri).map_err(|e| {
            CliError::Runtime(format!(
                "cannot read the certificates the server signed for {uri}, so nothing is revoked: {e}"
            ))
        })?);
    }
    Ok(serials)
}

impl DataArgs {
    /// The server's configuration as far as offline commands need it: the
    /// file (given, or the default one if it exists) with `--data-dir` on
    /// top; `None` when nothing says where the data is.
    fn resolve(&self) -> Result<Option<ServerConfig>, CliError> {
        let usage = |e: config::ConfigError| CliError::Usage(e.to_string());
        let mut cfg = match &self.config {
            Some(path) => Some(ServerConfig::load(path).map_err(usage)?),
            None if Path::new(config::DEFAULT_PATH).exists() => {
                Some(ServerConfig::load(config::DEFAULT_PATH.as_ref()).map_err(usage)?)
            }
            None => None,
        };
        if let Some(dir) = &self.data_dir {
            cfg.get_or_insert_with(ServerConfig::default).data_dir = dir.clone();
        }
        Ok(cfg)
    }
}

/// The server's store, opened from another process, and its
/// configuration: SQLite in `data_dir` (SQLite orders the writes), or the
/// replicas' PostgreSQL with `[store] url` (revocations are only ever
/// added, first one standing, so the writes need no lease; the leader
/// polls for them). The data directory must exist: a typo must not start
/// a new, empty fleet somewhere else.
fn open_store(data: &DataArgs) -> Result<(Box<dyn Backend>, ServerConfig), String> {
    let cfg = data
        .resolve()
        .map_err(|e| e.to_string())?
        .ok_or("say where the server keeps its data: pass --data-dir DIR or --config FILE")?;
    if cfg.store.url.is_some() {
        let target = pg::Target::new(&cfg.store).map_err(|e| e.to_string())?;
        let store = pg::PgStore::open(&target, crate::replica::Fence::unfenced())
            .map_err(|e| e.to_string())?;
        return Ok((Box::new(store), cfg));
    }
    if !cfg.data_dir.is_dir() {
        return Err(format!(
            "data directory {} does not exist; pass the server's --data-dir",
            cfg.data_dir.display()
        ));
    }
    let store = Store::open(&cfg.data_dir).map_err(|e| e.to_string())?;
    Ok((Box::new(store), cfg))
}

pub(super) async fn revoke_online(
    connect: &ConnectArgs,
    target: Target,
    reason: String,
) -> Result<Vec<Revocation>, CliError> {
    use v1::revoke_request::Target as Wire;
    let target = match (target.agent, target.operator, target.serial) {
        (Some(n), _, _) => Wire::Agent(n),
        (_, Some(n), _) => Wire::Operator(n),
        (_, _, Some(s)) => Wire::Serial(s),
        _ => {
            return Err(CliError::Usage(
                "pass --agent, --operator or --serial".into(),
            ));
        }
    };
    let answer = connect
        .revocations()
        .await?
        .revoke(v1::RevokeRequest {
            target: Some(target),
            reason,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    answer
        .revoked
        .into_iter()
        .map(|r| {
            Ok(Revocation {
                serial: Serial::parse(&r.serial)
                    .map_err(|e| CliError::Runtime(format!("the server answered with {e}")))?,
                identity: (!r.identity.is_empty()).then_some(r.identity),
                reason: r.reason,
                at: r
                    .revoked_at
                    .as_ref()
                    .map(rollcall_proto::convert::timestamp_from_wire)
                    .unwrap_or_default(),
                by: r.revoked_by,
            })
        })
        .collect()
}

fn revoke_offline(
    target: Target,
    reason: String,
    pki: Option<PathBuf>,
    data: &DataArgs,
) -> Result<Vec<Revocation>, CliError> {
    let (mut store, cfg) = open_store(data).map_err(|e| {
        CliError::Usage(format!(
            "no --server given, so revoking offline, but {e} (or pass --server URL)"
        ))
    })?;
    let (serials, identity) = match (target.agent, target.operator, target.serial) {
        (_, _, Some(serial)) => (
            vec![Serial::parse(&serial).map_err(|e| CliError::Usage(e.to_string()))?],
            None,
        ),
        (agent, operator, None) => {
            let who = match (agent, operator) {
                (Some(name), _) => Identity::agent(name),
                // The pki file is found by name whatever the role.
                (_, Some(name)) => Identity::operator(name, Role::Operator),
                _ => {
                    return Err(CliError::Usage(
                        "pass --agent, --operator or --serial".into(),
                    ));
                }
            };
            rollcall_proto::identity::validate_name(&who.name).map_err(CliError::Usage)?;
            let pki = pki.or_else(|| {
                cfg.tls
                    .ca
                    .as_deref()
                    .and_then(Path::parent)
                    .map(Path::to_owned)
            });
            let signed = signed_serials(store.as_mut(), &who)?;
            let serials = revoke::serials_of(&who, pki.as_deref(), signed);
            if serials.is_empty() {
                return Err(CliError::Runtime(format!(
                    "no certificate of {who} found among those the server signed{}; pass --pki DIR, or --serial HEX",
                    pki.map(|p| format!(" in {}", p.display()))
                        .unwrap_or_default()
                )));
            }
            (serials, Some(who.uri()))
        }
    };
    let at = Timestamp::now();
    serials
        .into_iter()
        .map(|serial| {
            store
                .revoke(&Revocation {
                    serial,
                    identity: identity.clone(),
                    reason: reason.clone(),
                    at,
                    by: revoke::BY_CERTS_REVOKE.into(),
                })
                .map_err(|e| CliError::Runtime(e.to_string()))
        })
        .collect()
}

#[derive(serde::Serialize)]
struct RevokedLine<'a> {
    serial: &'a str,
    identity: Option<&'a str>,
    reason: &'a str,
    revoked_at: Timestamp,
    revoked_by: &'a str,
}

pub(super) fn print_revoked(revoked: &[Revocation], json: bool) {
    for r in revoked {
        if json {
            let line = RevokedLine {
                serial: r.serial.as_str(),
                identity: r.identity.as_deref(),
                reason: &r.reason,
                revoked_at: r.at,
                revoked_by: &r.by,
            };
            println!(
                "{}",
                serde_json::to_string(&line).expect("strings and a timestamp serialize")
            );
        } else {
            println!("{}", for_terminal(&r.describe()));
        }
    }
}

fn crl(dir: &Path, data: &DataArgs, out: &Path) -> Result<(), CliError> {
    let (mut store, _) = open_store(data).map_err(CliError::Usage)?;
    let revoked: Vec<Revocation> = store
        .revocations_since(0)
        .map_err(|e| CliError::Runtime(e.to_string()))?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let ca = pki::Ca::load(dir).map_err(pki_err)?;
    let pem = revoke::crl_pem(&ca, &revoked, time::OffsetDateTime::now_utc())
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    pki::write_file(out, &pem, false).map_err(pki_err)?;
    println!("{} ({} revoked)", out.display(), revoked.len());
    Ok(())
}
