//! Rolling patch campaigns: the spec an operator gives (`spec`, its
//! maintenance `window`), a node's lifecycle and its one step graph
//! (`lifecycle`), the pure decisions of which nodes start (`schedule`), how
//! a node in flight moves on (`drive`, `checks`, and the role's cluster
//! `gate`s), what operators may do (`control`, `undrain`), the fleet-wide
//! blast-radius guard (`blast`), the monitoring alerts that hold new starts
//! (`alerts`) and the Alertmanager silences of nodes in flight (`silence`),
//! what a store outage changes (`outage`), what
//! is kept (`record`), the operators' API (`api`) and the scheduler task
//! that carries the decisions out (`runner`).

pub mod alerts;
pub mod api;
pub mod blast;
pub mod checks;
pub mod control;
pub mod drive;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod gate;
pub mod lifecycle;
pub mod outage;
pub mod record;
pub mod runner;
pub mod schedule;
pub mod silence;
#[cfg(test)]
mod simulation;
pub mod spec;
pub mod undrain;
pub mod window;
pub mod wire;

pub use api::{CampaignError, CampaignEvent, CampaignHandle, CampaignView, Control, Plan};
pub use record::Phase;
pub use runner::{ForgetError, Scheduler};
