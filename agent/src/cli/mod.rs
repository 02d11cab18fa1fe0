//! The `berth` command line: one module per subcommand, plus what they share.

pub mod agent;
pub mod common;
pub mod pool;
pub mod run;
