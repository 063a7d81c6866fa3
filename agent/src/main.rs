use std::process::ExitCode;

use clap::Parser;
use rollcall_agent::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    // One thread: the agent is light, and a report every few seconds needs
    // no more.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing() {
    let spec = std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter: tracing_subscriber::filter::Targets = spec
        .parse()
        .unwrap_or_else(|_| "info".parse().expect("a level name parses"));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(filter)
        .init();
}
