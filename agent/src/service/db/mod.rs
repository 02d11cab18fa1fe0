//! The service's PostgreSQL: two small connection pools, the schema's migrations, and the
//! one error type of the data layer.
//!
//! Client requests and the node protocol draw from separate pools: a burst of client
//! calls (a big list, a slow add-collection, a lock wait) can use up every client
//! connection, and a heartbeat queued behind them would lapse past the self-fence time
//! and make a healthy node kill its tasks. Nodes keep their own few connections; a client
//! waits at most [`CLIENT_WAIT`] for one and is then answered 503 `ServerBusy`.

pub mod migrate;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Client connections per service replica: handlers are a few short transactions, and
/// PostgreSQL's connection limit is not the pool's size.
pub const CLIENT_POOL_SIZE: usize = 8;

/// Node-protocol connections per service replica (heartbeat, claim, report, adopt, enrol,
/// leave): each call is one short transaction and a waiting claim holds none, so a few
/// carry many nodes.
pub const NODE_POOL_SIZE: usize = 16;

/// The longest a client request waits for a connection before it is answered 503.
pub const CLIENT_WAIT: Duration = Duration::from_secs(5);

/// The longest a node call waits for a connection: inside every profile's self-fence
/// time (10 s in the fast one), so a node hears back, or retries, before it would fence.
pub const NODE_WAIT: Duration = Duration::from_secs(5);

/// How long opening a new connection may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Client requests (and migrations, metrics).
    client: Pool,
    /// The node protocol only.
    node: Pool,
}

impl Db {
    /// The pools for `url` (`postgres://user@host:port/db`); they connect lazily, so the
    /// service starts and answers 503 while PostgreSQL is away.
    pub fn new(url: &str) -> Result<Db, DbError> {
        let cfg: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
        Ok(Db {
            client: pool(cfg.clone(), CLIENT_POOL_SIZE, CLIENT_WAIT)?,
            node: pool(cfg, NODE_POOL_SIZE, NODE_WAIT)?,
        })
    }

    /// One connection for a client request; [`DbError::Unavailable`] after
    /// [`CLIENT_WAIT`] when every client connection is busy.
    pub async fn conn(&self) -> Result<deadpool_postgres::Object, DbError> {
        get(&self.client).await
    }

    /// One connection for a node-protocol call, from the nodes' own pool, which client
    /// requests never take.
    pub async fn node_conn(&self) -> Result<deadpool_postgres::Object, DbError> {
        get(&self.node).await
    }
}

fn pool(cfg: tokio_postgres::Config, size: usize, wait: Duration) -> Result<Pool, DbError> {
    let mgr = Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(CREATE_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Unavailable(Box::new(e)))
}

/// Statements through each connection's cache (deadpool's `prepare_cached`): parsed and
/// planned once per connection, then one round trip a call instead of two (a plain
/// `query` with SQL text prepares it every time). The node protocol's hot path uses these;
/// its statements are fixed texts, so the cache stays small.
pub trait Cached: Sync {
    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>>;
    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Option<Row>, tokio_postgres::Error>>;
    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Row, tokio_postgres::Error>>;
    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<u64, tokio_postgres::Error>>;
}

/// One connection's cache, for the pool's connections and their transactions.
macro_rules! cached {
    ($t:ty) => {
        impl Cached for $t {
            fn query_cached<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    let st = GenericClient::prepare_cached(self, sql).await?;
                    GenericClient::query(self, &st, params).await
                })
            }
            fn query_opt_cached<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Option<Row>, tokio_postgres::Error>> {
                Box::pin(async move {
                    let st = GenericClient::prepare_cached(self, sql).await?;
                    GenericClient::query_opt(self, &st, params).await
                })
            }
            fn query_one_cached<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Row, tokio_postgres::Error>> {
                Box::pin(async move {
                    let st = GenericClient::prepare_cached(self, sql).await?;
                    GenericClient::query_one(self, &st, params).await
                })
            }
            fn execute_cached<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<u64, tokio_postgres::Error>> {
                Box::pin(async move {
                    let st = GenericClient::prepare_cached(self, sql).await?;
                    GenericClient::execute(self, &st, params).await
                })
            }
        }
    };
}

cached!(deadpool_postgres::Object);
cached!(deadpool_postgres::Transaction<'_>);

/// A transaction on a connection of its own (the lease sweeper's): no statement cache,
/// so each statement is prepared as it runs.
impl Cached for tokio_postgres::Transaction<'_> {
    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>> {
        Box::pin(self.query(sql, params))
    }
    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Option<Row>, tokio_postgres::Error>> {
        Box::pin(self.query_opt(sql, params))
    }
    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Row, tokio_postgres::Error>> {
        Box::pin(self.query_one(sql, params))
    }
    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<u64, tokio_postgres::Error>> {
        Box::pin(self.execute(sql, params))
    }
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(Box::new(e)))
}
