//! Rolling patch campaigns (in progress, issue 5): the spec an operator
//! gives, the per-node lifecycle, and the pure scheduling decisions. The
//! scheduler actor, the agent's action executor, the store tables and the
//! operator surface that drive them come next; nothing here runs yet.

pub mod lifecycle;
pub mod schedule;
pub mod spec;
