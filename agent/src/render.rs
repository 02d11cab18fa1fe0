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
    let mut rows = vec![[
        "TASK".to_string(),
        "STATE".into(),
        "EXIT".into(),
        "TIME".into(),
        "RESULT".into(),
    ]];
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
        rows.push([v.spec.id.clone(), v.state.to_string(), exit, time, result]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    out
}
