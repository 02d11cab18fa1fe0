//! The embedded store: one SQLite file under the node root, WAL journal. Rows keep the
//! Batch JSON of each object plus the columns queries need. Ids are keyed lower-case
//! (Batch ids are case-insensitive) and kept as given inside the JSON.
//!
//! `synchronous = NORMAL` with WAL: a committed write survives the agent being killed
//! (`kill -9`); a power loss can drop the last commits (documented in the README).

use super::{JobOnNode, QueueHead, Store, StoreError, StoredSchedule, StoredTask};
use berth_proto::{JobView, TaskState, TaskView};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

pub struct SqliteStore {
    db: Mutex<Connection>,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// The store keeps secrets (registry passwords, SAS URLs) in full: it is root's alone, and
/// a task read back must still pull and transfer. Every other output redacts them.
fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    berth_proto::common::with_secrets_revealed(|| serde_json::to_string(v)).map_err(backend)
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(backend)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (job_key, key)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, seq);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_key, seq);
CREATE INDEX IF NOT EXISTS tasks_changed
    ON tasks (state, json_extract(body, '$.stateTransitionTime'));
CREATE TABLE IF NOT EXISTS job_on_node (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_schedules (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, readable by its owner only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(backend)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(backend)?;
        }
        let db = Connection::open(path).map_err(backend)?;
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(backend)?;
        }
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        db.execute_batch(SCHEMA).map_err(backend)?;
        Ok(SqliteStore { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn update_schedule(db: &Connection, s: &StoredSchedule) -> Result<(), StoreError> {
    let n = db
        .execute(
            "UPDATE job_schedules SET body = ?2 WHERE key = ?1",
            params![key(&s.spec.id), json(s)?],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "job schedule {:?}",
            s.spec.id
        )));
    }
    Ok(())
}

fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

fn rows_to_tasks(
    stmt: &mut rusqlite::Statement<'_>,
    p: impl rusqlite::Params,
) -> Result<Vec<StoredTask>, StoreError> {
    let rows = stmt
        .query_map(p, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(backend)?;
    let mut out = vec![];
    for row in rows {
        let (seq, body) = row.map_err(backend)?;
        out.push(StoredTask {
            seq,
            view: parse(&body)?,
        });
    }
    Ok(out)
}

/// Inserts `job` in `tx`; `Exists` when a job, or a job schedule, has its id.
fn insert_job(tx: &rusqlite::Transaction<'_>, job: &JobView) -> Result<(), StoreError> {
    if has_key(tx, "job_schedules", &job.spec.id)? {
        return Err(StoreError::Exists(format!(
            "job schedule {:?}",
            job.spec.id
        )));
    }
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO jobs (key, body) VALUES (?1, ?2)",
            params![key(&job.spec.id), json(job)?],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::Exists(format!("job {:?}", job.spec.id)));
    }
    Ok(())
}

