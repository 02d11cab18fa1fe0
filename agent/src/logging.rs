//! The log filter, changeable while the process runs: the agent applies its `log_level` at
//! start and again on SIGHUP. `RUST_LOG` or `-v` on the command line win over the file.

use std::sync::OnceLock;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub type FilterHandle = reload::Handle<EnvFilter, Registry>;

struct Filter {
    handle: FilterHandle,
    /// Set from the command line or `RUST_LOG`: the configuration does not change it.
    fixed: bool,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

/// Called once by `main` after the subscriber is installed.
pub fn install(handle: FilterHandle, fixed: bool) {
    // A second call (there is none) would keep the first filter.
    FILTER.set(Filter { handle, fixed }).ok();
}

/// `info`, `debug`, ... mean berth's own level (others stay at `warn`); anything with `=` or
/// `,` is an `EnvFilter` directive list used as given.
pub fn directives(level: &str) -> Result<String, String> {
    let level = level.trim();
    if level.contains('=') || level.contains(',') {
        EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        return Ok(level.to_string());
    }
    match level {
        "error" | "warn" => Ok(level.to_string()),
        "info" | "debug" | "trace" => Ok(format!("berth_agent={level},warn")),
        _ => Err(format!(
            "log_level {level:?} is not accepted: error, warn, info, debug, trace, or filter directives such as \"berth_agent=debug,warn\""
        )),
    }
}

/// Applies `level` unless the command line fixed the filter; an error says what is accepted.
pub fn set_level(level: &str) -> Result<(), String> {
    let d = directives(level)?;
    let Some(f) = FILTER.get() else {
        return Ok(());
    };
    if f.fixed {
        tracing::debug!(log_level = %level, "RUST_LOG or -v given: log_level not applied");
        return Ok(());
    }
    f.handle
        .reload(EnvFilter::new(&d))
        .map_err(|e| format!("log_level: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels() {
        use super::directives;
        assert_eq!(directives("info").unwrap(), "berth_agent=info,warn");
        assert_eq!(directives(" warn ").unwrap(), "warn");
        assert_eq!(
            directives("berth_agent=trace,hyper=info").unwrap(),
            "berth_agent=trace,hyper=info"
        );
        assert!(directives("loud")
            .unwrap_err()
            .contains("error, warn, info"));
        assert!(directives("berth_agent=nope,").is_err());
    }
}
