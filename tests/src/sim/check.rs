//! The checker: what a pool run must never do, judged from the fake engines' records of
//! every container run and the service's final state.
//!
//! The rules, each a [`Violation`]:
//! - **Overlap.** Two container runs of one task overlap in time. *Every* run counts: a
//!   run from the engine's start of the container to its exit, however it exited (by
//!   itself, stopped, killed, its node's engine lost). An attempt the service fenced is no
//!   excuse: spec §3 makes its node kill it before the service gives the task to anyone
//!   else (self-fence F < requeue R), so a fenced attempt's container still running when
//!   another attempt's starts is exactly the failure this rule is for. Runs that only
//!   touch (one ends the instant the next starts) do not overlap.
//! - **Still running.** A run with no end once the pool is done: a container nobody
//!   stopped (its overlap with a later run is reported too).
//! - **Lost.** A task added and not in the final state, or not `completed` in it.
//! - **Not one end.** A completed task whose completion the service took from no
//!   attempt or from more than one (`attempts` rows in state `completed`), or a completed
//!   task that never ran.
//! - **Unexplained.** More attempts (claims) than `1 + requeueCount + systemRetryCount`;
//!   more runs of one attempt than `1 + maxTaskRetryCount` (a local retry is a new
//!   container of the same attempt); or more runs in all than `1 + retryCount + moves x
//!   (1 + maxTaskRetryCount)`, `moves` being `requeueCount + systemRetryCount`: an attempt
//!   the service requeued or lost with its node may have retried locally within its
//!   budget without the service hearing of it (its reports are refused once it is
//!   fenced), so `retryCount` counts only the completed attempt's retries.
//! - **Unknown.** A run of a task that was never added.

use std::collections::{BTreeMap, BTreeSet};

/// One container run, in seconds since the run's epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRec {
    pub job: String,
    pub task: String,
    /// The pool attempt (the container's attempt label).
    pub attempt: i64,
    pub node: String,
    pub start: f64,
    /// `None`: still running.
    pub end: Option<f64>,
}

/// One task as the service ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub job: String,
    pub task: String,
    pub state: String,
    pub retry_count: i64,
    pub requeue_count: i64,
    pub system_retry_count: i64,
    /// Attempt rows (claims) of the task.
    pub attempts: i64,
    /// Attempt rows in state `completed`.
    pub completed_attempts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    Overlap {
        job: String,
        task: String,
        a: RunRec,
        b: RunRec,
    },
    StillRunning(RunRec),
    Lost {
        job: String,
        task: String,
        state: Option<String>,
    },
    NotOneEnd {
        job: String,
        task: String,
        completed_attempts: i64,
        runs: usize,
    },
    Unexplained {
        job: String,
        task: String,
        runs: usize,
        attempts: i64,
        end: TaskEnd,
    },
    Unknown(RunRec),
}

/// What the checker saw, and what it found wrong.
#[derive(Debug, Default)]
pub struct Verdict {
    pub tasks: usize,
    pub runs: usize,
    /// Runs beyond one per task, each explained by a counter.
    pub extra_runs: usize,
    pub retries: i64,
    pub requeues: i64,
    pub system_retries: i64,
    pub violations: Vec<Violation>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line: the counts and how many of each violation.
    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            let k = match v {
                Violation::Overlap { .. } => "overlapping",
                Violation::StillRunning(_) => "still running",
                Violation::Lost { .. } => "lost",
                Violation::NotOneEnd { .. } => "not one end",
                Violation::Unexplained { .. } => "unexplained",
                Violation::Unknown(_) => "unknown",
            };
            *kinds.entry(k).or_default() += 1;
        }
        format!(
            "{} tasks, {} runs ({} extra: retries {}, requeues {}, system retries {}); violations: {:?}",
            self.tasks,
            self.runs,
            self.extra_runs,
            self.retries,
            self.requeues,
            self.system_retries,
            kinds
        )
    }
}

type Key = (String, String);

