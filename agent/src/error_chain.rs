//! An error and its causes. Each error type says what failed at its own level and keeps
//! the error that made it fail as its `source()`, without repeating that error's text in
//! its own `Display` (thiserror's `#[source]`/`#[from]`, never `{0}` beside them). Whoever
//! shows an error to a person shows the whole chain, once: [`chain`] ("outer: cause:
//! cause") for failure info, API messages and logs (`error = %Chain(&e)`), and
//! `cli::fail` (one line per cause) for the command line.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The text of each level of `e`, outermost first. A level whose text the level above
/// already ends with (a library that prints its source in its own message) and an empty
/// level are left out, so no text shows twice.
pub fn levels(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut above = String::new();
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(level) = next {
        let text = level.to_string();
        if !text.is_empty() && !above.ends_with(&text) {
            out.push(text.clone());
        }
        above = text;
        next = level.source();
    }
    out
}

/// `e` and its causes on one line: "outer: cause: cause".
pub fn chain(e: &(dyn Error + 'static)) -> String {
    levels(e).join(": ")
}

/// [`chain`] as a `Display`, for logs: `tracing::warn!(error = %Chain(&e), ...)`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(self.0))
    }
}

/// The cause kept by an error that must stay `Clone` and `PartialEq` (an engine error, a
/// pull shared by several waiters): the underlying error behind an `Arc`. It shows as
/// that error does, and its `source()` is that error's source, so a chain reads the same
/// as with the error itself. Two causes are equal when their texts are.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    pub fn new(e: impl Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(e))
    }

    /// A cause berth has only in words (a scripted fault, a limit it set itself).
    pub fn msg(words: impl Into<String>) -> Self {
        Cause::new(Words(words.into()))
    }

    /// `e`, under the address or name it happened at: shows as `at`, with `e` as its
    /// source ("unix:///run/docker.sock: connection refused" in a chain).
    pub fn at(at: impl Into<String>, e: impl Error + Send + Sync + 'static) -> Self {
        Cause::new(At {
            at: at.into(),
            source: Box::new(e),
        })
    }

    /// The underlying error, to look for a type (`downcast_ref`).
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Words(String);

#[derive(Debug, thiserror::Error)]
#[error("{at}")]
struct At {
    at: String,
    #[source]
    source: Box<dyn Error + Send + Sync + 'static>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the store")]
    struct Outer(#[source] std::io::Error);

    /// A library that prints its source in its own message as well.
    #[derive(Debug, thiserror::Error)]
    #[error("client error: {0}")]
    struct Repeats(#[source] std::io::Error);

    fn io() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn chain_names_each_cause_once() {
        let e = Outer(io());
        assert_eq!(chain(&e), format!("cannot open the store: {}", io()));
        let e = Repeats(io());
        assert_eq!(chain(&e), format!("client error: {}", io()));
        assert_eq!(Chain(&e).to_string(), chain(&e));
    }

    #[test]
    fn a_cause_reads_as_the_error_it_holds() {
        let c = Cause::at("unix:///x.sock", Outer(io()));
        assert_eq!(
            levels(&c),
            ["unix:///x.sock", "cannot open the store", &io().to_string()]
        );
        assert_eq!(c.clone(), c);
        assert_ne!(c, Cause::msg("other"));
        assert!(Cause::new(io())
            .get()
            .downcast_ref::<std::io::Error>()
            .is_some());
    }
}
