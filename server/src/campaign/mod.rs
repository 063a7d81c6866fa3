//! Rolling patch campaigns: the spec an operator gives (`spec`), a node's
//! lifecycle (`lifecycle`), the pure decisions of which nodes start
//! (`schedule`) and how a node in flight moves on (`drive`), what is kept
//! (`record`), and the scheduler task that drives them (`runner`).

pub mod drive;
pub mod lifecycle;
pub mod record;
pub mod runner;
pub mod schedule;
pub mod spec;
pub mod window;
pub mod wire;

pub use runner::{
    CampaignError, CampaignEvent, CampaignHandle, CampaignView, Control, Plan, Scheduler,
};