/// Judges `runs` and `ends` against the tasks that were added (`expected`, (job, task)),
/// each with `maxTaskRetryCount` `max_retries`.
pub fn check(expected: &[Key], runs: &[RunRec], ends: &[TaskEnd], max_retries: i64) -> Verdict {
    let mut v = Verdict {
        tasks: expected.len(),
        runs: runs.len(),
        ..Verdict::default()
    };
    let wanted: BTreeSet<&Key> = expected.iter().collect();
    let mut by_task: BTreeMap<Key, Vec<&RunRec>> = BTreeMap::new();
    for r in runs {
        let k = (r.job.clone(), r.task.clone());
        if !wanted.contains(&k) {
            v.violations.push(Violation::Unknown(r.clone()));
        }
        if r.end.is_none() {
            v.violations.push(Violation::StillRunning(r.clone()));
        }
        by_task.entry(k).or_default().push(r);
    }
    for list in by_task.values_mut() {
        list.sort_by(|a, b| a.start.total_cmp(&b.start));
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.end.is_none_or(|end| b.start < end) {
                    v.violations.push(Violation::Overlap {
                        job: a.job.clone(),
                        task: a.task.clone(),
                        a: (*a).clone(),
                        b: (*b).clone(),
                    });
                }
            }
        }
    }
    let ends: BTreeMap<Key, &TaskEnd> = ends
        .iter()
        .map(|e| ((e.job.clone(), e.task.clone()), e))
        .collect();
    for k in expected {
        let Some(e) = ends.get(k).filter(|e| e.state == "completed") else {
            v.violations.push(Violation::Lost {
                job: k.0.clone(),
                task: k.1.clone(),
                state: ends.get(k).map(|e| e.state.clone()),
            });
            continue;
        };
        let n = by_task.get(k).map_or(0, Vec::len);
        v.extra_runs += n.saturating_sub(1);
        v.retries += e.retry_count;
        v.requeues += e.requeue_count;
        v.system_retries += e.system_retry_count;
        if e.completed_attempts != 1 || n == 0 {
            v.violations.push(Violation::NotOneEnd {
                job: k.0.clone(),
                task: k.1.clone(),
                completed_attempts: e.completed_attempts,
                runs: n,
            });
        }
        let moves = e.requeue_count + e.system_retry_count;
        let mut per_attempt: BTreeMap<i64, i64> = BTreeMap::new();
        for r in by_task.get(k).into_iter().flatten() {
            *per_attempt.entry(r.attempt).or_default() += 1;
        }
        let busiest = per_attempt.values().copied().max().unwrap_or(0);
        if n as i64 > 1 + e.retry_count + moves * (1 + max_retries)
            || busiest > 1 + max_retries
            || e.attempts > 1 + moves
        {
            v.violations.push(Violation::Unexplained {
                job: k.0.clone(),
                task: k.1.clone(),
                runs: n,
                attempts: e.attempts,
                end: (*e).clone(),
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`check`] with `maxTaskRetryCount` 1.
    fn check1(expected: &[Key], runs: &[RunRec], ends: &[TaskEnd]) -> Verdict {
        check(expected, runs, ends, 1)
    }

    fn run(task: &str, attempt: i64, start: f64, end: Option<f64>) -> RunRec {
        RunRec {
            job: "j".into(),
            task: task.into(),
            attempt,
            node: format!("n{attempt}"),
            start,
            end,
        }
    }

    fn end(task: &str, retry: i64, requeue: i64, system: i64, attempts: i64) -> TaskEnd {
        TaskEnd {
            job: "j".into(),
            task: task.into(),
            state: "completed".into(),
            retry_count: retry,
            requeue_count: requeue,
            system_retry_count: system,
            attempts,
            completed_attempts: 1,
        }
    }

    fn keys(ids: &[&str]) -> Vec<Key> {
        ids.iter()
            .map(|t| ("j".to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn a_clean_run_passes_and_counts_explained_extras() {
        let runs = [
            run("a", 1, 0.0, Some(1.0)),
            // Lost with its node, run again elsewhere: touching is not overlapping.
            run("b", 2, 0.0, Some(2.0)),
            run("b", 3, 2.0, Some(3.0)),
        ];
        let v = check1(
            &keys(&["a", "b"]),
            &runs,
            &[end("a", 0, 0, 0, 1), end("b", 0, 0, 1, 2)],
        );
        assert!(v.ok(), "{:?}", v.violations);
        assert_eq!((v.extra_runs, v.system_retries), (1, 1));
    }

    #[test]
    fn two_runs_of_one_task_at_once_fail() {
        let runs = [run("a", 1, 0.0, Some(5.0)), run("a", 2, 4.9, Some(6.0))];
        let v = check1(&keys(&["a"]), &runs, &[end("a", 0, 1, 0, 2)]);
        assert!(
            matches!(&v.violations[..], [Violation::Overlap { task, .. }] if task == "a"),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_run_never_ended_fails_and_overlaps_every_later_one() {
        let runs = [run("a", 1, 0.0, None), run("a", 2, 100.0, Some(101.0))];
        let v = check1(&keys(&["a"]), &runs, &[end("a", 0, 0, 1, 2)]);
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
        assert!(matches!(v.violations[0], Violation::StillRunning(_)));
        assert!(matches!(v.violations[1], Violation::Overlap { .. }));
    }

    #[test]
    fn a_task_missing_or_not_completed_is_lost() {
        let mut active = end("b", 0, 0, 0, 0);
        active.state = "active".into();
        let v = check1(
            &keys(&["a", "b"]),
            &[run("b", 1, 0.0, Some(1.0))],
            &[active],
        );
        assert_eq!(
            v.violations,
            vec![
                Violation::Lost {
                    job: "j".into(),
                    task: "a".into(),
                    state: None
                },
                Violation::Lost {
                    job: "j".into(),
                    task: "b".into(),
                    state: Some("active".into())
                },
            ]
        );
    }

    #[test]
    fn an_extra_run_or_claim_no_counter_explains_fails() {
        // Two runs one after the other, every counter 0.
        let runs = [run("a", 1, 0.0, Some(1.0)), run("a", 1, 1.0, Some(2.0))];
        let v = check1(&keys(&["a"]), &runs, &[end("a", 0, 0, 0, 1)]);
        assert!(
            matches!(&v.violations[..], [Violation::Unexplained { runs: 2, .. }]),
            "{:?}",
            v.violations
        );
        // A retry explains the second run of the same attempt.
        assert!(check1(&keys(&["a"]), &runs, &[end("a", 1, 0, 0, 1)]).ok());
        // A lost attempt's local retry, which the service never heard of, is explained by
        // its loss (one system retry), within the retry budget...
        let lost = [
            run("a", 1, 0.0, Some(1.0)),
            run("a", 1, 1.0, Some(2.0)),
            run("a", 2, 3.0, Some(4.0)),
        ];
        assert!(check1(&keys(&["a"]), &lost, &[end("a", 0, 0, 1, 2)]).ok());
        // ... but not past it, nor without a loss.
        let mut over = lost.to_vec();
        over.insert(2, run("a", 1, 2.0, Some(3.0)));
        let v = check1(&keys(&["a"]), &over, &[end("a", 0, 0, 1, 2)]);
        assert!(matches!(
            &v.violations[..],
            [Violation::Unexplained { runs: 4, .. }]
        ));
        let v = check1(&keys(&["a"]), &lost, &[end("a", 0, 0, 0, 2)]);
        assert!(matches!(
            &v.violations[..],
            [Violation::Unexplained { runs: 3, .. }]
        ));
        // A second claim is not explained by a local retry.
        let v = check1(
            &keys(&["a"]),
            &[run("a", 1, 0.0, Some(1.0))],
            &[end("a", 1, 0, 0, 2)],
        );
        assert!(matches!(
            &v.violations[..],
            [Violation::Unexplained { attempts: 2, .. }]
        ));
    }

    #[test]
    fn a_completion_taken_twice_or_without_a_run_fails() {
        let mut twice = end("a", 0, 1, 0, 2);
        twice.completed_attempts = 2;
        let runs = [run("a", 1, 0.0, Some(1.0)), run("a", 2, 1.0, Some(2.0))];
        let v = check1(&keys(&["a"]), &runs, &[twice]);
        assert!(matches!(
            &v.violations[..],
            [Violation::NotOneEnd {
                completed_attempts: 2,
                ..
            }]
        ));
        let v = check1(&keys(&["a"]), &[], &[end("a", 0, 0, 0, 1)]);
        assert!(matches!(
            &v.violations[..],
            [Violation::NotOneEnd { runs: 0, .. }]
        ));
    }

    #[test]
    fn a_run_of_a_task_never_added_fails() {
        let v = check1(&keys(&[]), &[run("x", 1, 0.0, Some(1.0))], &[]);
        assert!(matches!(&v.violations[..], [Violation::Unknown(_)]));
    }
}
