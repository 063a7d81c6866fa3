//! What the agent knows about its host. Each source sits behind a small
//! trait so the session logic can be tested with fakes and the real
//! adapters can be tested against fixture files.

mod host;
pub mod os_release;

pub use host::SystemCollector;

use rollcall_proto::model::{HostFacts, HostMetrics};

/// Reads the host's facts and metrics.
pub trait Collector: Send {
    fn host(&mut self) -> (HostFacts, HostMetrics);
}
