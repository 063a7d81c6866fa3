//! `rollcall-server store migrate`: moves one server's SQLite database to
//! PostgreSQL, for replicas.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::config::StoreConfig;
use crate::store::{Store, migrate, pg};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy an installation's SQLite database into an empty PostgreSQL
    /// database (stop the server first; nothing is changed in DATA_DIR).
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data directory holding rollcall.db.
    #[arg(long, value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// postgres://USER@HOST[:PORT]/DB: an empty database (a password in it
    /// is never printed; ROLLCALL_STORE_URL keeps it out of `ps`).
    #[arg(
        long,
        value_name = "URL",
        env = "ROLLCALL_STORE_URL",
        hide_env_values = true
    )]
    pub to: String,
    /// PostgreSQL's CA, as `[store] ca`.
    #[arg(long, value_name = "FILE")]
    pub pg_ca: Option<PathBuf>,
    /// A client certificate for PostgreSQL, as `[store] cert`.
    #[arg(long, value_name = "FILE", requires = "pg_key")]
    pub pg_cert: Option<PathBuf>,
    /// Its key, as `[store] key`.
    #[arg(long, value_name = "FILE", requires = "pg_cert")]
    pub pg_key: Option<PathBuf>,
}

pub async fn run(command: StoreCommand) -> Result<(), CliError> {
    let StoreCommand::Migrate(args) = command;
    pg::check_url(&args.to).map_err(|e| CliError::Usage(format!("--to: {e}")))?;
    let db = args.from.join(crate::store::DB_FILE);
    if !db.is_file() {
        return Err(CliError::Usage(format!(
            "--from: {} has no {}: name the data_dir of the server to migrate",
            args.from.display(),
            crate::store::DB_FILE
        )));
    }
    let store = StoreConfig {
        url: Some(args.to.clone()),
        ca: args.pg_ca.clone(),
        cert: args.pg_cert.clone(),
        key: args.pg_key.clone(),
        ..StoreConfig::default()
    };
    let target = pg::Target::new(&store).map_err(|e| CliError::Usage(e.to_string()))?;
    let from = args.from.clone();
    let shown = target.shown().to_owned();
    let copied = tokio::task::spawn_blocking(move || {
        let sqlite = Store::open(&from)?;
        migrate::copy(&sqlite, &target)
    })
    .await
    .map_err(|e| CliError::Runtime(format!("the migration failed: {e}")))?
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    // No server opens the file again (a forgotten one would run its
    // campaigns beside the replicas).
    let note = format!(
        "to {shown} at {}",
        rollcall_proto::timestamp::Timestamp::now()
    );
    crate::pki::write_file(&args.from.join(crate::store::MIGRATED_FILE), &note, false).map_err(
        |e| {
            CliError::Runtime(format!(
                "migrated, but cannot mark {} as migrated ({e}): do not start a server on it again",
                db.display()
            ))
        },
    )?;
    for (table, rows) in &copied.tables {
        println!("{table:<16} {rows:>8} rows");
    }
    if copied.quarantined_left > 0 {
        println!(
            "{} rows of the quarantine table were left in {} (rows set aside as unreadable; they were never part of the fleet).",
            copied.quarantined_left,
            db.display()
        );
    }
    println!(
        "Migrated {} to {shown}, and marked it so that no server opens it again ({}). Next: set [store] url and [replica] advertise in every replica's server.toml and start them; keep {} as a backup.",
        db.display(),
        crate::store::MIGRATED_FILE,
        args.from.display()
    );
    Ok(())
}
