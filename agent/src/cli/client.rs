//! The CLI's side of the API: HTTP/1.1 over the agent's Unix socket, or HTTP(S) to a pool's
//! `berth service` (one or more replica URLs, tried in order, with a bearer token), and
//! errors that say what to do (start the agent, join the `berth` group) instead of an errno.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the berth agent is not running (nothing listens on {0}); start it with `systemctl start berth` or `berth agent`, or give --socket")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: the socket belongs to group berth; join it (`usermod -aG berth $USER`, then log in again) or use sudo")]
    Denied(PathBuf),
    /// The connection to the socket failed.
    #[error("{}", path.display())]
    Transport {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No replica of the service answered (each URL's error is logged at debug).
    #[error("the berth service cannot be reached at {urls}")]
    ServiceUnreachable {
        urls: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The agent answered with what berth cannot read.
    #[error("the agent's answer to GET {path} is not what berth expects")]
    Unexpected {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered with a Batch error body.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

pub struct Client {
    socket: PathBuf,
    service: Option<Service>,
}

/// A pool's service: its replicas' base URLs and the client token.
struct Service {
    urls: Vec<String>,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// The agent on its Unix socket.
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            service: None,
        }
    }

    /// A pool's `berth service` at `urls` (replicas, tried in order), with the client
    /// `token`; `ca_cert` (PEM) is trusted beside the system's roots.
    pub fn service(
        urls: &[String],
        token: String,
        ca_cert: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let unreachable =
            |e: Box<dyn std::error::Error + Send + Sync>| ClientError::ServiceUnreachable {
                urls: urls.join(", "),
                source: e,
            };
        let mut b = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(pem) = ca_cert {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| unreachable(Box::new(e)))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| unreachable(Box::new(e)))?;
        Ok(Client {
            socket: PathBuf::new(),
            service: Some(Service { urls, token, http }),
        })
    }

    fn transport(&self, e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
        ClientError::Transport {
            path: self.socket.clone(),
            source: Box::new(e),
        }
    }

    /// One request on a fresh connection; non-2xx answers become `ClientError::Api`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, ClientError> {
        let uri = with_api_version(path);
        if let Some(svc) = &self.service {
            return svc.request(method, &uri, body, headers).await;
        }
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => ClientError::Denied(self.socket.clone()),
                _ => self.transport(e),
            })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("host", "berth");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.transport(e))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(api_error(status, &body));
        }
        Ok(Reply { status, body })
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        let r = self.request("GET", path, None, &[]).await?;
        serde_json::from_slice(&r.body).map_err(|source| ClientError::Unexpected {
            path: path.into(),
            source,
        })
    }
}

impl Service {
    /// Tries each replica in turn: one that cannot be reached, or answers 503 (its
    /// database away), gives way to the next.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, ClientError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| self.unreachable(Box::new(e)))?;
        let mut last: Option<Result<Reply, ClientError>> = None;
        for url in &self.urls {
            let mut req = self
                .http
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(&self.token);
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(url, error = %crate::error_chain::Chain(&e), "service replica unreachable");
                    last = Some(Err(self.unreachable(Box::new(e))));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = Some(Err(self.unreachable(Box::new(e))));
                    continue;
                }
            };
            if status == 503 {
                last = Some(Err(api_error(status, &bytes)));
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(api_error(status, &bytes));
            }
            return Ok(Reply {
                status,
                body: bytes,
            });
        }
        last.unwrap_or_else(|| Err(self.unreachable("no service URL given".into())))
    }

    fn unreachable(&self, e: Box<dyn std::error::Error + Send + Sync>) -> ClientError {
        ClientError::ServiceUnreachable {
            urls: self.urls.join(", "),
            source: e,
        }
    }
}

/// A Batch list body, the fields the CLI reads.
#[derive(serde::Deserialize)]
pub struct Listing<T> {
    pub value: Vec<T>,
    #[serde(default, rename = "odata.nextLink")]
    next_link: Option<String>,
}

impl Client {
    /// Every item of the list at `path`, following `odata.nextLink` page after page.
    pub async fn get_list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Listing<T>, ClientError> {
        let mut all: Listing<T> = self.get_json(path).await?;
        while let Some(next) = all.next_link.take() {
            // The link is absolute (`http://berth/jobs?...`); the socket needs its path.
            let rel = next
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap_or(next);
            let page: Listing<T> = self.get_json(&rel).await?;
            all.value.extend(page.value);
            all.next_link = page.next_link;
        }
        Ok(all)
    }
}

/// `path` with Batch's required `api-version` query parameter, unless it has one.
fn with_api_version(path: &str) -> String {
    if path.contains("api-version=") {
        return path.to_string();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api-version={}", crate::api::API_VERSION)
}

/// Batch's error body `{"code", "message": {"value"}}`, or the raw text.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["code"].as_str().unwrap_or("Error").to_string();
    let message = v["message"]["value"]
        .as_str()
        .or(v["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ClientError::Api {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let e = api_error(
            404,
            br#"{"code":"JobNotFound","message":{"lang":"en-US","value":"The specified job does not exist."}}"#,
        );
        assert_eq!(
            e.to_string(),
            "JobNotFound: The specified job does not exist."
        );
        let e = api_error(500, b"boom");
        assert_eq!(e.to_string(), "Error: boom");
    }

    #[tokio::test]
    async fn no_agent_says_so() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("none.sock");
        let e = Client::new(&sock)
            .request("GET", "/node", None, &[])
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ClientError::NotRunning(_)), "{e}");
        assert!(e.to_string().contains("berth agent"), "{e}");
    }
}
