//! Human and JSON output of final task objects: the only place that prints results.

use crate::schedule::TaskReport;
use berth_proto::TaskView;

/// The final task objects as a JSON array (Batch's GET shape).
pub fn json(reports: &[TaskReport]) -> String {
    let views: Vec<&TaskView> = reports.iter().map(|r| &r.view).collect();
    serde_json::to_string_pretty(&views).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A table: task, state, exit code, time, and the failure (or why it did not run).
pub fn table(reports: &[TaskReport]) -> String {
    table_of(reports, false)
}

/// [`table`] with the node each task ran on (`nodeInfo.nodeId`), for a pool's tasks.
pub fn table_with_nodes(reports: &[TaskReport]) -> String {
    table_of(reports, true)
}

fn table_of(reports: &[TaskReport], nodes: bool) -> String {
    let mut rows = vec![vec![
        "TASK".to_string(),
        "STATE".into(),
        "EXIT".into(),
        "TIME".into(),
    ]];
    if nodes {
        rows[0].push("NODE".into());
    }
    rows[0].push("RESULT".into());
    for r in reports {
        let v = &r.view;
        let e = v.execution_info.as_ref();
        let exit = e
            .and_then(|e| e.exit_code)
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let time = e
            .and_then(|e| Some((e.end_time? - e.start_time?).num_milliseconds()))
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let mut result = match e.and_then(|e| e.failure_info.as_ref()) {
            Some(f) => {
                let detail = f
                    .detail("Message")
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                format!("{} {}{detail}", f.category, f.code)
            }
            None => e
                .and_then(|e| e.result)
                .map(|r| r.to_string())
                .unwrap_or_default(),
        };
        if let Some(n) = &r.note {
            result = n.clone();
        }
        if let Some(retries) = e.map(|e| e.retry_count).filter(|n| *n > 0) {
            result.push_str(&format!(" (retries: {retries})"));
        }
        let mut row = vec![v.spec.id.clone(), v.state.to_string(), exit, time];
        if nodes {
            let node = v.node_info.as_ref().map(|n| n.node_id.as_str());
            row.push(node.unwrap_or("-").to_string());
        }
        row.push(result);
        rows.push(row);
    }
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        out.push_str(&r[last]);
        out.push('\n');
    }
    out
}

/// One line on a job preparation or release task's run: result, exit code, failure.
pub fn job_task(e: &berth_proto::ExecutionInfo) -> String {
    let mut out = e
        .result
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    if let Some(c) = e.exit_code {
        out.push_str(&format!(", exit code {c}"));
    }
    if let Some(f) = &e.failure_info {
        out.push_str(&format!(", {} {}", f.category, f.code));
        if let Some(m) = f.detail("Message") {
            out.push_str(&format!(": {m}"));
        }
    }
    if e.retry_count > 0 {
        out.push_str(&format!(" (retries: {})", e.retry_count));
    }
    out
}

/// The node's state, start task and errors, for people.
pub fn node(n: &berth_proto::ComputeNode) -> String {
    let mut out = format!("node {} (pool {}): {}\n", n.id, n.pool_id, n.state);
    if let Some(st) = &n.start_task_info {
        let exit = st
            .exit_code
            .map(|c| format!(", exit code {c}"))
            .unwrap_or_default();
        let result = st.result.map(|r| format!(": {r}")).unwrap_or_default();
        out.push_str(&format!(
            "  start task: {}{result}{exit}, retries {}\n",
            st.state, st.retry_count
        ));
        if let Some(f) = &st.failure_info {
            out.push_str(&format!(
                "    {} {}: {}\n",
                f.category,
                f.code,
                f.detail("Message").unwrap_or(&f.message)
            ));
        }
    }
    for i in &n.images {
        let why = i
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        out.push_str(&format!("  image {} {}{why}\n", i.image, i.state));
    }
    if let Some(g) = &n.gpus {
        out.push_str(&format!(
            "  GPUs: {} (driver {}, CUDA {}, exposure {})\n",
            g.devices.len(),
            g.driver_version,
            g.cuda_version,
            g.exposure
        ));
        for d in &g.devices {
            out.push_str(&format!(
                "    {} {} {} {} GiB{}\n",
                d.index,
                d.uuid,
                d.name,
                d.memory_bytes >> 30,
                if d.mig_enabled { " MIG" } else { "" }
            ));
        }
    }
    for e in &n.errors {
        out.push_str(&format!("  error {}: {}\n", e.code, e.message));
        for d in &e.error_details {
            out.push_str(&format!("    {}: {}\n", d.name, d.value));
        }
    }
    out
}

/// The node as Batch's GET node JSON.
pub fn node_json(n: &berth_proto::ComputeNode) -> String {
    serde_json::to_string_pretty(n).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
