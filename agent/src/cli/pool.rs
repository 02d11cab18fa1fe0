//! `berth pool start`: the pool-start phase alone (directories, leftovers, image prefetch,
//! start task), e.g. in a VM image build or a Batch start task. Exit 0 only when the node
//! ends ready (`idle`).

use super::common::{self, NodeArgs};
use super::run::one_file;
use super::Exit;
use crate::render;
use berth_proto::{load, validate, PoolSpec};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum PoolCmd {
    /// Prefetch the pool's images and run its start task, then report the node's state.
    Start(PoolStartArgs),
    /// Pools in a pool's service (`--service URL`): add, show, list, delete.
    #[command(flatten)]
    Service(ServiceCmd),
}

/// The pool commands that talk to a `berth service`.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCmd {
    /// Add a pool from a JSON file (Batch's PoolAddParameter: taskSlotsPerNode,
    /// virtualMachineConfiguration.containerConfiguration, startTask, userAccounts,
    /// taskSchedulingPolicy).
    Add {
        file: PathBuf,
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// Show one pool.
    Show {
        id: String,
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// List the pools.
    List {
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// Delete a pool: its nodes leave.
    Delete {
        id: String,
        #[command(flatten)]
        conn: super::control::Conn,
    },
}

#[derive(Debug, clap::Args)]
pub struct PoolStartArgs {
    /// Pool JSON (PoolAddParameter): container images, registries, start task, users.
    #[arg(long, value_name = "POOL.json")]
    pub pool: PathBuf,
    /// Print the node as JSON (Batch's node shape) instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn run(cmd: PoolCmd) -> ExitCode {
    match cmd {
        PoolCmd::Start(a) => start(a).await,
        PoolCmd::Service(c) => super::control::pool(c).await,
    }
}

async fn start(args: PoolStartArgs) -> ExitCode {
    let mut errors = vec![];
    let pool = one_file(
        &Some(args.pool.clone()),
        load::pool,
        validate::pool,
        &mut errors,
    );
    let pool: PoolSpec = match pool {
        Some(p) if errors.is_empty() => p,
        _ => {
            errors.iter().for_each(|e| eprintln!("error: {e}"));
            eprintln!(
                "berth: {} problem(s) in the pool; nothing was done",
                errors.len()
            );
            return Exit::InvalidInput.into();
        }
    };
    let (rt, _cancel, started) = match common::start_node(&args.node, pool).await {
        Ok(s) => s,
        Err(code) => return code.into(),
    };
    // A start task that does not gate the node still runs to its end here: this process is
    // its only owner.
    if let Some(h) = started.background_start_task {
        if let Err(e) = h.await {
            tracing::error!(error = %e, "start task runner failed");
        }
    }
    let node = rt.status.get();
    if args.json {
        println!("{}", render::node_json(&node));
    } else {
        print!("{}", render::node(&node));
    }
    if node.state.schedulable() {
        Exit::Ok
    } else {
        Exit::Failed
    }
    .into()
}
