//! `berthPendingReason` on the service: the job, its pool's nodes and the dependencies as
//! PostgreSQL holds them, handed to the decision the agent uses too
//! ([`crate::schedule::pending`]). Read once per answer.

use super::Sql;
use crate::api::ApiError;
use crate::schedule::pending::{self, Deps, Waiting};
use crate::service::db::Cached;
use berth_proto::{JobView, TaskState, TaskView};
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// One job's surroundings, for the active tasks of one answer.
pub(crate) struct Pending {
    base: Waiting,
    /// Tasks (lower-case ids) with a dependency that completed without satisfying them.
    blocked: HashSet<String>,
}

impl Pending {
    pub async fn read(c: &(impl GenericClient + Cached), job: &JobView) -> Result<Self, ApiError> {
        let id = &job.spec.id;
        let j = c
            .query_one("SELECT running, pool_id FROM jobs WHERE id = $1", &[id])
            .await
            .sql()?;
        let (running, pool): (i32, String) = (j.get(0), j.get(1));
        let n = c
            .query_one(
                "SELECT max(slots), count(*) FILTER (WHERE state IN ('idle', 'running') \
                 AND scheduling_state = 'enabled') FROM nodes WHERE pool_id = $1",
                &[&pool],
            )
            .await
            .sql()?;
        let (largest, accepting): (Option<i32>, i64) = (n.get(0), n.get(1));
        let done = c
            .query(
                "SELECT d.task_key, t.view FROM task_deps d JOIN tasks t \
                 ON t.job_id = d.job_id AND t.id_key = d.depends_on_key \
                 WHERE d.job_id = $1 AND t.state = 'completed'",
                &[id],
            )
            .await
            .sql()?;
        let mut blocked = HashSet::new();
        for r in done {
            let dep: TaskView = super::stored(r.get(1), "task")?;
            if pending::dependency(Some(&dep)) == Some(false) {
                blocked.insert(r.get::<_, String>(0));
            }
        }
        let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Ok(Pending {
            base: Waiting {
                job_state: job.state,
                job_running: count(running.into()),
                max_parallel: job.spec.parallel_cap(),
                deps: Deps::Met,
                required_slots: 1,
                largest_node_slots: largest.map(|m| count(m.into())),
                accepting_nodes: count(accepting),
                // Nodes do not report their preparation runs to the service yet.
                preparation_failed: false,
            },
            blocked,
        })
    }

    /// The extension field for `t` (none unless it is active); `waiting_on`: its row's
    /// count of dependencies not yet satisfied.
    pub fn fields(&self, t: &TaskView, waiting_on: i32) -> Map<String, Value> {
        let mut m = Map::new();
        if t.state != TaskState::Active {
            return m;
        }
        let deps = if self.blocked.contains(&t.spec.id.to_ascii_lowercase()) {
            Deps::Blocked
        } else if waiting_on > 0 {
            Deps::Unmet
        } else {
            Deps::Met
        };
        let w = Waiting {
            deps,
            required_slots: t.spec.required_slots(),
            ..self.base.clone()
        };
        m.insert(
            crate::api::PENDING_FIELD.into(),
            serde_json::to_value(w.reason()).unwrap_or_default(),
        );
        m
    }
}
