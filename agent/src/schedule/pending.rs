//! Why an active task waits: one pure decision from what the caller knows of the task, its
//! job and the nodes, so that the agent (its one node) and `berth service` (a pool's
//! nodes) answer alike. Shown as the berth extension field `berthPendingReason` of an
//! active task (`{"code", "message"}`) and on the web view's task and job pages.

use berth_proto::exit::{self, DependencyAction};
use berth_proto::{JobState, TaskState, TaskView};
use serde::Serialize;

/// What is known of one active task's surroundings.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub job_state: JobState,
    /// The job's tasks running or preparing now, and its `maxParallelTasks` (`None`: no cap).
    pub job_running: u32,
    pub max_parallel: Option<u32>,
    pub deps: Deps,
    pub required_slots: u32,
    /// The most task slots one node has (`None`: no node is known).
    pub largest_node_slots: Option<u32>,
    /// Nodes whose state and scheduling accept tasks.
    pub accepting_nodes: u32,
    /// The job's preparation task failed where the task would run (its tasks stay active).
    pub preparation_failed: bool,
}

/// Where a task's `dependsOn` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deps {
    Met,
    /// Some have not completed yet, or completed in a way that may still change (none).
    Unmet,
    /// One completed in a way that blocks its dependants (by default: failed).
    Blocked,
}

/// Why an active task has not started, most telling first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingReason {
    /// `jobNotActive`, `requiredSlotsTooLarge`, `dependencyBlocked`, `dependenciesUnmet`,
    /// `jobPreparationTaskFailed`, `noNodeAcceptingWork`, `maxParallelTasksReached`,
    /// `waitingForSlot`.
    pub code: &'static str,
    pub message: String,
}

impl Waiting {
    /// The reason the task waits (an active task always has one).
    pub fn reason(&self) -> PendingReason {
        let r = |code, message: String| PendingReason { code, message };
        if self.job_state != JobState::Active {
            return r(
                "jobNotActive",
                format!(
                    "its job is {}: tasks start only in an active job",
                    self.job_state.as_str()
                ),
            );
        }
        if let Some(most) = self.largest_node_slots.filter(|m| self.required_slots > *m) {
            return r(
                "requiredSlotsTooLarge",
                format!(
                    "it needs {} slots and no node has more than {most} (taskSlotsPerNode)",
                    self.required_slots
                ),
            );
        }
        match self.deps {
            Deps::Blocked => {
                return r(
                    "dependencyBlocked",
                    "a task it depends on completed without satisfying it (failed): it waits \
                     until that task is reactivated and succeeds"
                        .into(),
                )
            }
            Deps::Unmet => {
                return r(
                    "dependenciesUnmet",
                    "tasks it depends on (dependsOn) have not all succeeded yet".into(),
                )
            }
            Deps::Met => {}
        }
        if self.preparation_failed {
            return r(
                "jobPreparationTaskFailed",
                "the job's preparation task failed on the node".into(),
            );
        }
        if self.accepting_nodes == 0 {
            return r(
                "noNodeAcceptingWork",
                "no node is idle or running with scheduling enabled".into(),
            );
        }
        if let Some(cap) = self.max_parallel.filter(|c| self.job_running >= *c) {
            return r(
                "maxParallelTasksReached",
                format!(
                    "its job runs {} tasks, its maxParallelTasks is {cap}",
                    self.job_running
                ),
            );
        }
        r(
            "waitingForSlot",
            format!(
                "waiting for {} free task slot{} (tasks queued earlier or of higher priority go first)",
                self.required_slots,
                if self.required_slots == 1 { "" } else { "s" }
            ),
        )
    }
}

/// How a completed dependency counts, as the scheduler takes it: `Some(true)` satisfied,
/// `Some(false)` blocking, `None` not completed (or not there).
pub fn dependency(dep: Option<&TaskView>) -> Option<bool> {
    let dep = dep.filter(|d| d.state == TaskState::Completed)?;
    let outcome = dep
        .execution_info
        .as_ref()
        .map_or(exit::Outcome::Other, exit::Outcome::of);
    Some(
        exit::actions(dep.spec.exit_conditions.as_ref(), outcome).dependency
            == DependencyAction::Satisfy,
    )
}

/// Folds each dependency's answer ([`dependency`]) into [`Deps`]; any blocking one wins.
pub fn deps(answers: impl IntoIterator<Item = Option<bool>>) -> Deps {
    let mut out = Deps::Met;
    for a in answers {
        match a {
            Some(false) => return Deps::Blocked,
            None => out = Deps::Unmet,
            Some(true) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Waiting {
        Waiting {
            job_state: JobState::Active,
            job_running: 0,
            max_parallel: None,
            deps: Deps::Met,
            required_slots: 1,
            largest_node_slots: Some(2),
            accepting_nodes: 1,
            preparation_failed: false,
        }
    }

    #[test]
    fn each_cause_names_itself_most_telling_first() {
        let code = |f: &dyn Fn(&mut Waiting)| {
            let mut w = ready();
            f(&mut w);
            w.reason().code
        };
        assert_eq!(code(&|_| {}), "waitingForSlot");
        assert_eq!(
            code(&|w| {
                w.job_running = 3;
                w.max_parallel = Some(3);
            }),
            "maxParallelTasksReached"
        );
        assert_eq!(code(&|w| w.accepting_nodes = 0), "noNodeAcceptingWork");
        assert_eq!(
            code(&|w| w.preparation_failed = true),
            "jobPreparationTaskFailed"
        );
        assert_eq!(code(&|w| w.deps = Deps::Unmet), "dependenciesUnmet");
        assert_eq!(code(&|w| w.deps = Deps::Blocked), "dependencyBlocked");
        assert_eq!(code(&|w| w.required_slots = 3), "requiredSlotsTooLarge");
        assert_eq!(
            code(&|w| {
                w.job_state = JobState::Disabled;
                w.deps = Deps::Unmet;
            }),
            "jobNotActive"
        );
        let mut w = ready();
        w.job_state = JobState::Disabled;
        assert_eq!(
            w.reason().message,
            "its job is disabled: tasks start only in an active job"
        );
    }

    #[test]
    fn a_blocking_dependency_wins_over_one_not_done() {
        assert_eq!(deps([Some(true), None]), Deps::Unmet);
        assert_eq!(deps([None, Some(false)]), Deps::Blocked);
        assert_eq!(deps([]), Deps::Met);
        assert_eq!(dependency(None), None);
    }
}
