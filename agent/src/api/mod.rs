//! The daemon's local API: Batch's REST paths and JSON over a Unix socket (mode 0660).
//! Handlers validate and write to the store, then wake the scheduler; they never run tasks.

mod auth;
pub(crate) mod conn;
pub mod counts;
pub(crate) mod entity;
mod error;
pub(crate) use error::body as error_body;
mod files;
pub(crate) mod headers;
mod job_schedules;
pub(crate) mod job_state;
mod jobs;
pub(crate) mod list;
mod pending;
mod pools;
pub mod shared_key;
mod task_counts;
mod tasks;
pub mod tls;

pub use auth::{
    bearer, bearer_refused, check_shared_key, constant_time_eq, parse_tokens, read_token,
    read_tokens, ProxyCredential, TcpGuard,
};
pub use conn::{HEADER_TIMEOUT, MAX_CONNECTIONS};
pub use error::ApiError;
pub use headers::{API_VERSION, API_VERSIONS};
pub use pools::RECENT_COMPLETED;
pub use tasks::MAX_COLLECTION;
// The list and entity answers `berth service` gives as well.
pub(crate) use jobs::listing as job_listing;
pub(crate) use pending::FIELD as PENDING_FIELD;
pub(crate) use task_counts::counts as task_counts;
pub(crate) use tasks::task_path;

use crate::schedule::queue::Scheduler;
use crate::store::Store;
use crate::task::NodeContext;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Batch refuses request bodies of 1 MB or more.
pub const MAX_BODY: usize = 1 << 20;

/// A request's body, under [`MAX_BODY`]; a larger one is Batch's 413
/// `RequestBodyTooLarge` (axum's own rejection is plain text).
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::RequestBodyTooLarge(format!(
                    "the request body must be smaller than {MAX_BODY} bytes"
                )))
            }
            Err(e) => Err(ApiError::InvalidRequestBody(e.body_text())),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub rt: Arc<NodeContext>,
    pub store: Arc<dyn Store>,
    pub sched: Scheduler,
    /// Every change to a job schedule goes through its timer.
    pub schedules: crate::job_schedule::JobSchedules,
}

/// The job `id`, or Batch's 404 `JobNotFound`.
pub(crate) fn find_job(s: &AppState, id: &str) -> Result<berth_proto::JobView, ApiError> {
    s.store
        .job(id)?
        .ok_or_else(|| ApiError::JobNotFound(format!("The specified job {id:?} does not exist.")))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/jobs", post(jobs::add).get(jobs::list))
        .route(
            "/jobs/{job}",
            get(jobs::get)
                .delete(jobs::delete)
                .patch(jobs::patch)
                .put(jobs::put),
        )
        .route("/jobs/{job}/terminate", post(jobs::terminate))
        .route("/jobs/{job}/disable", post(jobs::disable))
        .route("/jobs/{job}/enable", post(jobs::enable))
        .route(
            "/jobs/{job}/jobpreparationandreleasetaskstatus",
            get(jobs::prep_release_status),
        )
        .route("/jobs/{job}/taskcounts", get(task_counts::get))
        .route("/jobs/{job}/tasks", post(tasks::add).get(tasks::list))
        .route("/jobs/{job}/addtaskcollection", post(tasks::add_collection))
        .route(
            "/jobs/{job}/tasks/{task}",
            get(tasks::get).delete(tasks::delete),
        )
        .route("/jobs/{job}/tasks/{task}/terminate", post(tasks::terminate))
        .route(
            "/jobs/{job}/tasks/{task}/reactivate",
            post(tasks::reactivate),
        )
        .route("/jobs/{job}/tasks/{task}/files", get(files::list))
        .route("/jobs/{job}/tasks/{task}/files/{*path}", get(files::get))
        .route("/pools", get(pools::list))
        .route("/pools/{pool}", get(pools::get))
        .route("/pools/{pool}/nodes", get(pools::nodes))
        .route("/pools/{pool}/nodes/{node}", get(pools::node))
        .route("/nodecounts", get(pools::node_counts))
        .route("/pools/{pool}/nodes/{node}/files", get(files::node_list))
        .route(
            "/pools/{pool}/nodes/{node}/files/{*path}",
            get(files::node_get),
        )
        .route(
            "/jobschedules",
            post(job_schedules::add).get(job_schedules::list),
        )
        .route(
            "/jobschedules/{schedule}",
            get(job_schedules::get)
                .delete(job_schedules::delete)
                .patch(job_schedules::patch)
                .put(job_schedules::put),
        )
        .route(
            "/jobschedules/{schedule}/disable",
            post(job_schedules::disable),
        )
        .route(
            "/jobschedules/{schedule}/enable",
            post(job_schedules::enable),
        )
        .route(
            "/jobschedules/{schedule}/terminate",
            post(job_schedules::terminate),
        )
        .route("/jobschedules/{schedule}/jobs", get(job_schedules::jobs))
        .route("/node", get(node))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::ResourceNotFound("no such API path".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY - 1))
        .layer(axum::middleware::from_fn(headers::batch_rules))
        .with_state(state)
}

