//! WHEN a job schedule creates its next job: pure functions of the schedule, what the
//! timer recorded, whether the schedule's last job is still active, and the time.
//!
//! Batch's rules (`Schedule`): the first job is due at `doNotRunUntil` (or when the
//! schedule is added), then every `recurrenceInterval`; a schedule has at most one active
//! job, so a run that comes due while the last job is active waits for it to complete;
//! a run not created within `startWindow` of its due time is skipped, and so is one whose
//! interval ended (a run is never carried into the next interval); no job is created at
//! or after `doNotRunAfter`. A schedule with no run left completes once its last job has.

use berth_proto::Schedule;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// What the timer knows of a schedule at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// When the next run is due (one not yet created or skipped); `None`: no run left.
    pub next_due: Option<DateTime<Utc>>,
    /// The schedule's last job has not completed.
    pub job_active: bool,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create the job of the run due at `due`; the run after it is due at `next`.
    Create {
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// `count` runs can no longer be created, the last of them due at `last`; the run
    /// after them is due at `next`.
    Skip {
        count: u64,
        last: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// Nothing before `until` (a due time, the end of a start window, `doNotRunAfter`;
    /// `None`: no time), or before the active job completes when `on_job` (a run is due,
    /// or the schedule completes with that job).
    Wait {
        until: Option<DateTime<Utc>>,
        on_job: bool,
    },
    /// No run is left and no job is active: the schedule completes.
    Complete,
}

fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

/// When the first run is due for a schedule added at `added`: `doNotRunUntil`, unless
/// that has passed.
pub fn first_due(s: &Schedule, added: DateTime<Utc>) -> DateTime<Utc> {
    s.do_not_run_until.map_or(added, |u| u.max(added))
}

/// When the run after the one due at `last_due` is due under `s` (`None` for `last_due`:
/// no run yet, the first one); `None`: no run left. A schedule that was changed counts
/// from its last run with its new interval, not before its new `doNotRunUntil`.
pub fn next_due(
    s: &Schedule,
    last_due: Option<DateTime<Utc>>,
    added: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(last) = last_due else {
        return Some(first_due(s, added));
    };
    let next = add(last, s.recurrence()?)?;
    Some(s.do_not_run_until.map_or(next, |u| u.max(next)))
}

/// What a schedule does at `now`, given its timing `s` and state `st`. Called again after
/// each `Create` or `Skip` (recorded first), until it says `Wait` or `Complete`.
pub fn step(s: &Schedule, st: State, now: DateTime<Utc>) -> Step {
    let idle = if st.job_active {
        Step::Wait {
            until: None,
            on_job: true,
        }
    } else {
        Step::Complete
    };
    let Some(due) = st.next_due else {
        return idle;
    };
    if let Some(after) = s.do_not_run_after {
        if now >= after {
            return idle;
        }
        if due >= after {
            // No run is left, but the schedule stays active until its deadline.
            return Step::Wait {
                until: Some(after),
                on_job: false,
            };
        }
    }
    if now < due {
        return Step::Wait {
            until: Some(due),
            on_job: false,
        };
    }
    let every = s.recurrence();
    if let Some(r) = every.and_then(|r| TimeDelta::from_std(r).ok()) {
        // Runs of intervals that ended are not carried forward: only the current one.
        let passed = (now - due).num_milliseconds() / r.num_milliseconds().max(1);
        if passed >= 1 {
            let current = TimeDelta::try_milliseconds(passed.saturating_mul(r.num_milliseconds()))
                .and_then(|d| due.checked_add_signed(d));
            return Step::Skip {
                count: passed.unsigned_abs(),
                last: current.and_then(|c| c.checked_sub_signed(r)).unwrap_or(due),
                next: current,
            };
        }
    }
    let next = every.and_then(|r| add(due, r));
    let window_end = s.start_window().and_then(|w| add(due, w));
    if window_end.is_some_and(|end| now >= end) {
        return Step::Skip {
            count: 1,
            last: due,
            next,
        };
    }
    if st.job_active {
        let until = match (window_end, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        return Step::Wait {
            until,
            on_job: true,
        };
    }
    Step::Create { due, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Minutes after 2030-01-01T00:00:00Z.
    fn at(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(min)
    }

    fn schedule(v: serde_json::Value) -> Schedule {
        serde_json::from_value(v).unwrap()
    }

    fn st(next_due: Option<i64>, job_active: bool) -> State {
        State {
            next_due: next_due.map(at),
            job_active,
        }
    }

    /// Each rule as a row: the schedule, the state, the time, what to do.
    #[test]
    fn steps() {
        let once = schedule(serde_json::json!({}));
        let hourly = schedule(serde_json::json!({"recurrenceInterval": "PT60M"}));
        let windowed =
            schedule(serde_json::json!({"recurrenceInterval": "PT60M", "startWindow": "PT5M"}));
        let once_windowed = schedule(serde_json::json!({"startWindow": "PT5M"}));
        let until_90 = schedule(serde_json::json!({"recurrenceInterval": "PT60M",
            "doNotRunAfter": at(90)}));
        let create = |due: i64, next: Option<i64>| Step::Create {
            due: at(due),
            next: next.map(at),
        };
        let skip = |count: u64, last: i64, next: Option<i64>| Step::Skip {
            count,
            last: at(last),
            next: next.map(at),
        };
        let wait = |until: Option<i64>, on_job: bool| Step::Wait {
            until: until.map(at),
            on_job,
        };
        let cases: Vec<(&str, &Schedule, State, i64, Step)> = vec![
            (
                "not due yet",
                &hourly,
                st(Some(10), false),
                5,
                wait(Some(10), false),
            ),
            (
                "due: create, next an interval on",
                &hourly,
                st(Some(10), false),
                10,
                create(10, Some(70)),
            ),
            (
                "late but in the interval",
                &hourly,
                st(Some(10), false),
                69,
                create(10, Some(70)),
            ),
            (
                "one job only",
                &once,
                st(Some(0), false),
                0,
                create(0, None),
            ),
            (
                "late, no window: still created",
                &once,
                st(Some(0), false),
                10_000,
                create(0, None),
            ),
            (
                "one job only: done once it completes",
                &once,
                st(None, false),
                5,
                Step::Complete,
            ),
            (
                "one job only: waits for its job",
                &once,
                st(None, true),
                5,
                wait(None, true),
            ),
            // At most one active job: wait for it, at most until the next run is due.
            (
                "due while the last job runs",
                &hourly,
                st(Some(60), true),
                61,
                wait(Some(120), true),
            ),
            (
                "...and with a window, until it closes",
                &windowed,
                st(Some(60), true),
                61,
                wait(Some(65), true),
            ),
            (
                "the job completed in the window",
                &windowed,
                st(Some(60), false),
                64,
                create(60, Some(120)),
            ),
            (
                "the window closed",
                &windowed,
                st(Some(60), false),
                65,
                skip(1, 60, Some(120)),
            ),
            (
                "one job only, window closed",
                &once_windowed,
                st(Some(0), false),
                6,
                skip(1, 0, None),
            ),
            // Not carried forward: runs of intervals that ended are skipped, the current one is not.
            (
                "an interval ended",
                &hourly,
                st(Some(60), true),
                121,
                skip(1, 60, Some(120)),
            ),
            (
                "three intervals ended (agent down)",
                &hourly,
                st(Some(60), false),
                250,
                skip(3, 180, Some(240)),
            ),
            (
                "then the current run",
                &hourly,
                st(Some(240), false),
                250,
                create(240, Some(300)),
            ),
            (
                "...unless its window closed",
                &windowed,
                st(Some(240), false),
                250,
                skip(1, 240, Some(300)),
            ),
            // doNotRunAfter: no job at or after it; completes then, once no job is active.
            (
                "before the deadline",
                &until_90,
                st(Some(60), false),
                60,
                create(60, Some(120)),
            ),
            (
                "next run past the deadline: wait for it",
                &until_90,
                st(Some(120), false),
                70,
                wait(Some(90), false),
            ),
            (
                "deadline passed",
                &until_90,
                st(Some(120), false),
                90,
                Step::Complete,
            ),
            (
                "deadline passed, job active",
                &until_90,
                st(Some(120), true),
                95,
                wait(None, true),
            ),
            (
                "due before the deadline, late after it",
                &until_90,
                st(Some(60), false),
                91,
                Step::Complete,
            ),
        ];
        for (what, s, state, now, want) in cases {
            assert_eq!(step(s, state, at(now)), want, "{what}");
        }
    }

    #[test]
    fn first_and_next_due_times() {
        let later =
            schedule(serde_json::json!({"doNotRunUntil": at(30), "recurrenceInterval": "PT60M"}));
        assert_eq!(first_due(&later, at(0)), at(30));
        assert_eq!(
            first_due(&later, at(45)),
            at(45),
            "a doNotRunUntil that passed: now"
        );
        assert_eq!(next_due(&later, None, at(0)), Some(at(30)));
        assert_eq!(next_due(&later, Some(at(30)), at(0)), Some(at(90)));
        let once = schedule(serde_json::json!({}));
        assert_eq!(next_due(&once, Some(at(0)), at(0)), None, "one run only");
        // Changed to start later than its next run: not before its doNotRunUntil.
        let moved =
            schedule(serde_json::json!({"doNotRunUntil": at(500), "recurrenceInterval": "PT60M"}));
        assert_eq!(next_due(&moved, Some(at(30)), at(0)), Some(at(500)));
    }

    /// Driven minute by minute over a day with the job taking 90 minutes each time: every
    /// due time is either created once or skipped once, never both, never twice.
    #[test]
    fn every_run_is_created_or_skipped_exactly_once() {
        let s =
            schedule(serde_json::json!({"recurrenceInterval": "PT60M", "startWindow": "PT20M"}));
        let mut state = st(Some(0), false);
        let mut job_ends = None;
        let (mut created, mut skipped) = (vec![], vec![]);
        for min in 0..24 * 60 {
            let now = at(min);
            state.job_active = job_ends.is_some_and(|end| now < end);
            loop {
                match step(&s, state, now) {
                    Step::Create { due, next } => {
                        created.push(due);
                        job_ends = Some(now + TimeDelta::minutes(90));
                        state.job_active = true;
                        state.next_due = next;
                    }
                    Step::Skip { count, last, next } => {
                        for k in 0..count {
                            skipped.push(last - TimeDelta::minutes(60 * k as i64));
                        }
                        state.next_due = next;
                    }
                    Step::Wait { .. } | Step::Complete => break,
                }
            }
        }
        let mut all: Vec<_> = created.iter().chain(&skipped).copied().collect();
        all.sort();
        let hours: Vec<_> = (0..24).map(|h| at(60 * h)).collect();
        assert_eq!(all, hours, "created {created:?}, skipped {skipped:?}");
        // A 90-minute job misses every other run: created at 0, 2, 4, ... hours.
        assert_eq!(created.len(), 12);
        assert!(created
            .iter()
            .zip(created.iter().skip(1))
            .all(|(a, b)| *b - *a == TimeDelta::minutes(120)));
    }
}
