//! Counters for the daemon's `/metrics` (Prometheus text format 0.0.4): tasks by state
//! (from the store), task durations, pulls, pull bytes and failures, slots in use.
//! Counters are atomics bumped where things happen; rendering is pure.

use crate::image::progress::{PullObserver, PullUpdate};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Upper bounds (seconds) of the task duration histogram's buckets.
pub const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0];

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), then +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub pulls: AtomicU64,
    pub pull_failures: AtomicU64,
    pub pull_retries: AtomicU64,
    pub pull_bytes: AtomicU64,
    pub slots_used: AtomicU32,
    /// By result (`success`, `failure`).
    durations: Mutex<HashMap<&'static str, Histogram>>,
}

impl Metrics {
    pub fn task_done(&self, success: bool, secs: f64) {
        let mut d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let h = d
            .entry(if success { "success" } else { "failure" })
            .or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; DURATION_BUCKETS.len() + 1];
        }
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// The exposition. `tasks` are counts by state, from the store.
    pub fn render(&self, tasks: &[(String, u64)], slots_total: u32, node_state: &str) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        };
        head(
            &mut o,
            "berth_tasks",
            "gauge",
            "Tasks in the store by state.",
        );
        for (state, n) in tasks {
            o.push_str(&format!("berth_tasks{{state=\"{state}\"}} {n}\n"));
        }
        head(
            &mut o,
            "berth_task_duration_seconds",
            "histogram",
            "Time from start to end of completed tasks, all attempts.",
        );
        let d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let mut results: Vec<_> = d.iter().collect();
        results.sort_by_key(|(r, _)| **r);
        for (result, h) in results {
            let mut acc = 0;
            for (i, b) in DURATION_BUCKETS.iter().enumerate() {
                acc += h.counts[i];
                o.push_str(&format!(
                    "berth_task_duration_seconds_bucket{{result=\"{result}\",le=\"{b}\"}} {acc}\n"
                ));
            }
            o.push_str(&format!(
                "berth_task_duration_seconds_bucket{{result=\"{result}\",le=\"+Inf\"}} {}\n",
                h.count
            ));
            o.push_str(&format!(
                "berth_task_duration_seconds_sum{{result=\"{result}\"}} {}\n",
                h.sum
            ));
            o.push_str(&format!(
                "berth_task_duration_seconds_count{{result=\"{result}\"}} {}\n",
                h.count
            ));
        }
        let counters = [
            ("berth_pulls_total", "Image pulls finished.", &self.pulls),
            (
                "berth_pull_failures_total",
                "Image pulls that failed for good.",
                &self.pull_failures,
            ),
            (
                "berth_pull_retries_total",
                "Pull attempts retried after a transient error.",
                &self.pull_retries,
            ),
            (
                "berth_pull_bytes_total",
                "Layer bytes downloaded by pulls.",
                &self.pull_bytes,
            ),
        ];
        for (name, help, v) in counters {
            head(&mut o, name, "counter", help);
            o.push_str(&format!("{name} {}\n", v.load(Relaxed)));
        }
        head(
            &mut o,
            "berth_slots_used",
            "gauge",
            "Task slots held by running tasks.",
        );
        o.push_str(&format!(
            "berth_slots_used {}\n",
            self.slots_used.load(Relaxed)
        ));
        head(
            &mut o,
            "berth_slots_total",
            "gauge",
            "The node's task slots (taskSlotsPerNode).",
        );
        o.push_str(&format!("berth_slots_total {slots_total}\n"));
        head(
            &mut o,
            "berth_node_state",
            "gauge",
            "1 for the node's current state.",
        );
        o.push_str(&format!("berth_node_state{{state=\"{node_state}\"}} 1\n"));
        o
    }
}

/// Counts pulls as they report, then hands every update on to `inner` (bars or log).
pub struct CountingObserver {
    pub inner: Arc<dyn PullObserver>,
    pub metrics: Arc<Metrics>,
    /// Each downloading layer's size, added to the bytes once it completes.
    sizes: Mutex<HashMap<(String, String), u64>>,
}

impl CountingObserver {
    pub fn new(inner: Arc<dyn PullObserver>, metrics: Arc<Metrics>) -> Self {
        CountingObserver {
            inner,
            metrics,
            sizes: Mutex::default(),
        }
    }
}

impl PullObserver for CountingObserver {
    fn update(&self, u: &PullUpdate<'_>) {
        let m = &self.metrics;
        match u {
            PullUpdate::Done { .. } => {
                m.pulls.fetch_add(1, Relaxed);
            }
            PullUpdate::Failed { .. } => {
                m.pull_failures.fetch_add(1, Relaxed);
            }
            PullUpdate::Retrying { .. } => {
                m.pull_retries.fetch_add(1, Relaxed);
            }
            PullUpdate::Layer {
                image,
                layer,
                status,
                total,
                ..
            } => {
                let key = (image.to_string(), layer.to_string());
                let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
                if *status == "Downloading" {
                    if let Some(t) = total.filter(|t| *t > 0) {
                        sizes.insert(key, t as u64);
                    }
                } else if *status == "Download complete" {
                    if let Some(n) = sizes.remove(&key) {
                        m.pull_bytes.fetch_add(n, Relaxed);
                    }
                }
            }
            PullUpdate::Started { .. } => {}
        }
        self.inner.update(u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl PullObserver for Nothing {
        fn update(&self, _: &PullUpdate<'_>) {}
    }

    #[test]
    fn counts_and_exposition() {
        let m = Arc::new(Metrics::default());
        let o = CountingObserver::new(Arc::new(Nothing), m.clone());
        let layer = |status, total| PullUpdate::Layer {
            image: "i",
            layer: "l1",
            status,
            current: Some(1),
            total,
        };
        o.update(&layer("Downloading", Some(1000)));
        o.update(&layer("Downloading", Some(1000)));
        o.update(&layer("Download complete", None));
        o.update(&layer("Pull complete", None));
        o.update(&PullUpdate::Done {
            image: "i",
            secs: 1.0,
        });
        o.update(&PullUpdate::Failed {
            image: "j",
            error: "x",
        });
        m.task_done(true, 0.5);
        m.task_done(true, 40.0);
        m.task_done(false, 99999.0);
        m.slots_used.store(3, Relaxed);
        let text = m.render(
            &[("active".into(), 2), ("completed".into(), 3)],
            4,
            "running",
        );
        for line in [
            "berth_tasks{state=\"active\"} 2",
            "berth_pull_bytes_total 1000",
            "berth_pulls_total 1",
            "berth_pull_failures_total 1",
            "berth_task_duration_seconds_bucket{result=\"success\",le=\"1\"} 1",
            "berth_task_duration_seconds_bucket{result=\"success\",le=\"30\"} 1",
            "berth_task_duration_seconds_bucket{result=\"success\",le=\"60\"} 2",
            "berth_task_duration_seconds_bucket{result=\"failure\",le=\"21600\"} 0",
            "berth_task_duration_seconds_bucket{result=\"failure\",le=\"+Inf\"} 1",
            "berth_task_duration_seconds_count{result=\"success\"} 2",
            "berth_task_duration_seconds_sum{result=\"success\"} 40.5",
            "berth_slots_used 3",
            "berth_slots_total 4",
            "berth_node_state{state=\"running\"} 1",
            "# TYPE berth_task_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
