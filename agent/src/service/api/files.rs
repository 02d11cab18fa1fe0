//! Task files and node files through the service: the files live on the node, so the
//! service forwards the read (GET or HEAD, same path and query, `ocp-range`/`range`
//! passed on) to the owning agent's file address with the node's proxy credential
//! (derived for its current enrolment, `node_api::token::proxy`), and streams
//! the answer back. No database connection is held while the node answers. A node that
//! cannot answer (unknown, gone, unreachable) is 409 `TaskFilesUnavailable` for task
//! files, `NodeNotReady` for node files.

use crate::api::ApiError;
use crate::service::db::DbError;
use crate::service::state::ServiceState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;
use std::time::Duration;

pub fn router() -> Router<ServiceState> {
    Router::new()
        .route("/jobs/{job}/tasks/{task}/files", get(task_files))
        .route("/jobs/{job}/tasks/{task}/files/{*path}", get(task_files))
        .route("/pools/{pool}/nodes/{node}/files", get(node_files))
        .route("/pools/{pool}/nodes/{node}/files/{*path}", get(node_files))
}

/// Request headers a file read passes on to the node.
const PASSED_ON: [&str; 5] = [
    "ocp-range",
    "range",
    "if-modified-since",
    "if-unmodified-since",
    "accept",
];
/// Response headers the node's answer keeps.
const KEPT: [&str; 8] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "last-modified",
    "etag",
    "ocp-batch-file-isdirectory",
    "ocp-batch-file-url",
];

/// The client that reads from nodes: no redirects, bounded waits.
pub(super) fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A node answers for itself only: no redirect to anywhere else, and a node
            // that stops sending does not hold the client's read for ever.
            .redirect(reqwest::redirect::Policy::none())
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client with default settings")
    })
}

/// A file read as it came: what is forwarded to the node.
type Read = (Method, axum::http::Uri, HeaderMap);

/// The path parameter `k`.
fn param(p: &[(String, String)], k: &str) -> String {
    p.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn task_files(
    State(st): State<ServiceState>,
    Path(p): Path<Vec<(String, String)>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, task) = (param(&p, "job"), param(&p, "task"));
    let conn = st.db.conn().await?;
    let row = conn
        .query_opt(
            "SELECT t.node_id, p.id, j.id IS NOT NULL
             FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id AND t.id_key = lower($2)
                         LEFT JOIN pools p ON p.id_key = lower(j.pool_id)
             WHERE j.id_key = lower($1)",
            &[&job, &task],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::JobNotFound(format!("job {job} does not exist")))?;
    let node: Option<String> = row.get(0);
    let pool: Option<String> = row.get(1);
    let exists: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
                            WHERE j.id_key = lower($1) AND t.id_key = lower($2))",
            &[&job, &task],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if !exists {
        return Err(ApiError::TaskNotFound(format!(
            "task {task} of job {job} does not exist"
        )));
    }
    let unavailable = |why: &str| {
        ApiError::TaskFilesUnavailable(format!(
            "the files of task {task} cannot be read now: {why}"
        ))
    };
    let (Some(node), Some(pool)) = (node, pool) else {
        return Err(unavailable("it has not been given to a node"));
    };
    proxy(
        &st,
        conn,
        (&pool, &node),
        (method, uri, headers),
        unavailable,
    )
    .await
}

async fn node_files(
    State(st): State<ServiceState>,
    Path(p): Path<Vec<(String, String)>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (pool, node) = (param(&p, "pool"), param(&p, "node"));
    let conn = st.db.conn().await?;
    let pool_id: String = conn
        .query_opt("SELECT id FROM pools WHERE id_key = lower($1)", &[&pool])
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::PoolNotFound(format!("pool {pool} does not exist")))?
        .get(0);
    let known = conn
        .query_opt(
            "SELECT 1 FROM nodes WHERE pool_id = $1 AND id = $2",
            &[&pool_id, &node],
        )
        .await
        .map_err(DbError::from)?
        .is_some();
    if !known {
        return Err(ApiError::NodeNotFound(format!(
            "node {node} is not in pool {pool}"
        )));
    }
    let not_ready =
        |why: &str| ApiError::NodeNotReady(format!("node {node} cannot answer now: {why}"));
    proxy(
        &st,
        conn,
        (&pool_id, &node),
        (method, uri, headers),
        not_ready,
    )
    .await
}

/// Forwards `read` to `node` of `pool` (the connection is given back first); a node that
/// cannot answer is `unavailable` with the reason.
async fn proxy(
    st: &ServiceState,
    conn: deadpool_postgres::Object,
    (pool, node): (&str, &str),
    (method, uri, headers): Read,
    unavailable: impl Fn(&str) -> ApiError,
) -> Result<Response, ApiError> {
    let target = node_address(&conn, &st.settings.proxy_key(), pool, node)
        .await?
        .ok_or_else(|| unavailable("its node is not reachable"))?;
    drop(conn);
    forward(method, &uri, &headers, target)
        .await
        .map_err(|e| unavailable(&e))
}

/// Where and how to reach a node's file API.
pub(super) struct Target {
    pub(super) address: String,
    pub(super) token: String,
}

/// The node's file address and proxy credential (derived with `key` for its current
/// enrolment), when the node is there to answer.
pub(super) async fn node_address(
    c: &tokio_postgres::Client,
    key: &[u8],
    pool: &str,
    node: &str,
) -> Result<Option<Target>, ApiError> {
    let row = c
        .query_opt(
            "SELECT n.file_address, n.epoch FROM nodes n
             WHERE n.pool_id = $1 AND n.id = $2 AND n.file_address IS NOT NULL
               AND n.state NOT IN ('unknown', 'offline', 'preempted')",
            &[&pool, &node],
        )
        .await
        .map_err(DbError::from)?;
    Ok(row.map(|r| Target {
        address: r.get(0),
        token: crate::service::node_api::token::proxy(key, pool, node, r.get(1)),
    }))
}

/// The same request to the node, its answer streamed back; Err says why the node could
/// not answer (then the caller answers 409).
async fn forward(
    method: Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    target: Target,
) -> Result<Response, String> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // The agent's API requires Batch's api-version: the client's is passed on, else
    // berth's own.
    let path = if uri.query().is_some_and(|q| q.contains("api-version=")) {
        path.to_string()
    } else {
        let sep = if uri.query().is_some() { '&' } else { '?' };
        format!("{path}{sep}api-version={}", crate::api::API_VERSION)
    };
    let url = format!("{}{}", target.address.trim_end_matches('/'), path);
    let mut req = client().request(method, &url).bearer_auth(&target.token);
    for h in PASSED_ON {
        if let Some(v) = headers.get(h) {
            req = req.header(h, v);
        }
    }
    let resp = req.send().await.map_err(|e| {
        tracing::debug!(%url, error = %crate::error_chain::chain(&e), "file proxy");
        "its agent did not answer".to_string()
    })?;
    if resp.status().is_server_error() || resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!("its agent answered {}", resp.status()));
    }
    let mut out = Response::builder().status(resp.status().as_u16());
    for h in KEPT {
        if let Some(v) = resp.headers().get(h) {
            out = out.header(h, v.as_bytes());
        }
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| e.to_string())
}