/// The query's pairs, for handlers that read `$select` and list options.
pub(crate) type Pairs = axum::extract::Query<Vec<(String, String)>>;

/// `$select` of a GET of one entity, if given.
pub(crate) fn select_of(q: &[(String, String)]) -> Result<Option<Vec<String>>, ApiError> {
    q.iter()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| list::parse_select(v))
        .transpose()
}

/// `GET /node`: the node as `GET /pools/{pool}/nodes/{node}` shows it, with berth's
/// `imagePulls` (the pulls under way and the last ended, see `image::board`).
async fn node(
    axum::extract::State(s): axum::extract::State<AppState>,
    h: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(pools::node_view(&s, &h)?))
}

/// Prometheus text: tasks by state, durations, pulls, slots.
async fn metrics(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Result<axum::response::Response, ApiError> {
    let tasks = s.store.count_by_state()?;
    let text =
        s.rt.metrics
            .render(&tasks, s.rt.pool.task_slots(), s.rt.status.state().as_str());
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(axum::body::Body::from(text))
        .map_err(ApiError::internal)
}

/// Bodies must be JSON (Batch sends `application/json; odata=minimalmetadata`).
pub(crate) fn require_json(h: &HeaderMap) -> Result<(), ApiError> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct
        .split(';')
        .next()
        .map(str::trim)
        .map(|m| m.eq_ignore_ascii_case("application/json"))
        == Some(true)
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} is not accepted; send application/json"
        )))
    }
}

/// Serves on `listener` (TCP; HTTPS with `tls`), every request checked by `guard`, until
/// `cancel`; `ui` (the web view's login and assets) beside it, outside the guard.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    ui: Router,
    guard: auth::TcpGuard,
    tls: Option<Arc<tls::ReloadableTls>>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let auth = match (guard.token.is_some(), guard.shared_key.is_some()) {
        (true, true) => "bearer token or SharedKey",
        (false, true) => "SharedKey",
        _ => "bearer token",
    };
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            tls.is_some(),
            headers::mark_scheme,
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            auth::require_token,
        ))
        .merge(ui)
        .layer(axum::middleware::from_fn(headers::request_ids));
    tracing::info!(address = %listener.local_addr()?, scheme, auth, "API listening on TCP");
    conn::serve(listener, app, cancel, conn::Serving::agent(true, tls)).await;
    Ok(())
}

/// Binds the Unix socket at `path` (a stale socket file is replaced), mode 0660, group
/// `berth` when it exists. Bound before it is served, so that readiness means it answers.
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = nix::unistd::Group::from_name("berth")
        .ok()
        .flatten()
        .map(|g| g.gid)
    {
        if let Err(e) = nix::unistd::chown(path, None, Some(gid)) {
            tracing::warn!(error = %e, "cannot give the socket to group berth");
        }
    }
    tracing::info!(socket = %path.display(), "API listening");
    Ok(listener)
}

/// Serves `listener` (from [`bind_unix`] at `path`) until `cancel`, then removes the socket.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: &Path,
    app: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            false,
            headers::mark_scheme,
        ))
        .layer(axum::middleware::from_fn(headers::request_ids));
    conn::serve(listener, app, cancel, conn::Serving::agent(false, None)).await;
    std::fs::remove_file(path).ok();
    Ok(())
}