/// Whether `table` (one of the store's own) has a row for `id`.
fn has_key(db: &Connection, table: &str, id: &str) -> Result<bool, StoreError> {
    db.query_row(
        &format!("SELECT 1 FROM {table} WHERE key = ?1"),
        params![key(id)],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(backend)
}

impl Store for SqliteStore {
    fn add_job(&self, job: &JobView) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        insert_job(&tx, job)?;
        tx.commit().map_err(backend)
    }

    fn add_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        if has_key(&tx, "jobs", &s.spec.id)? {
            return Err(StoreError::Exists(format!("job {:?}", s.spec.id)));
        }
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO job_schedules (key, body) VALUES (?1, ?2)",
                params![key(&s.spec.id), json(s)?],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::Exists(format!("job schedule {:?}", s.spec.id)));
        }
        tx.commit().map_err(backend)
    }

    fn put_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError> {
        update_schedule(&self.db(), s)
    }

    fn schedule(&self, id: &str) -> Result<Option<StoredSchedule>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM job_schedules WHERE key = ?1",
                params![key(id)],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| parse(&b)).transpose()
    }

    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM job_schedules ORDER BY rowid")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend).and_then(|b| parse(&b)))
            .collect()
    }

    fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute("DELETE FROM job_schedules WHERE key = ?1", params![key(id)])
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("job schedule {id:?}")));
        }
        Ok(())
    }

    fn add_schedule_job(
        &self,
        s: &StoredSchedule,
        job: &JobView,
        tasks: &[TaskView],
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        insert_job(&tx, job)?;
        for t in tasks {
            tx.execute(
                "INSERT INTO tasks (job_key, key, state, body) VALUES (?1, ?2, ?3, ?4)",
                params![key(&t.job_id), key(&t.spec.id), t.state.as_str(), json(t)?],
            )
            .map_err(backend)?;
        }
        update_schedule(&tx, s)?;
        tx.commit().map_err(backend)
    }

    fn put_job(&self, job: &JobView) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute(
                "UPDATE jobs SET body = ?2 WHERE key = ?1",
                params![key(&job.spec.id), json(job)?],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("job {:?}", job.spec.id)));
        }
        Ok(())
    }

    fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM jobs WHERE key = ?1",
                params![key(id)],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.map(|b| parse(&b)).transpose()
    }

    fn jobs(&self) -> Result<Vec<JobView>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM jobs ORDER BY rowid")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend).and_then(|b| parse(&b)))
            .collect()
    }

    fn delete_job(&self, id: &str) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        tx.execute("DELETE FROM tasks WHERE job_key = ?1", params![key(id)])
            .map_err(backend)?;
        tx.execute("DELETE FROM job_on_node WHERE key = ?1", params![key(id)])
            .map_err(backend)?;
        let n = tx
            .execute("DELETE FROM jobs WHERE key = ?1", params![key(id)])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("job {id:?}")));
        }
        Ok(())
    }

    fn job_on_node(&self, job: &str) -> Result<Option<JobOnNode>, StoreError> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM job_on_node WHERE key = ?1",
                params![key(job)],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        body.as_deref().map(parse).transpose()
    }

    fn put_job_on_node(&self, job: &str, v: &JobOnNode) -> Result<(), StoreError> {
        self.db()
            .execute(
                "INSERT INTO job_on_node (key, body) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET body = excluded.body",
                params![key(job), json(v)?],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn add_tasks(&self, tasks: &[TaskView]) -> Result<Vec<i64>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(backend)?;
        let mut seqs = vec![];
        for t in tasks {
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO tasks (job_key, key, state, body) VALUES (?1, ?2, ?3, ?4)",
                    params![key(&t.job_id), key(&t.spec.id), t.state.as_str(), json(t)?],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Exists(format!("task {:?}", t.spec.id)));
            }
            seqs.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(backend)?;
        Ok(seqs)
    }

    fn put_task(&self, t: &TaskView) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute(
                "UPDATE tasks SET state = ?3, body = ?4 WHERE job_key = ?1 AND key = ?2",
                params![key(&t.job_id), key(&t.spec.id), t.state.as_str(), json(t)?],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("task {:?}", t.spec.id)));
        }
        Ok(())
    }

    fn task(&self, job: &str, id: &str) -> Result<Option<StoredTask>, StoreError> {
        let row: Option<(i64, String)> = self
            .db()
            .query_row(
                "SELECT seq, body FROM tasks WHERE job_key = ?1 AND key = ?2",
                params![key(job), key(id)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        row.map(|(seq, b)| {
            Ok(StoredTask {
                seq,
                view: parse(&b)?,
            })
        })
        .transpose()
    }

    fn tasks(&self, job: &str, state: Option<TaskState>) -> Result<Vec<StoredTask>, StoreError> {
        let db = self.db();
        match state {
            Some(s) => {
                let mut stmt = db
                    .prepare("SELECT seq, body FROM tasks WHERE job_key = ?1 AND state = ?2 ORDER BY seq")
                    .map_err(backend)?;
                rows_to_tasks(&mut stmt, params![key(job), s.as_str()])
            }
            None => {
                let mut stmt = db
                    .prepare("SELECT seq, body FROM tasks WHERE job_key = ?1 ORDER BY seq")
                    .map_err(backend)?;
                rows_to_tasks(&mut stmt, params![key(job)])
            }
        }
    }

    fn tasks_after(
        &self,
        job: &str,
        state: Option<TaskState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredTask>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare_cached(
                "SELECT seq, body FROM tasks WHERE job_key = ?1 AND seq > ?2 \
                 AND (?3 IS NULL OR state = ?3) ORDER BY seq LIMIT ?4",
            )
            .map_err(backend)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        rows_to_tasks(
            &mut stmt,
            params![key(job), after, state.map(|s| s.as_str()), limit],
        )
    }

    fn tasks_in(&self, states: &[TaskState]) -> Result<Vec<StoredTask>, StoreError> {
        let db = self.db();
        let mut out = vec![];
        for s in states {
            let mut stmt = db
                .prepare("SELECT seq, body FROM tasks WHERE state = ?1 ORDER BY seq")
                .map_err(backend)?;
            out.extend(rows_to_tasks(&mut stmt, params![s.as_str()])?);
        }
        out.sort_by_key(|t| t.seq);
        Ok(out)
    }

    fn recently_completed(&self, limit: usize) -> Result<Vec<StoredTask>, StoreError> {
        let db = self.db();
        // The same expression as the index `tasks_changed`, so that it is read, not sorted.
        let mut stmt = db
            .prepare_cached(
                "SELECT seq, body FROM tasks WHERE state = 'completed' \
                 ORDER BY json_extract(body, '$.stateTransitionTime') DESC LIMIT ?1",
            )
            .map_err(backend)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        rows_to_tasks(&mut stmt, params![limit])
    }

    fn active_queue(
        &self,
        after: i64,
        limit: usize,
        jobs: Option<&[String]>,
    ) -> Result<Vec<QueueHead>, StoreError> {
        /// The few fields read; serde skips the rest of the body without keeping it.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            id: String,
            job_id: String,
            required_slots: Option<i32>,
            depends_on: Option<berth_proto::TaskDependencies>,
        }
        let db = self.db();
        let mut stmt = db
            .prepare_cached(
                "SELECT seq, body FROM tasks WHERE state = ?1 AND seq > ?2 \
                 AND (?4 IS NULL OR job_key IN (SELECT value FROM json_each(?4))) \
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(backend)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The jobs as a JSON array for json_each; NULL: every job.
        let jobs = jobs.map(|j| serde_json::to_string(j).unwrap_or_default());
        let rows = stmt
            .query_map(
                params![TaskState::Active.as_str(), after, limit, jobs],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(backend)?;
        let mut out = vec![];
        for row in rows {
            let (seq, body) = row.map_err(backend)?;
            let h: Head =
                serde_json::from_str(&body).map_err(|source| StoreError::Row { seq, source })?;
            out.push(QueueHead {
                seq,
                job_id: h.job_id,
                id: h.id,
                required_slots: h.required_slots.unwrap_or(1).max(1) as u32,
                depends_on: h.depends_on,
            });
        }
        Ok(out)
    }

    fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(backend)?;
        rows.map(|r| r.map(|(s, n)| (s, n.max(0) as u64)).map_err(backend))
            .collect()
    }

    fn delete_task(&self, job: &str, id: &str) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute(
                "DELETE FROM tasks WHERE job_key = ?1 AND key = ?2",
                params![key(job), key(id)],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("task {id:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::chain;
    use berth_proto::{JobScheduleState, JobSpec, TaskSpec};
    use std::error::Error;

    /// A store that cannot open keeps the error that stopped it as its source, and says it
    /// once.
    #[test]
    fn a_failed_open_keeps_its_cause() {
        let d = tempfile::tempdir().unwrap();
        // The database's directory is a file: the directory cannot be made (I/O).
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let e = SqliteStore::open(&file.join("state.db")).err().unwrap();
        let io = e
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(chain(&e), format!("state store: {io}"));
        // The database is a directory: SQLite cannot open it.
        let db = d.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let e = SqliteStore::open(&db).err().unwrap();
        let sqlite = e.source().unwrap().downcast_ref::<rusqlite::Error>();
        assert!(sqlite.is_some(), "{e:?}");
        let text = chain(&e);
        assert_eq!(
            text.matches(&sqlite.unwrap().to_string()).count(),
            1,
            "{text}"
        );
    }

    fn job(id: &str) -> JobView {
        JobView::new(JobSpec {
            id: id.into(),
            ..Default::default()
        })
    }

    fn task(job: &str, id: &str) -> TaskView {
        let spec: TaskSpec =
            serde_json::from_value(serde_json::json!({"id": id, "commandLine": "true"})).unwrap();
        TaskView {
            spec,
            job_id: job.into(),
            state: TaskState::Active,
            state_transition_time: chrono::Utc::now(),
            creation_time: chrono::Utc::now(),
            execution_info: None,
            node_info: None,
            pool_attempt: None,
        }
    }

    fn schedule(id: &str) -> StoredSchedule {
        let spec = serde_json::from_value(serde_json::json!({
            "id": id, "schedule": {"recurrenceInterval": "PT1M"}, "jobSpecification": {}
        }))
        .unwrap();
        let now = chrono::Utc::now();
        StoredSchedule::new(spec, now, now)
    }

    /// A schedule's run and the job it creates are written together or not at all; a
    /// schedule and a job never share an id (both would own `workitems/<id>`).
    #[test]
    fn schedules_and_their_runs() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("berth.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            let mut sch = schedule("Nightly");
            s.add_schedule(&sch).unwrap();
            assert!(matches!(
                s.add_schedule(&schedule("nightly")),
                Err(StoreError::Exists(_))
            ));
            assert!(
                matches!(s.add_job(&job("NIGHTLY")), Err(StoreError::Exists(e)) if e.contains("schedule")),
                "a job cannot take a schedule's id"
            );
            s.add_job(&job("plain")).unwrap();
            assert!(matches!(
                s.add_schedule(&schedule("plain")),
                Err(StoreError::Exists(_))
            ));
            sch.created = 1;
            sch.recent_job = Some("Nightly:job-1".into());
            s.add_schedule_job(&sch, &job("Nightly:job-1"), &[])
                .unwrap();
            // The same run again (a replay) adds nothing and counts nothing.
            let mut again = sch.clone();
            again.created = 2;
            assert!(matches!(
                s.add_schedule_job(&again, &job("nightly:JOB-1"), &[]),
                Err(StoreError::Exists(_))
            ));
            assert_eq!(s.schedule("nightly").unwrap().unwrap().created, 1);
            // A run of a schedule that is gone adds no job.
            assert!(matches!(
                s.add_schedule_job(&schedule("gone"), &job("gone:job-1"), &[]),
                Err(StoreError::NotFound(_))
            ));
            assert!(s.job("gone:job-1").unwrap().is_none());
        }
        let s = SqliteStore::open(&path).unwrap();
        let all = s.schedules().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].created, 1);
        assert_eq!(
            all[0].view().execution_info.recent_job.unwrap().id,
            "Nightly:job-1"
        );
        assert!(s.job("nightly:job-1").unwrap().is_some());
        let mut sch = all[0].clone();
        sch.set_state(JobScheduleState::Completed, chrono::Utc::now());
        s.put_schedule(&sch).unwrap();
        let v = s.schedule("NIGHTLY").unwrap().unwrap().view();
        assert_eq!(v.state, JobScheduleState::Completed);
        assert!(v.execution_info.end_time.is_some());
        assert!(
            v.execution_info.next_run_time.is_none(),
            "only while active"
        );
        s.delete_schedule("nightly").unwrap();
        assert!(s.schedule("nightly").unwrap().is_none());
        assert!(matches!(s.put_schedule(&sch), Err(StoreError::NotFound(_))));
    }

    /// The latest completed first, by when they completed rather than when they were
    /// added, and the query reads the index rather than sorting every task.
    #[test]
    fn recently_completed_lists_the_latest_completed_first() {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("s.db")).unwrap();
        s.add_job(&job("j")).unwrap();
        s.add_tasks(&[
            task("j", "a"),
            task("j", "b"),
            task("j", "c"),
            task("j", "d"),
        ])
        .unwrap();
        let t0 = chrono::Utc::now();
        for (id, secs) in [("b", 1), ("a", 3), ("c", 2)] {
            let mut t = s.task("j", id).unwrap().unwrap().view;
            t.state = TaskState::Completed;
            t.state_transition_time = t0 + chrono::Duration::seconds(secs);
            s.put_task(&t).unwrap();
        }
        let ids = |n| -> Vec<String> {
            s.recently_completed(n)
                .unwrap()
                .into_iter()
                .map(|t| t.view.spec.id)
                .collect()
        };
        assert_eq!(ids(10), ["a", "c", "b"], "not d, which is active");
        assert_eq!(ids(2), ["a", "c"]);
        let plan: String = s
            .db()
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq, body FROM tasks WHERE state = 'completed' \
                 ORDER BY json_extract(body, '$.stateTransitionTime') DESC LIMIT 3",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("tasks_changed"), "{plan}");
    }

    #[test]
    fn jobs_and_tasks_survive_reopening() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state").join("berth.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.add_job(&job("J1")).unwrap();
            assert!(
                matches!(s.add_job(&job("j1")), Err(StoreError::Exists(_))),
                "ids are case-insensitive"
            );
            let seqs = s.add_tasks(&[task("J1", "a"), task("J1", "b")]).unwrap();
            assert!(seqs[0] < seqs[1]);
            assert!(matches!(
                s.add_tasks(&[task("j1", "c"), task("J1", "A")]),
                Err(StoreError::Exists(_))
            ));
            assert!(
                s.task("j1", "c").unwrap().is_none(),
                "a failed batch adds nothing"
            );
            let mut b = s.task("J1", "B").unwrap().unwrap().view;
            b.state = TaskState::Running;
            s.put_task(&b).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.jobs().unwrap()[0].spec.id, "J1");
        assert_eq!(s.tasks("J1", None).unwrap().len(), 2);
        let running = s.tasks_in(&[TaskState::Running]).unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].view.spec.id, "b");
        assert_eq!(
            s.tasks("J1", Some(TaskState::Active)).unwrap()[0]
                .view
                .spec
                .id,
            "a"
        );
        let mut c = task("J1", "c");
        c.spec.required_slots = Some(2);
        c.spec.depends_on =
            Some(serde_json::from_value(serde_json::json!({"taskIds": ["a"]})).unwrap());
        s.add_tasks(&[c]).unwrap();
        let q = s.active_queue(0, 10, None).unwrap();
        assert_eq!(
            q.iter()
                .map(|h| (h.id.as_str(), h.required_slots))
                .collect::<Vec<_>>(),
            vec![("a", 1), ("c", 2)],
            "active only, in queue order"
        );
        assert_eq!(q[1].job_id, "J1");
        let page = |after, n| -> Vec<String> {
            let q = s.active_queue(after, n, None).unwrap();
            q.into_iter().map(|h| h.id).collect()
        };
        assert_eq!(page(0, 1), vec!["a"], "a page holds at most `limit`");
        assert_eq!(
            page(q[0].seq, 10),
            vec!["c"],
            "the next page starts after `after`"
        );
        assert!(page(q[1].seq, 10).is_empty());
        assert_eq!(q[1].depends_on.as_ref().unwrap().all_ids(), vec!["a"]);
        assert_eq!(
            s.count_by_state().unwrap(),
            vec![("active".to_string(), 2), ("running".to_string(), 1)]
        );
        s.delete_task("J1", "c").unwrap();
        s.delete_task("J1", "a").unwrap();
        assert!(matches!(
            s.delete_task("J1", "a"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.job_on_node("J1").unwrap(), None);
        let rec = JobOnNode {
            boot_id: Some("b1".into()),
            ..Default::default()
        };
        s.put_job_on_node("J1", &rec).unwrap();
        s.put_job_on_node("j1", &rec).unwrap();
        assert_eq!(s.job_on_node("j1").unwrap(), Some(rec));
        s.delete_job("J1").unwrap();
        assert!(s.tasks("J1", None).unwrap().is_empty());
        assert_eq!(s.job_on_node("J1").unwrap(), None, "deleted with its job");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
