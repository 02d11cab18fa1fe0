//! The service's server: binds, serves HTTPS (rustls, ring) or, only when asked for,
//! plain HTTP; the client API under its bearer-token guard merged with the node protocol
//! (which checks node tokens itself). Migrations run in the background at start, retried
//! with backoff while PostgreSQL is away; until they are done every request is answered
//! 503 `ServerBusy`.

use super::config::{ServiceConfig, Transport};
use super::db::Db;
use super::state::ServiceState;
use crate::api::ApiError;
use crate::backoff::Backoff;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// Connections served at once: a node holds up to three (a claim's long poll, a
/// heartbeat, a report), so this is room for a few thousand nodes and their clients;
/// past it, `503 ServerBusy`. The process's descriptor limit must allow as many.
const MAX_CONNECTIONS: usize = 16_384;

/// How long a stopping service lets requests in progress finish (a claim's long poll
/// is answered empty sooner: it watches the same cancellation).
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("database URL")]
    Db(#[from] super::db::DbError),
    #[error("TLS certificate or key {path}")]
    Pem {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The whole app: client routes (guarded), node routes, Batch's 404 and 405 bodies, and
/// 503 until the schema is migrated; every answer through the agent's API conventions
/// (`api::headers`: `request-id`, the `client-request-id` echo, `api-version` checked on
/// every Batch path).
pub fn app(state: ServiceState, migrated: Arc<AtomicBool>) -> Router {
    let client = super::api::router()
        .merge(super::api::nodes::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::api::auth::require_client,
        ));
    client
        .merge(super::node_api::router())
        .merge(crate::ui::router(ui(&state.settings)))
        .fallback(|| async { ApiError::ResourceNotFound("no such API path".into()) })
        .layer(axum::middleware::from_fn_with_state(
            migrated,
            until_migrated,
        ))
        .layer(axum::middleware::from_fn(crate::api::headers::batch_rules))
        .layer(DefaultBodyLimit::max(crate::api::MAX_BODY - 1))
        .layer(axum::middleware::from_fn(crate::api::headers::request_ids))
        .with_state(state)
}

/// The web view: the client tokens act, the read-only tokens read.
fn ui(settings: &Arc<super::state::Settings>) -> crate::ui::Ui {
    let s = settings.clone();
    crate::ui::Ui {
        mode: crate::ui::Mode::Service,
        check: Arc::new(move |t: &str| {
            use crate::ui::{session::one_of, Access};
            if one_of(&s.client_tokens, t) {
                Some(Access::Full)
            } else if one_of(&s.read_only_tokens, t) {
                Some(Access::ReadOnly)
            } else {
                None
            }
        }),
        secure_cookie: settings.secure_cookies,
    }
}

async fn until_migrated(State(done): State<Arc<AtomicBool>>, req: Request, next: Next) -> Response {
    if done.load(Ordering::Acquire) {
        return next.run(req).await;
    }
    ApiError::ServerBusy(
        "the service is preparing its database (PostgreSQL not reached yet); retry later".into(),
    )
    .into_response()
}

/// Runs migrations until they succeed (or `cancel`), then marks `done`.
async fn migrate(db: Db, done: Arc<AtomicBool>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match super::db::migrate::run(&db).await {
            Ok(applied) => {
                tracing::info!(?applied, "database schema up to date");
                done.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain::Chain(&e), "database not ready; retrying")
            }
        }
        if !backoff.sleep(&cancel).await {
            return;
        }
    }
}

/// The TLS server configuration of a PEM certificate chain and key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |p: &Path| {
        let p = p.display().to_string();
        move |source| ServerError::Pem { path: p, source }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `cfg` until `cancel`. Prints `listening on ADDR` on stderr once bound.
pub async fn run(cfg: ServiceConfig, cancel: CancellationToken) -> Result<(), ServerError> {
    let db = Db::new(&cfg.database_url)?;
    let tls = match &cfg.transport {
        Transport::Tls { cert, key } => Some(crate::api::tls::ReloadableTls::of(
            cert.clone(),
            key.clone(),
        )?),
        Transport::Plain => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("listening on {addr}");
    tracing::info!(address = %addr, scheme, "service listening");
    let state = ServiceState {
        db: db.clone(),
        settings: Arc::new(cfg.settings),
        wake: Arc::default(),
    };
    let migrated = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        // The listener and the sweeper need the schema: they start once it is there.
        let (url, wake, cancel, done) = (
            cfg.database_url.clone(),
            state.wake.clone(),
            cancel.clone(),
            migrated.clone(),
        );
        async move {
            migrate(db, done, cancel.clone()).await;
            tokio::spawn(super::wake::listen(url.clone(), wake, cancel.clone()));
            tokio::spawn(super::sweep::run(url, cancel));
        }
    });
    let app = app(state, migrated);
    // The agent's connection handling, with room for every node's long poll and calls.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        tcp.set_nodelay(true).ok();
    });
    let how = crate::api::conn::Serving {
        tcp: true,
        tls,
        max_connections: MAX_CONNECTIONS,
        drain: DRAIN,
    };
    crate::api::conn::serve(listener, app, cancel, how).await;
    Ok(())
}
