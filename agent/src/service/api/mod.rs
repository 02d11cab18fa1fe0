//! The service's client REST API: Batch's paths and JSON, as the standalone agent serves
//! them, for whole pools (plus `/pools`, `/nodecounts`, `/jobs/{id}/taskcounts`). Every
//! handler is a few short transactions on PostgreSQL; nothing is kept between requests.
//! Clients authenticate with a bearer token ([`auth`]); the node protocol's paths are
//! not under this guard (`service::node_api` checks node tokens).

pub mod auth;
mod counts;
pub mod files;
pub(crate) mod jobs;
pub mod nodes;
mod pending;
pub mod pools;
mod prep_release;
pub(crate) mod tasks;

use super::state::ServiceState;
use crate::api::ApiError;
use crate::service::db::Cached;
use axum::routing::{get, post};
use axum::Router;
use berth_proto::{JobView, PoolSpec};
use deadpool_postgres::GenericClient;

/// Converts the database's errors into the API's (503 `ServerBusy` when PostgreSQL is away).
pub(crate) trait Sql<T> {
    fn sql(self) -> Result<T, ApiError>;
}

impl<T> Sql<T> for Result<T, tokio_postgres::Error> {
    fn sql(self) -> Result<T, ApiError> {
        self.map_err(|e| super::db::DbError::Query(e).into())
    }
}

/// Whether `e` is PostgreSQL's unique violation (an id taken).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// The client routes (auth is layered on by the server).
pub fn router() -> Router<ServiceState> {
    Router::new()
        .route("/pools", post(pools::add).get(pools::list))
        .route("/pools/{pool}", get(pools::get).delete(pools::delete))
        .route("/nodecounts", get(counts::nodes))
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
        .route("/jobs/{job}/taskcounts", get(counts::tasks))
        .route(
            "/jobs/{job}/jobpreparationandreleasetaskstatus",
            get(prep_release::status),
        )
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
}

/// A job as stored: its pool's id and its view.
pub(crate) struct JobRow {
    pub pool_id: String,
    pub view: JobView,
}

/// How a transaction holds the job row it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Read only.
    None,
    /// Adding tasks: the job's state cannot change meanwhile; other adds go on.
    Share,
    /// Changing the job's state: one at a time.
    Update,
}

/// The job `id` (any case), or 404 `JobNotFound`, its row held as `lock` says.
pub(crate) async fn find_job(
    c: &(impl GenericClient + Cached),
    id: &str,
    lock: Lock,
) -> Result<JobRow, ApiError> {
    let sql = match lock {
        Lock::None => "SELECT pool_id, view FROM jobs WHERE id_key = lower($1)",
        Lock::Share => "SELECT pool_id, view FROM jobs WHERE id_key = lower($1) FOR SHARE",
        Lock::Update => "SELECT pool_id, view FROM jobs WHERE id_key = lower($1) FOR UPDATE",
    };
    let row = c.query_opt(sql, &[&id]).await.sql()?.ok_or_else(|| {
        ApiError::JobNotFound(format!("The specified job {id:?} does not exist."))
    })?;
    Ok(JobRow {
        pool_id: row.get(0),
        view: stored(row.get(1), "job")?,
    })
}

/// The pool `id` (any case) as stored: its id, spec (secrets included) and state, or
/// 404 `PoolNotFound`.
pub(crate) async fn find_pool(
    c: &(impl GenericClient + Cached),
    id: &str,
) -> Result<(String, PoolSpec, String), ApiError> {
    let row = c
        .query_opt(
            "SELECT id, spec, state FROM pools WHERE id_key = lower($1)",
            &[&id],
        )
        .await
        .sql()?
        .ok_or_else(|| {
            ApiError::PoolNotFound(format!("The specified pool {id:?} does not exist."))
        })?;
    Ok((row.get(0), stored(row.get(1), "pool")?, row.get(2)))
}

/// A stored JSON value read back as what was written.
pub(crate) fn stored<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    what: &'static str,
) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|source| super::db::DbError::Row { what, source }.into())
}

/// The first validation problem as Batch's 400 `InvalidPropertyValue`, naming its path.
pub(crate) fn first_problem(p: Vec<berth_proto::validate::Problem>) -> Result<(), ApiError> {
    match p.into_iter().next() {
        Some(p) => Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        ))),
        None => Ok(()),
    }
}
