//! The `berth` command line: one module per subcommand, plus what they share.

pub mod agent;
pub mod client;
pub mod common;
pub mod control;
pub mod pool;
pub mod run;
pub mod service;

use crate::error_chain;
use std::error::Error;
use std::path::PathBuf;
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

/// Prints why a command failed, on stderr, and gives its exit status. The one place a
/// command's error is printed: `berth: <what failed>`, then each cause once on its own
/// line (`  caused by: <cause>`).
pub fn fail(e: &(dyn Error + 'static), code: Exit) -> ExitCode {
    eprint!("{}", report(e));
    code.into()
}

/// The text [`fail`] prints for `e`.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut levels = error_chain::levels(e).into_iter();
    let mut out = format!("berth: {}\n", levels.next().unwrap_or_default());
    for cause in levels {
        out.push_str(&format!("  caused by: {cause}\n"));
    }
    out
}

/// A command's own failure: what it was doing, and the error that stopped it, if any.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct CommandError {
    what: String,
    #[source]
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl CommandError {
    /// `source` stopped the command while it was doing `what`.
    pub fn new(what: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        CommandError {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A failure with nothing below it (a setting that cannot work).
    pub fn plain(what: impl Into<String>) -> Self {
        CommandError {
            what: what.into(),
            source: None,
        }
    }
}

/// A file named on the command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not JSON", path.display())]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_prints_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = InputError::Read {
            path: "t.json".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            report(&e),
            format!("berth: t.json: cannot read\n  caused by: {io}\n")
        );
        let e = CommandError::new("socket /run/b.sock", e);
        assert_eq!(
            report(&e),
            format!(
                "berth: socket /run/b.sock\n  caused by: t.json: cannot read\n  caused by: {io}\n"
            )
        );
        assert_eq!(report(&e).matches(&io.to_string()).count(), 1);
        assert_eq!(
            report(&CommandError::plain("no token")),
            "berth: no token\n"
        );
    }
}
