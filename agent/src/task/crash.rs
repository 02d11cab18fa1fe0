//! Test-only crash points. `BERTH_TEST_CRASH_AT=<point>` makes the process SIGKILL itself
//! the first time a container attempt reaches that step, so the engine tests can kill the
//! agent at an exact step (`tests/tests/crash.rs`). Unset, as it always is outside those
//! tests, every point is a no-op. The variable is read once.

use super::plan::TaskPlan;
use std::sync::OnceLock;

/// The environment variable naming the step to die at.
pub const ENV: &str = "BERTH_TEST_CRASH_AT";

/// A step of one container attempt, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The task is `running`, its image present; no create request sent yet.
    BeforeCreate,
    /// The create request has left; its answer is not awaited.
    AfterCreateSent,
    /// The container exists; no start request sent.
    AfterCreate,
    /// The start request has left; its answer is not awaited.
    AfterStartSent,
    /// The engine answered the start.
    AfterStartReturned,
    /// The container exited and its output is saved; not removed yet.
    AfterExit,
    /// The container is removed; the task's end is not recorded yet.
    AfterRemove,
}

impl Point {
    pub const ALL: [Point; 7] = [
        Point::BeforeCreate,
        Point::AfterCreateSent,
        Point::AfterCreate,
        Point::AfterStartSent,
        Point::AfterStartReturned,
        Point::AfterExit,
        Point::AfterRemove,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Point::BeforeCreate => "before-create",
            Point::AfterCreateSent => "after-create-sent",
            Point::AfterCreate => "after-create",
            Point::AfterStartSent => "after-start-sent",
            Point::AfterStartReturned => "after-start-returned",
            Point::AfterExit => "after-exit",
            Point::AfterRemove => "after-remove",
        }
    }

    fn parse(s: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The armed point, if any. A value that names no point stops the process (exit 2): a
/// test that meant to crash somewhere must not run on without crashing.
pub fn armed() -> Option<Point> {
    static AT: OnceLock<Option<Point>> = OnceLock::new();
    *AT.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        match Point::parse(&v) {
            Some(p) => Some(p),
            None => {
                let names: Vec<&str> = Point::ALL.iter().map(|p| p.name()).collect();
                eprintln!("berth: {ENV}={v:?} names no crash point (one of {names:?})");
                std::process::exit(2);
            }
        }
    })
}

/// Whether the process is to die at `p`.
pub fn is_armed(p: Point) -> bool {
    armed() == Some(p)
}

/// Dies at `p` if it is the armed point, as `kill -9` would kill it; `plan` is the task
/// whose attempt reached it.
pub fn at(p: Point, plan: &TaskPlan) {
    if is_armed(p) {
        die(p, plan);
    }
}

/// SIGKILL to this process: no destructor, no flush beyond this line, as in a real crash.
/// The line before it names the step and the task (`job/task`), for the test to read.
pub fn die(p: Point, plan: &TaskPlan) -> ! {
    // Two attempts may reach the step at once: the first dies, the second waits here
    // for the kill, so the last line names one task, whole.
    static DYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    std::mem::forget(DYING.lock());
    let (job, task) = plan.kind.job_task().unwrap_or(("", "starttask"));
    // One write: unbuffered stderr would otherwise write the line in pieces.
    let line = format!("berth: {ENV}: dying at {} in {job}/{task}\n", p.name());
    std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).ok();
    // Should SIGKILL fail to arrive, an abort still ends the process at this step.
    if let Err(e) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("berth: cannot SIGKILL itself ({e}); aborting");
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_parses_by_its_name() {
        for p in Point::ALL {
            assert_eq!(Point::parse(p.name()), Some(p));
        }
        assert_eq!(Point::parse("after-crate"), None);
    }
}
