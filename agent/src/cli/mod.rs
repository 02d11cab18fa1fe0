//! The `berth` command line: one module per subcommand, plus what they share.

pub mod agent;
pub mod client;
pub mod common;
pub mod control;
pub mod pool;
pub mod run;

use std::process::ExitCode;

/// The exit status of every `berth` subcommand, decided here (README, "Commands").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: every task succeeded, the node is ready, the request was served.
    Ok = 0,
    /// Done, and something failed: a task, the node's start, the agent, an API request.
    Failed = 1,
    /// Bad input (a file, a flag, the configuration): nothing ran.
    InvalidInput = 2,
    /// The agent could not be reached (the client commands).
    Unreachable = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}
