//! berth's node protocol: what an agent in pool mode (`berth agent --service URL`) and
//! `berth service` say to each other. berth's own, not Batch's: JSON over HTTP(S) under
//! [`PREFIX`], the node always the caller (outbound only, as Batch's simplified node
//! communication mode). Agents never talk to PostgreSQL.
//!
//! Fencing (pool-mode design notes, section 3): every claim creates an attempt with an id
//! from a sequence; every report carries it, and the service changes a task only while
//! that attempt is still the task's current one. A report for an attempt that is not
//! current is answered 409 with [`FENCED`]; the agent then kills and removes that
//! container and drops its results.

use crate::job::JobView;
use crate::node::ComputeNode;
use crate::pool::PoolSpec;
use crate::status::TaskView;
use serde::{Deserialize, Serialize};

/// Every node-protocol path starts with this.
pub const PREFIX: &str = "/nodeagent/v1";
/// The Batch-shaped error code of a report or claim for an attempt the service no longer
/// counts (the task was requeued, terminated or deleted meanwhile).
pub const FENCED: &str = "AttemptFenced";
/// The error code when a newer enrolment owns this node id: the agent fences at once.
pub const SUPERSEDED: &str = "NodeSuperseded";
/// The container label that carries a pool attempt's id.
pub const ATTEMPT_LABEL: &str = "berth.pool-attempt";

/// An attempt's id: unique across the pool's life (a PostgreSQL sequence).
pub type AttemptId = i64;

/// `POST {PREFIX}/enrol`, authorised by `Authorization: Bearer <enrolment secret>`.
/// A node id enrolled again (an agent restart) gets a new `epoch`; the older epoch's
/// token stops working and its heartbeats are answered [`SUPERSEDED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolRequest {
    pub pool_id: String,
    pub node_id: String,
    /// Where the service reaches this agent's file API (`http://host:port`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_address: Option<String>,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolResponse {
    /// The node credential: `Authorization: Bearer <nodeToken>` on every later call. Good
    /// only for this node id and epoch; the service keeps only its SHA-256.
    pub node_token: String,
    pub epoch: i64,
    /// The pool this node runs: images to prefetch, start task, users, slots.
    pub pool: PoolSpec,
    pub timers: Timers,
    /// What the service shows on this node's file address when it proxies a client's read
    /// of task or node files (`Authorization: Bearer <proxyToken>`): the agent accepts it
    /// for file reads only. Random per enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_token: Option<String>,
}

/// The lease timers of a pool (design notes, section 3), in milliseconds. `None` for
/// self-fence and requeue is the "keep" profile: never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timers {
    pub heartbeat_ms: u64,
    pub unknown_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fence_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_ms: Option<u64>,
}

impl Timers {
    /// Default profile: heartbeat 5 s, unknown 30 s, self-fence 90 s, requeue 120 s.
    pub const DEFAULT: Timers = Timers {
        heartbeat_ms: 5_000,
        unknown_ms: 30_000,
        self_fence_ms: Some(90_000),
        requeue_ms: Some(120_000),
    };
    /// Fast profile: 1 s, 5 s, 10 s, 15 s.
    pub const FAST: Timers = Timers {
        heartbeat_ms: 1_000,
        unknown_ms: 5_000,
        self_fence_ms: Some(10_000),
        requeue_ms: Some(15_000),
    };
}

/// `POST {PREFIX}/heartbeat`: renews the node's lease and says how it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub epoch: i64,
    /// The node as the agent reports it (state, errors, start task, images, GPUs).
    pub node: ComputeNode,
    /// The attempts this node is running now (claimed and not yet reported completed).
    #[serde(default)]
    pub running: Vec<AttemptId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_address: Option<String>,
    /// berth's `imagePulls` as the agent's `GET /node` shows them (the pulls under way,
    /// then the last few ended): the service keeps them in the node's report for its node
    /// view. Only bytes and layers change while a pull runs, so an idle node's heartbeat
    /// stays unchanged (and unwritten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pulls: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// What the node must do now, in order.
    #[serde(default)]
    pub commands: Vec<NodeCommand>,
    /// How old, in milliseconds, the node's recorded lease renewal is when the service
    /// answers: 0 when this heartbeat renewed it. The service skips renewals that change
    /// nothing while the recorded one is young, so the node counts its self-fence time
    /// from its send time minus this age, never from a renewal that was not written.
    /// Absent (0) from services that renew at every heartbeat.
    #[serde(default)]
    pub lease_age_ms: u64,
}

