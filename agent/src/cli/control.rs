//! `berth job`, `berth jobschedule`, `berth task`, `berth node`: the daemon's CLI client.
//! Each command is one or a few API calls over the socket; tables for people, `--json`
//! for scripts.

use super::client::{Client, ClientError};
use super::{Exit, InputError};
use crate::render;
use crate::schedule::TaskReport;
use berth_proto::{ComputeNode, JobScheduleView, JobView, TaskState, TaskView};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The agent's API socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_SOCKET",
        default_value = "/run/berth/berth.sock",
        value_name = "PATH"
    )]
    pub socket: PathBuf,
    /// A pool's `berth service` instead of the local agent: its URL, or several replicas'
    /// URLs separated by commas (tried in order).
    #[arg(
        long,
        global = true,
        env = "BERTH_SERVICE",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub service: Vec<String>,
    /// The file holding the client token for --service.
    #[arg(long, global = true, env = "BERTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for --service's TLS, beside the system's roots.
    #[arg(long, global = true, env = "BERTH_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Conn {
    /// The client these flags name: the service when `--service` is given, else the
    /// agent's socket. A token or certificate that cannot be read is bad input (exit 2).
    pub fn client(&self) -> Result<Client, ExitCode> {
        if self.service.is_empty() {
            return Ok(Client::new(&self.socket));
        }
        let Some(file) = &self.token_file else {
            let e = super::CommandError::plain(
                "--service needs a client token: give --token-file FILE (or BERTH_TOKEN_FILE)",
            );
            return Err(super::fail(&e, Exit::InvalidInput));
        };
        let token = crate::api::read_token(file)
            .map_err(|e| super::fail(&super::CommandError::plain(e), Exit::InvalidInput))?;
        let ca = match &self.ca_cert {
            Some(p) => Some(std::fs::read(p).map_err(|source| {
                let e = InputError::Read {
                    path: p.clone(),
                    source,
                };
                super::fail(&e, Exit::InvalidInput)
            })?),
            None => None,
        };
        Client::service(&self.service, token.to_string(), ca.as_deref())
            .map_err(|e| super::fail(&e, Exit::InvalidInput))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum JobCmd {
    /// Add a job from a JSON file (Batch's JobAddParameter).
    Add { file: PathBuf },
    /// Show one job.
    Show { id: String },
    /// List the jobs.
    List,
    /// Terminate a job: its running tasks are stopped.
    Terminate {
        id: String,
        /// The job's `terminateReason` (default `UserTerminate`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Disable a job: none of its tasks starts until it is enabled.
    Disable {
        id: String,
        /// What happens to its running tasks: requeue (stopped, run again once enabled),
        /// terminate (stopped, ended) or wait (left to finish).
        #[arg(long, value_name = "requeue|terminate|wait", default_value = "requeue")]
        disable_tasks: berth_proto::DisableJobOption,
    },
    /// Enable a disabled job.
    Enable { id: String },
    /// Delete a job, its tasks and their files.
    Delete { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum JobScheduleCmd {
    /// Add a job schedule from a JSON file (Batch's JobScheduleAddParameter).
    Add { file: PathBuf },
    /// Show one job schedule: state, next run, recent job.
    Show { id: String },
    /// List the job schedules.
    List,
    /// Terminate a job schedule: no more jobs; its active job is terminated.
    Terminate { id: String },
    /// Disable a job schedule: no job is created until it is enabled.
    Disable { id: String },
    /// Enable a disabled job schedule.
    Enable { id: String },
    /// Delete a job schedule and its jobs.
    Delete { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TaskCmd {
    /// Add tasks from JSON files (a task, an array, or {"value": [...]}); more than one
    /// task goes up as collections of at most 100.
    Add {
        #[arg(long)]
        job: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show one task.
    Show {
        #[arg(long)]
        job: String,
        id: String,
    },
    /// List a job's tasks.
    List {
        #[arg(long)]
        job: String,
        /// Only tasks in this state (active, preparing, running, completed).
        #[arg(long)]
        state: Option<TaskState>,
    },
    /// Print a task's stdout.txt (or stderr.txt).
    Logs {
        #[arg(long)]
        job: String,
        id: String,
        #[arg(long)]
        stderr: bool,
        /// Keep printing as the task writes, until it completes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Terminate a task: a running one is stopped and its container removed.
    Terminate {
        #[arg(long)]
        job: String,
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCmd {
    /// A node: state, start task, images, GPUs, errors. Without --service, the local
    /// agent's node; with it, NODE of --pool.
    Show {
        #[arg(long, requires = "id")]
        pool: Option<String>,
        id: Option<String>,
    },
    /// A pool's nodes (--service), optionally only those in a state (idle, running,
    /// unknown, offline, ...).
    List {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        state: Option<String>,
    },
    /// Disable scheduling on a node (--service): no new task goes to it; its running
    /// tasks are requeued, terminated or left to complete.
    Disable {
        #[arg(long)]
        pool: String,
        id: String,
        #[arg(
            long,
            value_name = "requeue|terminate|taskcompletion",
            default_value = "requeue"
        )]
        option: NodeOption,
    },
    /// Enable scheduling on a node again (--service).
    Enable {
        #[arg(long)]
        pool: String,
        id: String,
    },
    /// Remove nodes from their pool (--service); their running tasks as --option says.
    Remove {
        #[arg(long)]
        pool: String,
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(
            long,
            value_name = "requeue|terminate|taskcompletion",
            default_value = "requeue"
        )]
        option: NodeOption,
    },
}

/// Batch's `nodeDisableSchedulingOption` / `nodeDeallocationOption` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NodeOption {
    Requeue,
    Terminate,
    Taskcompletion,
}

impl NodeOption {
    fn as_str(self) -> &'static str {
        match self {
            NodeOption::Requeue => "requeue",
            NodeOption::Terminate => "terminate",
            NodeOption::Taskcompletion => "taskcompletion",
        }
    }
}

fn fail(e: ClientError) -> ExitCode {
    let code = match e {
        ClientError::Api { .. } => Exit::Failed,
        _ => Exit::Unreachable,
    };
    super::fail(&e, code)
}

fn read(file: &PathBuf) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(file).map_err(|source| {
        let e = InputError::Read {
            path: file.clone(),
            source,
        };
        super::fail(&e, Exit::InvalidInput)
    })
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn job(cmd: JobCmd, conn: Conn) -> ExitCode {
    let c = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = match cmd {
        JobCmd::Add { file } => {
            let body = match read(&file) {
                Ok(b) => b,
                Err(code) => return code,
            };
            c.request("POST", "/jobs", Some(body), &[]).await.map(|_| {
                if !conn.json {
                    println!("job added");
                }
            })
        }
        JobCmd::Show { id } => match c.get_json::<JobView>(&format!("/jobs/{id}")).await {
            Ok(j) if conn.json => {
                print_json(&j);
                Ok(())
            }
            Ok(j) => {
                print!("{}", jobs_table(std::slice::from_ref(&j)));
                if j.spec.job_preparation_task.is_some() {
                    job_tasks_lines(&c, &id).await
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        },
        JobCmd::List => c.get_list::<JobView>("/jobs").await.map(|l| {
            if conn.json {
                print_json(&l.value)
            } else {
                print!("{}", jobs_table(&l.value))
            }
        }),
        JobCmd::Terminate { id, reason } => {
            let body = reason.map(|r| {
                serde_json::to_vec(&serde_json::json!({ "terminateReason": r })).unwrap_or_default()
            });
            c.request("POST", &format!("/jobs/{id}/terminate"), body, &[])
                .await
                .map(|_| println!("job {id} terminated"))
        }
        JobCmd::Disable { id, disable_tasks } => {
            let body = serde_json::json!({ "disableTasks": disable_tasks });
            c.request(
                "POST",
                &format!("/jobs/{id}/disable"),
                Some(serde_json::to_vec(&body).unwrap_or_default()),
                &[],
            )
            .await
            .map(|_| println!("job {id} disabled ({disable_tasks})"))
        }
        JobCmd::Enable { id } => c
            .request("POST", &format!("/jobs/{id}/enable"), None, &[])
            .await
            .map(|_| println!("job {id} enabled")),
        JobCmd::Delete { id } => c
            .request("DELETE", &format!("/jobs/{id}"), None, &[])
            .await
            .map(|_| println!("job {id} deleted")),
    };
    r.map(|_| Exit::Ok.into()).unwrap_or_else(fail)
}

pub async fn job_schedule(cmd: JobScheduleCmd, conn: Conn) -> ExitCode {
    let c = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let post = |id: &str, verb: &str, done: &'static str| {
        let (c, id, path) = (&c, id.to_string(), format!("/jobschedules/{id}/{verb}"));
        async move {
            c.request("POST", &path, None, &[])
                .await
                .map(|_| println!("job schedule {id} {done}"))
        }
    };
    let r = match cmd {
        JobScheduleCmd::Add { file } => {
            let body = match read(&file) {
                Ok(b) => b,
                Err(code) => return code,
            };
            c.request("POST", "/jobschedules", Some(body), &[])
                .await
                .map(|_| {
                    if !conn.json {
                        println!("job schedule added");
                    }
                })
        }
        JobScheduleCmd::Show { id } => c
            .get_json::<JobScheduleView>(&format!("/jobschedules/{id}"))
            .await
            .map(|s| {
                if conn.json {
                    print_json(&s)
                } else {
                    print!("{}", schedules_table(std::slice::from_ref(&s)))
                }
            }),
        JobScheduleCmd::List => c
            .get_list::<JobScheduleView>("/jobschedules")
            .await
            .map(|l| {
                if conn.json {
                    print_json(&l.value)
                } else {
                    print!("{}", schedules_table(&l.value))
                }
            }),
        JobScheduleCmd::Terminate { id } => post(&id, "terminate", "terminated").await,
        JobScheduleCmd::Disable { id } => post(&id, "disable", "disabled").await,
        JobScheduleCmd::Enable { id } => post(&id, "enable", "enabled").await,
        JobScheduleCmd::Delete { id } => c
            .request("DELETE", &format!("/jobschedules/{id}"), None, &[])
            .await
            .map(|_| println!("job schedule {id} deleted")),
    };
    r.map(|_| Exit::Ok.into()).unwrap_or_else(fail)
}

/// One line per schedule: id, state, when its next job is due, its last job.
fn schedules_table(all: &[JobScheduleView]) -> String {
    let w = all
        .iter()
        .map(|s| s.spec.id.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "{:<w$}  {:<11}  {:<19}  RECENT JOB\n",
        "SCHEDULE", "STATE", "NEXT RUN"
    );
    for s in all {
        let info = &s.execution_info;
        out.push_str(&format!(
            "{:<w$}  {:<11}  {:<19}  {}\n",
            s.spec.id,
            s.state.to_string(),
            info.next_run_time
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            info.recent_job.as_ref().map_or("-", |j| j.id.as_str())
        ));
    }
    out
}

/// The job's preparation and release tasks on this node, one line each.
async fn job_tasks_lines(c: &Client, id: &str) -> Result<(), ClientError> {
    let l = c
        .get_json::<super::client::Listing<berth_proto::JobPrepReleaseStatus>>(&format!(
            "/jobs/{id}/jobpreparationandreleasetaskstatus"
        ))
        .await?;
    let Some(st) = l.value.into_iter().next() else {
        println!("job preparation task: not run on this node yet");
        return Ok(());
    };
    for (name, info) in [
        (
            "job preparation task",
            st.job_preparation_task_execution_info,
        ),
        ("job release task", st.job_release_task_execution_info),
    ] {
        let Some(i) = info else { continue };
        let r = &i.run;
        let mut line = format!("{name}: {}", r.state);
        if let Some(res) = r.result {
            line.push_str(&format!(", {res}"));
        }
        if let Some(code) = r.exit_code {
            line.push_str(&format!(", exit code {code}"));
        }
        if let Some(f) = &r.failure_info {
            line.push_str(&format!(", {} {}", f.category, f.code));
        }
        println!("{line} ({})", i.task_root_directory);
    }
    Ok(())
}

fn jobs_table(jobs: &[JobView]) -> String {
    let mut out = String::new();
    let w = jobs
        .iter()
        .map(|j| j.spec.id.len())
        .max()
        .unwrap_or(0)
        .max(3);
    out.push_str(&format!("{:<w$}  {:<11}  CREATED\n", "JOB", "STATE"));
    for j in jobs {
        out.push_str(&format!(
            "{:<w$}  {:<11}  {}\n",
            j.spec.id,
            j.state.to_string(),
            j.creation_time.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    out
}

/// A pool's tasks (`pool`: through a service) get the node each ran on.
fn tasks_table(tasks: Vec<TaskView>, pool: bool) -> String {
    let reports: Vec<TaskReport> = tasks
        .into_iter()
        .map(|view| TaskReport { view, note: None })
        .collect();
    if pool {
        render::table_with_nodes(&reports)
    } else {
        render::table(&reports)
    }
}

pub async fn task(cmd: TaskCmd, conn: Conn) -> ExitCode {
    let c = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cmd {
        TaskCmd::Add { job, files } => add_tasks(&c, &job, &files, conn.json).await,
        TaskCmd::Show { job, id } => c
            .get_json::<TaskView>(&format!("/jobs/{job}/tasks/{id}"))
            .await
            .map(|t| {
                if conn.json {
                    print_json(&t)
                } else {
                    print!("{}", tasks_table(vec![t], !conn.service.is_empty()))
                }
                Exit::Ok.into()
            })
            .unwrap_or_else(fail),
        TaskCmd::List { job, state } => {
            let q = state
                .map(|s| format!("?$filter=state%20eq%20'{s}'"))
                .unwrap_or_default();
            c.get_list::<TaskView>(&format!("/jobs/{job}/tasks{q}"))
                .await
                .map(|l| {
                    if conn.json {
                        print_json(&l.value)
                    } else {
                        print!("{}", tasks_table(l.value, !conn.service.is_empty()))
                    }
                    Exit::Ok.into()
                })
                .unwrap_or_else(fail)
        }
        TaskCmd::Logs {
            job,
            id,
            stderr,
            follow,
        } => logs(
            &c,
            &job,
            &id,
            if stderr { "stderr.txt" } else { "stdout.txt" },
            follow,
        )
        .await
        .map(|_| Exit::Ok.into())
        .unwrap_or_else(fail),
        TaskCmd::Terminate { job, id } => c
            .request(
                "POST",
                &format!("/jobs/{job}/tasks/{id}/terminate"),
                None,
                &[],
            )
            .await
            .map(|_| {
                println!("task {id} terminated");
                Exit::Ok.into()
            })
            .unwrap_or_else(fail),
    }
}

/// One task: `POST .../tasks`; more: `addtaskcollection` by 100, each task's result printed.
async fn add_tasks(c: &Client, job: &str, files: &[PathBuf], json: bool) -> ExitCode {
    let mut tasks: Vec<serde_json::Value> = vec![];
    for f in files {
        let text = match read(f) {
            Ok(b) => b,
            Err(code) => return code,
        };
        let v: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(source) => {
                let e = InputError::NotJson {
                    path: f.clone(),
                    source,
                };
                return super::fail(&e, Exit::InvalidInput);
            }
        };
        match v {
            serde_json::Value::Array(a) => tasks.extend(a),
            serde_json::Value::Object(ref o) if o.get("value").is_some_and(|x| x.is_array()) => {
                tasks.extend(o["value"].as_array().cloned().unwrap_or_default())
            }
            other => tasks.push(other),
        }
    }
    if tasks.len() == 1 {
        let body = serde_json::to_vec(&tasks[0]).unwrap_or_default();
        return match c
            .request("POST", &format!("/jobs/{job}/tasks"), Some(body), &[])
            .await
        {
            Ok(_) => {
                if !json {
                    println!("task {} added", tasks[0]["id"].as_str().unwrap_or("?"));
                }
                Exit::Ok.into()
            }
            Err(e) => fail(e),
        };
    }
    let mut failed = false;
    let mut results = vec![];
    for chunk in tasks.chunks(crate::api::MAX_COLLECTION) {
        let body = serde_json::to_vec(&serde_json::json!({ "value": chunk })).unwrap_or_default();
        let r = match c
            .request(
                "POST",
                &format!("/jobs/{job}/addtaskcollection"),
                Some(body),
                &[],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        for t in v["value"].as_array().cloned().unwrap_or_default() {
            let ok = t["status"] == "success";
            failed |= !ok;
            if !json {
                let why = t["error"]["message"]["value"].as_str().unwrap_or("");
                println!(
                    "task {} {}{}",
                    t["taskId"].as_str().unwrap_or("?"),
                    if ok { "added" } else { "NOT added: " },
                    why
                );
            }
            results.push(t);
        }
    }
    if json {
        print_json(&results);
    }
    if failed {
        Exit::Failed.into()
    } else {
        Exit::Ok.into()
    }
}

/// Prints a task file; with `follow`, keeps asking for what was added (Batch's `ocp-range`)
/// until the task has completed and nothing more came.
async fn logs(
    c: &Client,
    job: &str,
    id: &str,
    file: &str,
    follow: bool,
) -> Result<(), ClientError> {
    use std::io::Write;
    let path = format!("/jobs/{job}/tasks/{id}/files/{file}");
    let mut offset: u64 = 0;
    loop {
        // Read the state first: a task that completed before this read has all its output.
        let done = if follow {
            c.get_json::<TaskView>(&format!("/jobs/{job}/tasks/{id}"))
                .await?
                .state
                == TaskState::Completed
        } else {
            true
        };
        let range = format!("bytes={offset}-");
        match c
            .request("GET", &path, None, &[("ocp-range", &range)])
            .await
        {
            Ok(r) => {
                offset += r.body.len() as u64;
                let mut out = std::io::stdout().lock();
                out.write_all(&r.body).ok();
                out.flush().ok();
            }
            // Not there yet: the task has not started.
            Err(ClientError::Api {
                status: 404, code, ..
            }) if code == "FileNotFound" && !done => {}
            Err(e) => return Err(e),
        }
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn node(cmd: NodeCmd, conn: Conn) -> ExitCode {
    let c = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let needs_service = !matches!(cmd, NodeCmd::Show { id: None, .. });
    if needs_service && conn.service.is_empty() {
        let e = super::CommandError::plain(
            "this node command acts on a pool: give --service URL (or BERTH_SERVICE)",
        );
        return super::fail(&e, Exit::InvalidInput);
    }
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, PATH).to_string();
    let r = match cmd {
        NodeCmd::Show { id: None, .. } => c.get_json::<ComputeNode>("/node").await.map(|n| {
            if conn.json {
                println!("{}", render::node_json(&n))
            } else {
                print!("{}", render::node(&n))
            }
        }),
        NodeCmd::Show { pool, id: Some(id) } => {
            let pool = pool.unwrap_or_default();
            let path = format!("/pools/{}/nodes/{}", enc(&pool), enc(&id));
            c.get_json::<serde_json::Value>(&path).await.map(|n| {
                if conn.json {
                    print_json(&n)
                } else {
                    print!("{}", pool_nodes_table(std::slice::from_ref(&n)))
                }
            })
        }
        NodeCmd::List { pool, state } => {
            let mut path = format!("/pools/{}/nodes", enc(&pool));
            if let Some(st) = state {
                let f = format!("state eq '{}'", st.replace('\'', "''"));
                path.push_str(&format!("?$filter={}", enc(&f)));
            }
            c.get_list::<serde_json::Value>(&path).await.map(|l| {
                if conn.json {
                    print_json(&l.value)
                } else {
                    print!("{}", pool_nodes_table(&l.value))
                }
            })
        }
        NodeCmd::Disable { pool, id, option } => {
            let body = serde_json::json!({ "nodeDisableSchedulingOption": option.as_str() });
            let path = format!("/pools/{}/nodes/{}/disablescheduling", enc(&pool), enc(&id));
            c.request("POST", &path, Some(body.to_string().into_bytes()), &[])
                .await
                .map(|_| println!("scheduling disabled on node {id}"))
        }
        NodeCmd::Enable { pool, id } => {
            let path = format!("/pools/{}/nodes/{}/enablescheduling", enc(&pool), enc(&id));
            c.request("POST", &path, None, &[])
                .await
                .map(|_| println!("scheduling enabled on node {id}"))
        }
        NodeCmd::Remove { pool, ids, option } => {
            let body = serde_json::json!({
                "nodeList": ids,
                "nodeDeallocationOption": option.as_str(),
            });
            let path = format!("/pools/{}/removenodes", enc(&pool));
            c.request("POST", &path, Some(body.to_string().into_bytes()), &[])
                .await
                .map(|_| println!("nodes {} are being removed", ids.join(", ")))
        }
    };
    match r {
        Ok(()) => Exit::Ok.into(),
        Err(e) => fail(e),
    }
}

/// Characters escaped in a path segment or query value.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Nodes as the service lists them: id, state, scheduling, running tasks, errors.
fn pool_nodes_table(nodes: &[serde_json::Value]) -> String {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
    let w = nodes
        .iter()
        .map(|n| s(n, "id").len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<19}  {:<10}  {:>7}  ERRORS\n",
        "NODE", "STATE", "SCHEDULING", "RUNNING"
    );
    for n in nodes {
        let errors: Vec<String> = n["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| s(e, "code")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<w$}  {:<19}  {:<10}  {:>7}  {}\n",
            s(n, "id"),
            s(n, "state"),
            s(n, "schedulingState"),
            n["runningTasksCount"].as_i64().unwrap_or(0),
            if errors.is_empty() {
                "-".to_string()
            } else {
                errors.join(",")
            }
        ));
    }
    out
}

/// `berth pool add|show|list|delete` against a pool's service.
pub async fn pool(cmd: super::pool::ServiceCmd) -> ExitCode {
    use super::pool::ServiceCmd;
    let conn = match &cmd {
        ServiceCmd::Add { conn, .. }
        | ServiceCmd::Show { conn, .. }
        | ServiceCmd::List { conn }
        | ServiceCmd::Delete { conn, .. } => conn.clone(),
    };
    if conn.service.is_empty() {
        let e = super::CommandError::plain(
            "pools live in a pool's service: give --service URL (or BERTH_SERVICE)",
        );
        return super::fail(&e, Exit::InvalidInput);
    }
    let c = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, PATH).to_string();
    let r = match cmd {
        ServiceCmd::Add { file, .. } => {
            let body = match read(&file) {
                Ok(b) => b,
                Err(code) => return code,
            };
            c.request("POST", "/pools", Some(body), &[])
                .await
                .map(|_| println!("pool added"))
        }
        ServiceCmd::Show { id, .. } => c
            .get_json::<serde_json::Value>(&format!("/pools/{}", enc(&id)))
            .await
            .map(|p| {
                if conn.json {
                    print_json(&p)
                } else {
                    print!("{}", pools_table(std::slice::from_ref(&p)))
                }
            }),
        ServiceCmd::List { .. } => c.get_list::<serde_json::Value>("/pools").await.map(|l| {
            if conn.json {
                print_json(&l.value)
            } else {
                print!("{}", pools_table(&l.value))
            }
        }),
        ServiceCmd::Delete { id, .. } => c
            .request("DELETE", &format!("/pools/{}", enc(&id)), None, &[])
            .await
            .map(|_| println!("pool {id} is being deleted")),
    };
    match r {
        Ok(()) => Exit::Ok.into(),
        Err(e) => fail(e),
    }
}

fn pools_table(pools: &[serde_json::Value]) -> String {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
    let w = pools
        .iter()
        .map(|p| s(p, "id").len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<8}  {:>5}  {:>5}  FILL\n",
        "POOL", "STATE", "SLOTS", "NODES"
    );
    for p in pools {
        out.push_str(&format!(
            "{:<w$}  {:<8}  {:>5}  {:>5}  {}\n",
            s(p, "id"),
            s(p, "state"),
            p["taskSlotsPerNode"].as_i64().unwrap_or(1),
            p["currentDedicatedNodes"].as_i64().unwrap_or(0),
            p["taskSchedulingPolicy"]["nodeFillType"]
                .as_str()
                .unwrap_or("spread")
        ));
    }
    out
}
