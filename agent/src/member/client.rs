//! The node protocol's HTTP(S) client: JSON POSTs under `node_protocol::PREFIX` to the
//! service's URLs, in turn. A URL that cannot be reached, times out or answers 5xx
//! gives way to the next; the one that answered is asked first next time. 4xx answers
//! are the service's word and come back as [`ClientError::Refused`] with Batch's code.

use crate::backoff::Backoff;
use berth_proto::node_protocol::PREFIX;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No URL answered (connect error, timeout, 5xx): worth trying again later.
    #[error("the service cannot be reached: {0}")]
    Unavailable(String),
    /// The service answered 4xx: `code` is Batch's error code (`AttemptFenced`, ...).
    #[error("the service refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("the service's answer cannot be read: {0}")]
    Decode(String),
    /// The agent stops.
    #[error("stopped")]
    Stopped,
}

impl ClientError {
    /// Whether this is a 4xx with Batch's error `code`.
    pub fn is(&self, code: &str) -> bool {
        matches!(self, ClientError::Refused { code: c, .. } if c == code)
    }
}

/// The service's URLs and one HTTP client (rustls, the OS trust store).
pub struct Client {
    urls: Vec<String>,
    http: reqwest::Client,
    /// The index of the URL that answered last.
    preferred: AtomicUsize,
}

/// Batch's error body: `{"code": ..., "message": {"value": ...}}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: Option<ErrorMessage>,
}

#[derive(serde::Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    value: String,
}

impl Client {
    /// A client over `urls` (`http(s)://host:port`, no trailing path); at least one.
    pub fn new(urls: Vec<String>) -> Result<Client, String> {
        if urls.is_empty() {
            return Err("no service URL".into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Ok(Client {
            urls,
            http,
            preferred: AtomicUsize::new(0),
        })
    }

    /// POSTs `body` to `{url}{PREFIX}{path}` with `Bearer token`, each URL at most once,
    /// the last one that answered first; `timeout` bounds each request.
    pub async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.urls.len() {
            let at = (first + i) % self.urls.len();
            let url = format!("{}{PREFIX}{path}", self.urls[at]);
            let sent = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(timeout)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{url}: {}", crate::error_chain::Chain(&e));
                    continue;
                }
            };
            let status = resp.status();
            if status.is_server_error() {
                last = format!("{url}: {status}");
                continue;
            }
            self.preferred.store(at, Ordering::Relaxed);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("{url}: {}", crate::error_chain::Chain(&e));
                    continue;
                }
            };
            if status.is_success() {
                // An empty body reads as JSON null, for answers that carry nothing.
                let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
                return serde_json::from_slice(text)
                    .map_err(|e| ClientError::Decode(format!("{url}: {e}")));
            }
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.code, b.message.map(|m| m.value).unwrap_or_default()),
                Err(_) => (
                    status.canonical_reason().unwrap_or("error").to_string(),
                    String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                ),
            };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
        Err(ClientError::Unavailable(last))
    }

    /// [`Client::post`] again while the service is unavailable (backoff 250 ms doubling to
    /// 5 s), until it answers or `stop` fires ([`ClientError::Stopped`]). `token` is read
    /// anew for each try (a re-enrolment changes it).
    pub async fn post_until_answered<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        token: impl Fn() -> String,
        body: &B,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> Result<R, ClientError> {
        let mut delay = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut tries = 0u32;
        loop {
            if stop.is_cancelled() {
                return Err(ClientError::Stopped);
            }
            match self.post(path, &token(), body, timeout).await {
                Err(ClientError::Unavailable(e)) => {
                    if tries % 10 == 0 {
                        tracing::warn!(path, error = %e, tries, "the service cannot be reached; trying again");
                    }
                    tries += 1;
                    if !delay.sleep(stop).await {
                        return Err(ClientError::Stopped);
                    }
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;

    async fn serve(app: Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.ok() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_next_url_answers_when_one_is_down_and_refusals_carry_batchs_code() {
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let busy = serve(Router::new().route(
            "/nodeagent/v1/x",
            post(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        ))
        .await;
        let good = serve(
            Router::new()
                .route(
                    "/nodeagent/v1/x",
                    post(|h: http::HeaderMap| async move {
                        let auth = h["authorization"].to_str().unwrap().to_string();
                        axum::Json(serde_json::json!({ "auth": auth }))
                    }),
                )
                .route(
                    "/nodeagent/v1/fenced",
                    post(|| async {
                        (
                            http::StatusCode::CONFLICT,
                            axum::Json(serde_json::json!({
                                "code": "AttemptFenced",
                                "message": {"lang": "en-US", "value": "gone"}
                            })),
                        )
                    }),
                ),
        )
        .await;
        let c = Client::new(vec![down, busy, good.clone() + "/"]).unwrap();
        let t = Duration::from_secs(5);
        let v: serde_json::Value = c.post("/x", "tok", &(), t).await.unwrap();
        assert_eq!(v["auth"], "Bearer tok");
        assert_eq!(
            c.preferred.load(Ordering::Relaxed),
            2,
            "asked first next time"
        );
        let e = c
            .post::<_, serde_json::Value>("/fenced", "tok", &(), t)
            .await
            .unwrap_err();
        assert!(e.is("AttemptFenced"), "{e:?}");
        let only_down = Client::new(vec!["http://127.0.0.1:1".into()]).unwrap();
        let e = only_down
            .post::<_, serde_json::Value>("/x", "t", &(), t)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Unavailable(_)), "{e:?}");
    }
}
