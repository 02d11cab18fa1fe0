//! The service's PostgreSQL: a small connection pool, the schema's migrations, and the
//! one error type of the data layer.

pub mod migrate;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;

/// Connections per service replica: claims and reports are short transactions, so a few
/// connections carry many nodes, and PostgreSQL's connection limit is not the pool's size.
pub const POOL_SIZE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database URL does not parse.
    #[error("database URL")]
    Url(#[source] tokio_postgres::Error),
    /// No connection could be had (PostgreSQL down, restarting, or every connection busy
    /// past the wait): the API answers 503 `ServerBusy` and the caller retries.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A statement failed.
    #[error("database")]
    Query(#[from] tokio_postgres::Error),
    /// A stored JSON value no longer reads as what was written.
    #[error("database: stored {what}")]
    Row {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl DbError {
    /// Whether the database itself was away (retry later) rather than the request wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Query(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// The service's handle on PostgreSQL; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// A pool for `url` (`postgres://user@host:port/db`); connects lazily, so the service
    /// starts and answers 503 while PostgreSQL is away.
    pub fn new(url: &str) -> Result<Db, DbError> {
        let cfg: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
        let mgr = Manager::from_config(
            cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Unavailable(Box::new(e)))?;
        Ok(Db { pool })
    }

    /// One connection from the pool.
    pub async fn conn(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(Box::new(e)))
    }
}
