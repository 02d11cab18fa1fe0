//! `berth run`: pool start, then the given tasks, then a report. The one-shot mode.

use super::common::{self, NodeArgs};
use super::Exit;
use crate::node::retention;
use crate::render;
use crate::schedule;
use crate::task::NodeContext;
use berth_proto::{load, validate, JobSpec, NodeState, PoolSpec, TaskSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Pool JSON (PoolAddParameter): container images, registries, start task, users, slots.
    #[arg(long, value_name = "POOL.json")]
    pub pool: Option<PathBuf>,
    /// Job JSON: id, commonEnvironmentSettings, usesTaskDependencies, constraints.
    #[arg(long, value_name = "JOB.json")]
    pub job: Option<PathBuf>,
    /// Override the pool's taskSlotsPerNode.
    #[arg(long)]
    pub slots: Option<u32>,
    /// Print the final task objects as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Task JSON files: a task, an array of tasks, or {"value": [...]}.
    #[arg(required = true, value_name = "TASKS.json")]
    pub tasks: Vec<PathBuf>,
}

struct Inputs {
    pool: PoolSpec,
    job: JobSpec,
    tasks: Vec<TaskSpec>,
}

/// A file's text, or why it cannot be read (the problem, with its cause, in words: it
/// joins the list of the input's problems).
pub(crate) fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|source| {
        crate::error_chain::chain(&super::InputError::Read {
            path: path.clone(),
            source,
        })
    })
}

pub(crate) type Loader<T> = fn(&str, &str) -> Result<load::Loaded<T>, load::LoadError>;

