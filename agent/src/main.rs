//! The `berth` binary: parse the command line, set up logging, dispatch. A failure is
//! printed once, with its causes, by `cli::fail`.

use berth_agent::cli::control;
use berth_agent::cli::{fail, CommandError, Exit};
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Runs Azure Batch container tasks on a Docker engine"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run task files once on this node: pool start (images, start task), tasks, report.
    Run(berth_agent::cli::run::RunArgs),
    /// Pool start alone (prefetch the pool's images, run its start task, report the node);
    /// and pools in a pool's service: add, show, list, delete (--service).
    #[command(subcommand)]
    Pool(berth_agent::cli::pool::PoolCmd),
    /// The node daemon: a Batch-shaped API on a Unix socket, durable state, the scheduler.
    Agent(berth_agent::cli::agent::AgentArgs),
    /// Pool mode's control plane: Batch's REST API for pools of agents, state in PostgreSQL.
    Service(berth_agent::cli::service::ServiceArgs),
    /// Jobs on the running agent: add, show, list, terminate, delete.
    Job {
        #[command(subcommand)]
        cmd: control::JobCmd,
        #[command(flatten)]
        conn: control::Conn,
    },
    /// Job schedules on the running agent: add, show, list, terminate, disable, enable,
    /// delete.
    #[command(name = "jobschedule")]
    JobSchedule {
        #[command(subcommand)]
        cmd: control::JobScheduleCmd,
        #[command(flatten)]
        conn: control::Conn,
    },
    /// Tasks on the running agent: add, show, list, logs (-f), terminate.
    Task {
        #[command(subcommand)]
        cmd: control::TaskCmd,
        #[command(flatten)]
        conn: control::Conn,
    },
    /// The node, as the running agent reports it.
    Node {
        #[command(subcommand)]
        cmd: control::NodeCmd,
        #[command(flatten)]
        conn: control::Conn,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (berth.1, berth-run.1, ...) into DIR; the packages carry them.
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A test-only crash point (`task::crash`) naming no step stops here, not mid-task.
    berth_agent::task::crash::armed();
    // Generated from the parser itself, so they never drift from the real flags.
    match cli.cmd {
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut script);
            use std::io::Write;
            return match std::io::stdout().write_all(&script) {
                Ok(()) => Exit::Ok.into(),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok.into(),
                Err(e) => fail(
                    &CommandError::new("cannot write the script", e),
                    Exit::Failed,
                ),
            };
        }
        Cmd::Manpages { dir } => {
            return match clap_mangen::generate_to(Cli::command(), &dir) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => fail(
                    &CommandError::new(dir.display().to_string(), e),
                    Exit::Failed,
                ),
            };
        }
        _ => {}
    }
    let level = match cli.verbose {
        0 => "berth_agent=info,warn",
        1 => "berth_agent=debug,info",
        _ => "trace",
    };
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some() || cli.verbose > 0;
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    // Reloadable: the agent applies its configured log_level, and again on SIGHUP.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    berth_agent::logging::install(handle, fixed);
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    // Under systemd (JOURNAL_STREAM set) with journald listening: structured entries, the
    // job and task ids as fields. Otherwise plain lines on stderr.
    let journald = (std::env::var_os("JOURNAL_STREAM").is_some()
        && std::path::Path::new("/run/systemd/journal/socket").exists())
    .then(|| tracing_journald::layer().ok())
    .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(j) => registry
            .with(j.with_syslog_identifier("berth".into()))
            .init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(|| berth_agent::image::progress::ProgressWriter)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = CommandError::new("cannot start the async runtime", e);
            return fail(&e, Exit::Failed);
        }
    };
    let code = match cli.cmd {
        Cmd::Run(args) => rt.block_on(berth_agent::cli::run::run(args)),
        Cmd::Pool(cmd) => rt.block_on(berth_agent::cli::pool::run(cmd)),
        Cmd::Agent(args) => rt.block_on(berth_agent::cli::agent::run(args)),
        Cmd::Service(args) => rt.block_on(berth_agent::cli::service::run(args)),
        Cmd::Job { cmd, conn } => rt.block_on(control::job(cmd, conn)),
        Cmd::JobSchedule { cmd, conn } => rt.block_on(control::job_schedule(cmd, conn)),
        Cmd::Task { cmd, conn } => rt.block_on(control::task(cmd, conn)),
        Cmd::Node { cmd, conn } => rt.block_on(control::node(cmd, conn)),
        Cmd::Completions { .. } | Cmd::Manpages { .. } => unreachable!("handled before logging"),
    };
    // The work is done; a blocking thread still busy (an abandoned file copy, a task's
    // probe) must not hold the exit, which dropping the runtime would wait for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
