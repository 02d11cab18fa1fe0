//! The `berth` command line: one module per subcommand.

pub mod run;