/// Loads and validates an optional single-object file (pool or job); problems go to `errors`.
pub(crate) fn one_file<T>(
    path: &Option<PathBuf>,
    load: Loader<T>,
    check: impl Fn(&T) -> Vec<validate::Problem>,
    errors: &mut Vec<String>,
) -> Option<T> {
    let p = path.as_ref()?;
    let name = p.display().to_string();
    match read(p).and_then(|t| load(&name, &t).map_err(|e| e.to_string())) {
        Ok(mut l) => {
            l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
            let item = l.items.remove(0).1;
            errors.extend(
                check(&item)
                    .into_iter()
                    .map(|p| format!("{name}: {}: {}", p.path, p.message)),
            );
            Some(item)
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Loads and validates every input; returns all problems found, not just the first.
fn inputs(args: &RunArgs) -> Result<Inputs, Vec<String>> {
    let mut errors = Vec::new();
    let warn = |w: Vec<String>| w.into_iter().for_each(|w| tracing::warn!("{w}"));
    let mut pool = one_file(&args.pool, load::pool, validate::pool, &mut errors)
        .unwrap_or_else(PoolSpec::default_for_run);
    if let Some(n) = args.slots {
        pool.task_slots_per_node = Some(i32::try_from(n).unwrap_or(i32::MAX));
    }
    let job = one_file(
        &args.job,
        load::job,
        |j| validate::job(j, &pool),
        &mut errors,
    )
    .unwrap_or_else(JobSpec::default_for_run);
    let mut tasks: Vec<(String, String, TaskSpec)> = Vec::new();
    for p in &args.tasks {
        let name = p.display().to_string();
        match read(p).and_then(|t| load::tasks(&name, &t).map_err(|e| e.to_string())) {
            Ok(mut l) => {
                warn(std::mem::take(&mut l.warnings));
                for (path, t) in l.items {
                    errors.extend(
                        validate::task(&path, &t, &job, &pool)
                            .into_iter()
                            .map(|p| format!("{name}: {}: {}", p.path, p.message)),
                    );
                    tasks.push((name.clone(), path, t));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    // Cross-task rules: unique ids (case-insensitive) and dependencies that exist, without cycles.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for (file, path, t) in &tasks {
        if let Some((f0, p0)) = seen.insert(t.id.to_ascii_lowercase(), (file.clone(), path.clone()))
        {
            errors.push(format!("{file}: {path}.id: TaskExists: {:?} is already used at {f0}: {p0} (task ids are case-insensitive)", t.id));
        }
    }
    for (file, path, t) in &tasks {
        if let Some(d) = &t.depends_on {
            for id in d.all_ids() {
                if !seen.contains_key(&id.to_ascii_lowercase()) {
                    errors.push(format!(
                        "{file}: {path}.dependsOn: task {id:?} is not among the tasks given"
                    ));
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&tasks.iter().map(|(_, _, t)| t).collect::<Vec<_>>()) {
        errors.push(format!("dependsOn forms a cycle: {}", cycle.join(" -> ")));
    }
    if errors.is_empty() {
        Ok(Inputs {
            pool,
            job,
            tasks: tasks.into_iter().map(|(_, _, t)| t).collect(),
        })
    } else {
        Err(errors)
    }
}

fn find_cycle(tasks: &[&TaskSpec]) -> Option<Vec<String>> {
    let mut idx: HashMap<String, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        idx.entry(t.id.to_ascii_lowercase()).or_insert(i);
    }
    let edges: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            t.depends_on
                .as_ref()
                .map(|d| {
                    d.all_ids()
                        .iter()
                        .filter_map(|i| idx.get(&i.to_ascii_lowercase()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; tasks.len()];
    fn dfs(
        n: usize,
        edges: &[Vec<usize>],
        mark: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if mark[m] == 1 {
                let start = stack.iter().position(|x| *x == m).unwrap_or(0);
                let mut c = stack[start..].to_vec();
                c.push(m);
                return Some(c);
            }
            if mark[m] == 0 {
                if let Some(c) = dfs(m, edges, mark, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        mark[n] = 2;
        None
    }
    for n in 0..tasks.len() {
        if mark[n] == 0 {
            if let Some(c) = dfs(n, &edges, &mut mark, &mut Vec::new()) {
                return Some(c.into_iter().map(|i| tasks[i].id.clone()).collect());
            }
        }
    }
    None
}

pub async fn run(args: RunArgs) -> ExitCode {
    let inputs = match inputs(&args) {
        Ok(i) => i,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "berth: {} problem(s) in the input; nothing was run",
                errors.len()
            );
            return Exit::InvalidInput.into();
        }
    };
    let (rt, cancel, started) = match common::start_node(&args.node, inputs.pool).await {
        Ok(s) => s,
        Err(code) => return code.into(),
    };
    let node = rt.status.get();
    if node.start_task_info.is_some() || !node.errors.is_empty() || node.gpus.is_some() {
        eprint!("{}", render::node(&node));
    }
    let ready = node.state.schedulable();
    let (reports, job_tasks_ok) = if ready {
        let r =
            schedule::run_job(rt.clone(), &inputs.job, inputs.tasks, cancel.child_token()).await;
        let mut ok = true;
        for (name, info) in [
            ("job preparation task", &r.preparation),
            ("job release task", &r.release),
        ] {
            if let Some(info) = info {
                eprintln!("{name}: {}", render::job_task(info));
                ok &= info.result == Some(berth_proto::TaskResult::Success);
            }
        }
        (r.tasks, ok)
    } else {
        eprintln!("berth: node state {}: no task was run", node.state);
        (not_run(&rt, &inputs.job, inputs.tasks, node.state), true)
    };
    let mut start_task_failed = false;
    if let Some(h) = started.background_start_task {
        match h.await {
            Ok(info) => {
                start_task_failed = info.result != Some(berth_proto::TaskResult::Success);
                eprintln!(
                    "start task: {:?} exit code {:?}",
                    info.result, info.exit_code
                );
            }
            Err(e) => tracing::error!(error = %e, "start task runner failed"),
        }
    }
    if let Err(e) = retention::sweep(&rt.node.layout) {
        tracing::warn!(error = %e, "retention sweep failed");
    }
    crate::shutdown::drain(&rt.tasks, crate::shutdown::DRAIN).await;
    if args.json {
        println!("{}", render::json(&reports));
    } else {
        print!("{}", render::table(&reports));
    }
    let all_ok = ready
        && !start_task_failed
        && job_tasks_ok
        && reports.iter().all(|r| {
            r.view.execution_info.as_ref().and_then(|e| e.result)
                == Some(berth_proto::TaskResult::Success)
        });
    if all_ok { Exit::Ok } else { Exit::Failed }.into()
}

fn not_run(
    rt: &NodeContext,
    job: &JobSpec,
    tasks: Vec<TaskSpec>,
    state: NodeState,
) -> Vec<schedule::TaskReport> {
    let note = format!("not started: node is {state}");
    tasks
        .into_iter()
        .map(|t| schedule::TaskReport::active(rt, job, t, Some(note.clone())))
        .collect()
}
