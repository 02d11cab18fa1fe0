//! `berth service`: pool mode's control plane (pool-mode design notes). Stateless: every
//! fact lives in PostgreSQL, so any number of replicas may serve the same pools. Clients
//! speak Batch's REST API to it; agents speak berth's node protocol
//! (`berth_proto::node_protocol`), always as the caller. No transaction is held across a
//! network call.

pub mod api;
pub mod attempts;
pub mod claim;
pub mod config;
pub mod db;
pub mod job_end;
pub mod metrics;
pub mod node_api;
pub mod server;
pub mod state;
pub mod sweep;
pub mod wake;
