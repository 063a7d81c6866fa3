use std::process::ExitCode;

use clap::Parser;
use rollcall_proto::text::Untrusted;
use rollcall_server::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does; the operator commands print results and
    // keep the log to warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_tracing(default_level);
    log_panics();
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
            // A message may quote what the server or an agent sent.
            eprintln!(
                "error: {}",
                rollcall_proto::text::for_terminal(&e.to_string())
            );
            ExitCode::from(e.exit_code())
        }
    }
}

/// A panic is one log line like any other (the server then exits with one
/// line naming the part that panicked), not the default hook's dump on
/// stderr; `RUST_BACKTRACE=1` adds the backtrace to it.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = rollcall_server::supervise::panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, %location, panic = %Untrusted(&message), %backtrace, "A thread panicked.");
        } else {
            tracing::error!(thread, %location, panic = %Untrusted(&message), "A thread panicked.");
        }
    }));
}

fn init_tracing(default_level: &str) {
    let spec = std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| default_level.to_owned());
    let filter: tracing_subscriber::filter::Targets = spec
        .parse()
        .unwrap_or_else(|_| default_level.parse().expect("a level name parses"));
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
