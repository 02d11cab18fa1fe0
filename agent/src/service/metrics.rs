//! The service's metrics at `GET /metrics` (Prometheus text format 0.0.4). Counters of
//! this replica (claims, claim latency, requeues, fenced reports) live in memory; the
//! pool's tasks and nodes by state are counted in the database at each scrape, so every
//! replica shows the same figures for them.

use super::db::DbError;
use super::state::ServiceState;
use crate::api::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the claim latency histogram, in seconds.
const BUCKETS: [f64; 8] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];

static CLAIMS: AtomicU64 = AtomicU64::new(0);
static CLAIM_TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
static CLAIM_MICROS: AtomicU64 = AtomicU64::new(0);
static CLAIM_BUCKETS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static REQUEUES: AtomicU64 = AtomicU64::new(0);
static FENCED: AtomicU64 = AtomicU64::new(0);

/// `n` tasks claimed by one claim transaction that took `took`.
pub fn claimed(n: u64, took: Duration) {
    CLAIMS.fetch_add(n, Relaxed);
    CLAIM_TRANSACTIONS.fetch_add(1, Relaxed);
    CLAIM_MICROS.fetch_add(took.as_micros() as u64, Relaxed);
    let s = took.as_secs_f64();
    for (i, b) in BUCKETS.iter().enumerate() {
        if s <= *b {
            CLAIM_BUCKETS[i].fetch_add(1, Relaxed);
        }
    }
}

/// `n` attempts ended without a result and their tasks requeued.
pub fn requeued(n: u64) {
    REQUEUES.fetch_add(n, Relaxed);
}

/// A node's report refused as fenced.
pub fn fenced() {
    FENCED.fetch_add(1, Relaxed);
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<ServiceState>) -> Result<impl IntoResponse, ApiError> {
    let conn = st.db.conn().await?;
    let tasks = conn
        .query(
            "SELECT lower(j.pool_id), t.state, count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let nodes = conn
        .query(
            "SELECT pool_id, state, count(*) FROM nodes GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, rows: &[tokio_postgres::Row]| {
        line(out, format!("# HELP {name} {help}\n# TYPE {name} gauge"));
        for r in rows {
            let (pool, state, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            line(
                out,
                format!(
                    "{name}{{pool=\"{}\",state=\"{}\"}} {n}",
                    escape(&pool),
                    escape(&state)
                ),
            );
        }
    };
    gauge(
        &mut out,
        "berth_service_tasks",
        "Tasks by pool and state.",
        &tasks,
    );
    gauge(
        &mut out,
        "berth_service_nodes",
        "Nodes by pool and state.",
        &nodes,
    );
    render_counters(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

fn render_counters(out: &mut String) {
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        line(
            out,
            format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"),
        );
    };
    counter(
        out,
        "berth_service_claims_total",
        "Tasks claimed by nodes (this replica).",
        CLAIMS.load(Relaxed),
    );
    counter(
        out,
        "berth_service_requeues_total",
        "Attempts ended without a result and their tasks requeued (this replica).",
        REQUEUES.load(Relaxed),
    );
    counter(
        out,
        "berth_service_fenced_reports_total",
        "Node reports refused because their attempt was no longer current (this replica).",
        FENCED.load(Relaxed),
    );
    let name = "berth_service_claim_seconds";
    line(out, format!("# HELP {name} Time of claim transactions that claimed something.\n# TYPE {name} histogram"));
    for (i, b) in BUCKETS.iter().enumerate() {
        line(
            out,
            format!(
                "{name}_bucket{{le=\"{b}\"}} {}",
                CLAIM_BUCKETS[i].load(Relaxed)
            ),
        );
    }
    let n = CLAIM_TRANSACTIONS.load(Relaxed);
    line(out, format!("{name}_bucket{{le=\"+Inf\"}} {n}"));
    line(
        out,
        format!("{name}_sum {}", CLAIM_MICROS.load(Relaxed) as f64 / 1e6),
    );
    line(out, format!("{name}_count {n}"));
}

/// Appends `l` and a newline.
fn line(out: &mut String, l: String) {
    out.push_str(&l);
    out.push('\n');
}

/// A label value as Prometheus reads it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_complete() {
        claimed(2, Duration::from_millis(3));
        let mut out = String::new();
        render_counters(&mut out);
        let line = |k: &str| {
            out.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        };
        assert!(line("berth_service_claim_seconds_bucket{le=\"0.005\"}") >= 1);
        assert!(
            line("berth_service_claim_seconds_bucket{le=\"+Inf\"}")
                >= line("berth_service_claim_seconds_bucket{le=\"0.002\"}")
        );
        assert!(line("berth_service_claims_total") >= 2);
        assert_eq!(escape("a\"b"), "a\\\"b");
    }
}