/// A command from the service to a node, delivered in heartbeat and claim replies and
/// repeated until the node's reports show it done (so each must be idempotent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum NodeCommand {
    /// The attempt is no longer current: kill and remove its container, report nothing
    /// more about it.
    #[serde(rename_all = "camelCase")]
    Fence { attempt: AttemptId },
    /// Batch's task terminate: end the attempt's task (it completes with `TaskEnded`) and
    /// report its completion as usual.
    #[serde(rename_all = "camelCase")]
    Terminate { attempt: AttemptId },
    /// The job ended (terminated, completed or deleted): run its release task here if this
    /// node prepared it, then forget the job.
    #[serde(rename_all = "camelCase")]
    EndJob { job_id: String },
    /// Scheduling on this node was disabled or enabled (the service already dealt with
    /// the running attempts as the option said; this only tells the node for its report).
    #[serde(rename_all = "camelCase")]
    SchedulingState { enabled: bool },
    /// The node was removed from the pool: stop claiming, end what still runs (the service
    /// has requeued or terminated it), leave, and exit.
    Remove,
}

/// `POST {PREFIX}/claim`: a long poll. Answered as soon as tasks fit, or empty after
/// `waitMs` (at most 30 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub epoch: i64,
    /// Slots free on the node now (`taskSlotsPerNode` minus the slots of its live attempts).
    pub free_slots: u32,
    /// Whole GPUs free on the node now.
    #[serde(default)]
    pub free_gpus: u32,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReply {
    #[serde(default)]
    pub claims: Vec<Claim>,
    #[serde(default)]
    pub commands: Vec<NodeCommand>,
}

/// One task given to a node: run it as attempt `attempt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub attempt: AttemptId,
    /// The task's job as the service holds it (its preparation and release tasks, its
    /// constraints, its environment).
    pub job: JobView,
    /// The task as the service holds it (`state` active).
    pub task: TaskView,
}

/// `POST {PREFIX}/report`: what happened to an attempt. 200 when it counted; 409 with
/// [`FENCED`] when the attempt is not current (the agent kills and removes the container).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub epoch: i64,
    pub attempt: AttemptId,
    pub job_id: String,
    pub task_id: String,
    #[serde(flatten)]
    pub event: ReportEvent,
}

/// `POST {PREFIX}/reports`: several of one node's reports in one call, recorded in one
/// transaction (each as `/report` would), job by job and in their order within a job; at
/// most [`MAX_REPORTS`], and [`MAX_REPORTS_BYTES`] of JSON as the agent counts them. Every
/// report carries the node's epoch, as in `/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reports {
    pub reports: Vec<Report>,
}

/// How many reports one `/reports` call may carry.
pub const MAX_REPORTS: usize = 64;

/// How many bytes of reports (their events' JSON) an agent puts in one `/reports` call:
/// half the API's 1 MiB body limit, so that a batch of large task views is not refused
/// whole.
pub const MAX_REPORTS_BYTES: usize = 512 * 1024;

/// The answer to `/reports`: the attempts that are not current (each as `/report`'s 409
/// [`FENCED`]: the agent kills and removes their containers); every other report counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsReply {
    #[serde(default)]
    pub fenced: Vec<AttemptId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum ReportEvent {
    /// The task's container is about to start (or its preparation began): `task` is the
    /// node's view (`running`, `executionInfo.startTime`, `nodeInfo`).
    #[serde(rename_all = "camelCase")]
    Running { task: TaskView },
    /// The attempt completed (after the node's own retries): `task` is final.
    #[serde(rename_all = "camelCase")]
    Completed { task: TaskView },
    /// The node gave the attempt up without a result (it fenced itself, it is leaving):
    /// the service requeues the task as an internal retry.
    #[serde(rename_all = "camelCase")]
    Abandoned { reason: String },
}

/// `POST {PREFIX}/adopt`: after a restart, which of the attempts found in this node's
/// containers and journal are still current. The others are killed and removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptRequest {
    pub epoch: i64,
    pub attempts: Vec<AttemptId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoptReply {
    pub current: Vec<AttemptId>,
}

/// `POST {PREFIX}/leave`: a graceful stop (SIGTERM with `requeue`): the service requeues
/// this node's live attempts at once (`requeueCount` + 1) and marks the node gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequest {
    pub epoch: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_are_tagged() {
        let c = serde_json::to_value(NodeCommand::Fence { attempt: 7 }).unwrap();
        assert_eq!(c, serde_json::json!({"command": "fence", "attempt": 7}));
        let c = serde_json::to_value(NodeCommand::EndJob { job_id: "j".into() }).unwrap();
        assert_eq!(c, serde_json::json!({"command": "endJob", "jobId": "j"}));
        let r = Report {
            epoch: 1,
            attempt: 2,
            job_id: "j".into(),
            task_id: "t".into(),
            event: ReportEvent::Abandoned {
                reason: "fenced".into(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["event"], "abandoned");
        assert_eq!(v["reason"], "fenced");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
