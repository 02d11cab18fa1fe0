//! berth: runs Azure Batch container tasks on a Docker engine.
//!
//! The modules follow the data:
//!
//! ```text
//! pool start:  PoolSpec ──image::store──> images present ──pool (start task)──> node idle
//! task:        TaskSpec (+JobSpec, PoolSpec, node facts)
//!                ──task::plan──>        TaskPlan            (env, mounts, user, workdir, image, command)
//!                ──task::run_options──> RunOptions          (the user's docker flags, parsed)
//!                ──task::create──>      ContainerCreateBody (the `docker create` request, pure)
//!                ──task::run──>         Finished            (exited | timed out | cancelled | not started)
//!                                       + stdout.txt/stderr.txt via task::logs
//!                ──task::exit──>        Outcome             (exit code, failureInfo, retry or not)
//!                ──task (retries)──>    ExecutionInfo       (berth_proto::status)
//! schedule:    decides when each task runs (slots, FIFO, dependsOn, retention)
//! job_schedule: creates the jobs of job schedules when they are due
//! gpu:         finds the GPUs (NVML), gives each running task its own, adds them to the body
//! engine:      the only module that talks to Docker
//! ```

pub mod api;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error_chain;
pub mod files;
pub mod gpu;
pub mod image;
pub mod job_schedule;
pub mod logging;
pub mod member;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod render;
pub mod schedule;
pub mod service;
pub mod shutdown;
pub mod size;
pub mod store;
pub mod task;
pub mod ui;
