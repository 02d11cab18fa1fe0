//! `retentionTime`: a finished task's directory is removed once its retention has passed.
//! Deadlines are recorded under `volatile/retention/` so that a later berth process (a
//! later `berth run`, or the daemon after a restart) removes what an earlier one left.

use crate::error_chain::Chain;
use crate::node::NodeLayout;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn record_path(layout: &NodeLayout, task_dir: &Path) -> PathBuf {
    let rel = task_dir.strip_prefix(layout.root()).unwrap_or(task_dir);
    let key: String = rel
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '%' } else { c })
        .collect();
    layout.retention_dir().join(key)
}

/// Records that `task_dir` may be removed `keep` from now.
pub fn record(layout: &NodeLayout, task_dir: &Path, keep: Duration) -> std::io::Result<()> {
    let due = SystemTime::now()
        .checked_add(keep)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 64));
    let secs = due
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX);
    std::fs::write(
        record_path(layout, task_dir),
        format!("{secs}\n{}\n", task_dir.display()),
    )
}

/// Removes every task directory whose retention has passed; returns how many.
pub fn sweep(layout: &NodeLayout) -> std::io::Result<usize> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut removed = 0;
    let dir = match std::fs::read_dir(layout.retention_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let (Some(due), Some(path)) = (
            lines.next().and_then(|s| s.parse::<u64>().ok()),
            lines.next(),
        ) else {
            continue;
        };
        if due > now {
            continue;
        }
        let path = PathBuf::from(path);
        // Only ever remove directories inside this node's `workitems`, named by plain
        // components (no `..` climbing back out).
        let inside = path
            .strip_prefix(layout.root().join("workitems"))
            .is_ok_and(|rel| {
                rel.components().next().is_some()
                    && rel
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
            });
        if inside {
            // The task owns what is inside: removed without following its links.
            match crate::node::beneath::remove_all(&path) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %Chain(&e), "could not remove an expired task directory");
                    continue;
                }
            }
        }
        std::fs::remove_file(entry.path())?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_directories_go_and_others_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let l = NodeLayout::new(tmp.path());
        l.prepare().unwrap();
        let old = l.task_dir("j", "old");
        let new = l.task_dir("j", "new");
        std::fs::create_dir_all(old.join("wd")).unwrap();
        std::fs::create_dir_all(new.join("wd")).unwrap();
        record(&l, &old, Duration::ZERO).unwrap();
        record(&l, &new, Duration::from_secs(3600)).unwrap();
        assert_eq!(sweep(&l).unwrap(), 1);
        assert!(!old.exists() && new.exists());
        assert_eq!(sweep(&l).unwrap(), 0);
    }

    /// A record is only ever a path berth wrote, but the sweep runs as root and removes
    /// whole trees: a path that climbs out of `workitems` with `..` removes nothing.
    #[test]
    fn a_record_that_climbs_out_of_workitems_removes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let l = NodeLayout::new(tmp.path().join("root"));
        l.prepare().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        let climbing = l.root().join("workitems/../../outside");
        std::fs::write(
            l.retention_dir().join("forged"),
            format!("0\n{}\n", climbing.display()),
        )
        .unwrap();
        assert_eq!(sweep(&l).unwrap(), 0);
        assert!(outside.join("keep").exists(), "the sweep left workitems");
    }
}
