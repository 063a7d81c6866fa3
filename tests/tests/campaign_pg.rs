//! The campaign suite (`campaign.rs`), every test of it, with the server's
//! fleet in a real PostgreSQL: the harness's `TestServer` sees that this
//! binary's name ends in `_pg` (`rollcall_tests::postgres::wanted`) and
//! gives each server a database of its own in the shared cluster, over
//! TLS, as the leader of a 2 s lease. Restarts release the lease and the
//! restarted server takes it again; the fleet, the campaign and its actions
//! come back from PostgreSQL.

#[path = "campaign.rs"]
mod campaign;
