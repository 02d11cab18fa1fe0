//! The `berth` command line: one module per subcommand, plus what they share.

pub mod agent;
pub mod client;
pub mod common;
pub mod control;
pub mod pool;
pub mod run;
