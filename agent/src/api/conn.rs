//! The API's connections, each bounded in what it can hold: a listener in, hyper HTTP/1
//! connections out, served until the agent (or `berth service`) stops.
//!
//! * A request's head must arrive within [`HEADER_TIMEOUT`] of the connection opening or of
//!   the previous response (hyper restarts the timer whenever a connection goes idle), so
//!   a slow head and an idle keep-alive connection are both closed then.
//! * At most [`Serving::max_connections`] are served at once ([`MAX_CONNECTIONS`] on the
//!   agent); one more is answered `503 ServerBusy` with `Retry-After` and closed at once,
//!   keeping nothing.
//! * A response being sent (a `task logs -f` follow) is not cut by either.
//! * With TLS, the handshake must also finish within [`HEADER_TIMEOUT`]; a TLS connection
//!   past the limit is closed without an answer (a plain 503 would be garbage to it).

use super::error;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a client has to send a request's head, from connecting or from the previous
/// response: the CLI sends its whole request at once, so 10 s is generous.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once (a connection costs tens of KiB; the CLI uses one per
/// command).
pub const MAX_CONNECTIONS: usize = 256;

/// How long a stopping agent lets requests in progress finish.
pub const DRAIN: Duration = Duration::from_secs(2);

/// How long a refused TCP connection's request is read before it is closed.
const REFUSED_DRAIN: Duration = Duration::from_secs(1);

/// How a listener is served.
pub struct Serving {
    /// A TCP listener: a refused connection's request is read before it is closed
    /// (closing a TCP connection with unread data resets it, and the client would lose
    /// the 503; a Unix socket has no such reset).
    pub tcp: bool,
    /// Each connection TLS, with the acceptor current when it opens.
    pub tls: Option<Arc<super::tls::ReloadableTls>>,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open requests may finish once stopping.
    pub drain: Duration,
}

impl Serving {
    /// The agent's: [`MAX_CONNECTIONS`], [`DRAIN`].
    pub fn agent(tcp: bool, tls: Option<Arc<super::tls::ReloadableTls>>) -> Serving {
        Serving {
            tcp,
            tls,
            max_connections: MAX_CONNECTIONS,
            drain: DRAIN,
        }
    }
}

/// Serves `listener` with `app` until `cancel`, then lets open requests finish for
/// `how.drain` at most.
pub async fn serve<L>(mut listener: L, app: Router, cancel: CancellationToken, how: Serving)
where
    L: axum::serve::Listener,
    L::Io: AsFd,
{
    let Serving {
        tcp,
        tls,
        max_connections,
        drain,
    } = how;
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        let io = tokio::select! {
            _ = cancel.cancelled() => break,
            // Finished connections are reaped as they end.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            (io, _) = listener.accept() => io,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = max_connections,
                "API connection refused: at the limit"
            );
            if tls.is_none() {
                refuse(io, tcp, max_connections, &mut conns);
            }
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let stop = cancel.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        conns.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return http(io, svc, stop).await;
            };
            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(io)) => http(io, svc, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "API TLS handshake failed"),
                Err(_) => tracing::debug!("API TLS handshake timed out"),
            }
        });
    }
    if tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::info!(
            connections = conns.len(),
            "API connections still open at exit are closed"
        );
    }
}

/// Serves one connection's requests until it ends or `stop` (then gracefully).
async fn http<Io>(io: Io, svc: TowerToHyperService<Router>, stop: CancellationToken)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        // A client that went away or timed out; nothing to act on.
        tracing::debug!(error = %e, "API connection ended");
    }
}

/// The answer to a connection past the limit of `limit`: Batch's 503 `ServerBusy` with a
/// `request-id`, as every answer has.
fn busy_answer(limit: usize) -> Vec<u8> {
    let body = error::body(
        "ServerBusy",
        &format!("the server serves {limit} connections at once; try again"),
    )
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json;odata=minimalmetadata\r\nretry-after: 1\r\nrequest-id: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        super::headers::uuid_v4(),
        body.len()
    )
    .into_bytes()
}

/// Answers a connection past the limit and closes it, keeping nothing but, for TCP, a
/// short read of what the client sent.
fn refuse<Io>(mut io: Io, tcp: bool, limit: usize, conns: &mut JoinSet<()>)
where
    Io: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static,
{
    // Written on the descriptor itself: the runtime has not yet seen the new socket
    // writable, but its empty send buffer takes the short answer at once.
    let answer = busy_answer(limit);
    match nix::unistd::write(&io, &answer) {
        Ok(n) if n == answer.len() => {}
        Ok(n) => tracing::debug!(written = n, "a refused connection took part of its 503"),
        Err(e) => tracing::debug!(error = %e, "could not answer a connection past the limit"),
    }
    if tcp {
        conns.spawn(async move {
            let mut sink = [0u8; 64];
            let drain = async {
                io.shutdown().await?;
                while io.read(&mut sink).await? > 0 {}
                std::io::Result::Ok(())
            };
            if let Ok(Err(e)) = tokio::time::timeout(REFUSED_DRAIN, drain).await {
                tracing::debug!(error = %e, "reading a refused connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_batchs_503() {
        let a = busy_answer(MAX_CONNECTIONS);
        let a = std::str::from_utf8(&a).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
        assert!(head.contains("\r\nrequest-id: "), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "ServerBusy");
        assert_eq!(v["message"]["lang"], "en-US");
    }
}
