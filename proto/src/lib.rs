//! rollcall's wire contract.
//!
//! - [`v1`]: the generated `rollcall.v1` gRPC types, clients and servers.
//! - [`model`]: the domain types both binaries work with (serde, no prost).
//! - [`names`]: enums as words (`as_str`, `FromStr`), one error for a wrong one.
//! - [`pack`]: a compact binary form of report sections, for holding many.
//! - [`certinfo`]: a client certificate's life: validity, key, when to renew.
//! - [`connect`]: the client side of mutual TLS.
//! - [`servers`]: the list of server URLs a client is given, and the leader a follower names.
//! - [`convert`]: the one place that maps between the two.
//! - [`admit`]: the limits every message from an agent must keep.
//! - [`expiry`]: when a certificate expires, and how to say it to people.
//! - [`diag`]: one-line error messages for configuration files.
//! - [`files`]: the checks of key files and directories a config names.
//! - [`identity`]: how a certificate names an agent or an operator.
//! - [`text`]: untrusted strings made safe for terminals and log lines.
//! - [`timestamp`]: the wall-clock type used everywhere, RFC 3339 in JSON.

#![forbid(unsafe_code)]

pub mod admit;
pub mod certinfo;
pub mod connect;
pub mod convert;
pub mod diag;
pub mod expiry;
pub mod files;
pub mod identity;
pub mod model;
pub mod names;
pub mod pack;
pub mod servers;
pub mod text;
pub mod timestamp;

/// Generated from `proto/rollcall/v1/*.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rollcall.v1");
}

/// The encoded descriptor set of every rollcall.v1 file and its imports, for
/// the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rollcall_descriptor.bin"));
