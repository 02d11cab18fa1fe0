//! `berthPendingReason` on the agent: what this node knows of an active task's job, its
//! dependencies and its own slots and state, handed to the shared decision
//! ([`crate::schedule::pending`]). Gathered once per request; dependencies asked once each.

use super::{ApiError, AppState};
use crate::schedule::job_tasks::{self, Gate};
use crate::schedule::pending::{self, PendingReason, Waiting};
use berth_proto::node::NodeState;
use berth_proto::{JobView, TaskState, TaskView};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// The extension field's name in a task's JSON.
pub(crate) const FIELD: &str = "berthPendingReason";

/// One job's surroundings, for the active tasks of one answer.
pub(crate) struct Pending<'a> {
    s: &'a AppState,
    job: JobView,
    running: u32,
    slots: u32,
    accepting: u32,
    preparation_failed: bool,
    /// Each dependency's answer (lower-case id), read once.
    seen: RefCell<HashMap<String, Option<bool>>>,
}

impl<'a> Pending<'a> {
    pub fn new(s: &'a AppState, job: JobView) -> Result<Self, ApiError> {
        let mut running = 0;
        for st in [TaskState::Running, TaskState::Preparing] {
            running += s.store.tasks(&job.spec.id, Some(st))?.len();
        }
        let node = s.rt.status.get();
        let accepting = matches!(node.state, NodeState::Idle | NodeState::Running)
            && !node.scheduling_state.eq_ignore_ascii_case("disabled");
        let rec = s.store.job_on_node(&job.spec.id)?;
        let preparation_failed =
            job_tasks::gate(&job.spec, rec.as_ref(), &job_tasks::boot_id()) == Gate::Blocked;
        Ok(Pending {
            s,
            running: u32::try_from(running).unwrap_or(u32::MAX),
            slots: s.rt.pool.task_slots(),
            accepting: u32::from(accepting),
            preparation_failed,
            job,
            seen: RefCell::new(HashMap::new()),
        })
    }

    /// Why `t` waits; `None` unless it is active.
    pub fn reason(&self, t: &TaskView) -> Result<Option<PendingReason>, ApiError> {
        if t.state != TaskState::Active {
            return Ok(None);
        }
        let mut answers = vec![];
        for id in t.spec.depends_on.iter().flat_map(|d| d.all_ids()) {
            let k = id.to_ascii_lowercase();
            let known = self.seen.borrow().get(&k).copied();
            let a = match known {
                Some(a) => a,
                None => {
                    let dep = self.s.store.task(&self.job.spec.id, &id)?;
                    let a = pending::dependency(dep.as_ref().map(|d| &d.view));
                    self.seen.borrow_mut().insert(k, a);
                    a
                }
            };
            // A blocking one settles it; the rest need not be read.
            answers.push(a);
            if a == Some(false) {
                break;
            }
        }
        Ok(Some(
            Waiting {
                job_state: self.job.state,
                job_running: self.running,
                max_parallel: self.job.spec.parallel_cap(),
                deps: pending::deps(answers),
                required_slots: t.spec.required_slots(),
                largest_node_slots: Some(self.slots),
                accepting_nodes: self.accepting,
                preparation_failed: self.preparation_failed,
            }
            .reason(),
        ))
    }

    /// The extension field for `t` (none unless it is active), to add to its JSON.
    pub fn fields(&self, t: &TaskView) -> Result<Map<String, Value>, ApiError> {
        let mut m = Map::new();
        if let Some(r) = self.reason(t)? {
            m.insert(FIELD.into(), serde_json::to_value(r).unwrap_or_default());
        }
        Ok(m)
    }

    /// Adds [`Pending::fields`] to `e`, the JSON of `t`.
    pub fn annotate(&self, t: &TaskView, e: &mut Value) -> Result<(), ApiError> {
        if let Value::Object(o) = e {
            o.extend(self.fields(t)?);
        }
        Ok(())
    }
}
