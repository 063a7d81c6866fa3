//! rollcall-agent: reports its node's state to rollcall-server over one
//! mutual-TLS gRPC session, and runs the actions its own configuration
//! defines (patch, reboot, named hooks) when the server asks for them by
//! name. `once` prints one local report without a server.
//!
//! `main.rs` only parses, sets up logging and TLS, and hands over to
//! [`cli::run`]; [`start`] turns a checked configuration into a running
//! session.

#![forbid(unsafe_code)]

pub mod actions;
pub mod backoff;
pub mod cert_status;
pub mod cli;
pub mod collect;
pub mod config;
pub mod once;
pub mod renew;
pub mod session;
mod start;

pub use start::{StartError, settings, start};
