//! The directory tree under `AZ_BATCH_NODE_ROOT_DIR`, exactly as the spec lays it out (§5.2).

use std::path::{Path, PathBuf};

/// Paths of one node. Pure: creating the directories is `prepare`'s job.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    root: PathBuf,
}

impl NodeLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeLayout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    pub fn startup(&self) -> PathBuf {
        self.root.join("startup")
    }
    pub fn startup_wd(&self) -> PathBuf {
        self.startup().join("wd")
    }
    pub fn applications(&self) -> PathBuf {
        self.root.join("applications")
    }
    pub fn fsmounts(&self) -> PathBuf {
        self.root.join("fsmounts")
    }
    /// Internal state with no guarantees (the spec's `volatile/`).
    pub fn volatile(&self) -> PathBuf {
        self.root.join("volatile")
    }
    /// A job's directory: `workitems/<job>/job-1` for a plain job; for a job schedule's
    /// job `<schedule>:job-N`, `workitems/<schedule>/job-N`, as Batch lays them out (a
    /// schedule is a work item with one job per run).
    pub fn job_dir(&self, job: &str) -> PathBuf {
        match berth_proto::job_schedule::split_job_id(job) {
            Some((schedule, name)) => self.root.join("workitems").join(schedule).join(name),
            None => self.root.join("workitems").join(job).join("job-1"),
        }
    }
    /// Everything of a job on the node, removed with it: `workitems/<job>` for a plain
    /// job, its `job-N` directory for a schedule's job (the schedule's other jobs stay).
    pub fn job_files(&self, job: &str) -> PathBuf {
        match berth_proto::job_schedule::split_job_id(job) {
            Some(_) => self.job_dir(job),
            None => self.root.join("workitems").join(job),
        }
    }
    /// A job schedule's work item, `workitems/<schedule>`: its jobs' directories.
    pub fn schedule_dir(&self, schedule: &str) -> PathBuf {
        self.root.join("workitems").join(schedule)
    }
    pub fn task_dir(&self, job: &str, task: &str) -> PathBuf {
        self.job_dir(job).join(task)
    }
    /// Where retention deadlines of finished tasks are recorded.
    pub fn retention_dir(&self) -> PathBuf {
        self.volatile().join("retention")
    }

    /// Creates the node-level directories. Everyone may traverse the tree; `shared/` is
    /// writable by every task user, as Batch's is.
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            self.root.clone(),
            self.applications(),
            self.fsmounts(),
            self.startup(),
            self.volatile(),
            self.root.join("workitems"),
        ] {
            std::fs::create_dir_all(&d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::create_dir_all(self.shared())?;
        std::fs::set_permissions(self.shared(), std::fs::Permissions::from_mode(0o1777))?;
        make_agent_dirs(&self.retention_dir(), 0o755)?;
        Ok(())
    }
}

/// Creates `path` and its missing parents, each with exactly `mode` whatever berth's
/// umask: directories of the agent's own (`workitems/<job>/job-1`, `volatile/...`) that
/// a task must not write. A umask of 0 would otherwise leave them `0777`, and a task could
/// swap a sibling's directory (or `job-1`) for a link. Directories already there are left
/// as they are.
pub fn make_agent_dirs(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut missing = Vec::new();
    let mut p = path;
    while std::fs::symlink_metadata(p).is_err() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_paths() {
        let l = NodeLayout::new("/mnt/batch/tasks");
        assert_eq!(
            l.task_dir("myjob", "t1"),
            Path::new("/mnt/batch/tasks/workitems/myjob/job-1/t1")
        );
        assert_eq!(
            l.task_dir("nightly:job-3", "t1"),
            Path::new("/mnt/batch/tasks/workitems/nightly/job-3/t1"),
            "a schedule's job, as Batch lays it out"
        );
        assert_eq!(
            l.job_files("nightly:job-3"),
            Path::new("/mnt/batch/tasks/workitems/nightly/job-3")
        );
        assert_eq!(
            l.job_files("myjob"),
            Path::new("/mnt/batch/tasks/workitems/myjob")
        );
        assert_eq!(
            l.schedule_dir("nightly"),
            Path::new("/mnt/batch/tasks/workitems/nightly")
        );
        assert_eq!(l.startup_wd(), Path::new("/mnt/batch/tasks/startup/wd"));
        assert_eq!(l.shared(), Path::new("/mnt/batch/tasks/shared"));
    }
}
