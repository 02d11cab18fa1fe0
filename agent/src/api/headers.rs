//! What Batch puts on, and asks of, every request:
//!
//! * [`request_ids`] (outermost, so that refusals by the TCP guard have them too): a
//!   `request-id` (a UUID v4) on every response and on the request's log span, so that
//!   whatever the request logs (a 500's cause) carries it, and the client's
//!   `client-request-id` echoed when `return-client-request-id: true` asks.
//! * [`batch_rules`] (on the router): `api-version` required on every Batch path and one
//!   of [`API_VERSIONS`] (berth's own `/node` and `/metrics`, and the service's node
//!   protocol, are exempt), and a method a path does not allow answered 405 with Batch's
//!   error body.
//!
//! The standalone agent and `berth service` both serve through these two layers.

use super::ApiError;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// The Batch API versions berth answers: what azure-batch 14.x (msrest; 14.2.0 sends
/// 2024-02-01.19.0), 15.x (azure-core; 15.1.0 sends 2025-06-01), `az batch` and the
/// other SDKs of the last years send. berth's shapes are the same for all of them.
pub const API_VERSIONS: &[&str] = &[
    "2020-09-01.12.0",
    "2021-06-01.14.0",
    "2022-01-01.15.0",
    "2022-10-01.16.0",
    "2023-05-01.17.0",
    "2023-11-01.18.0",
    "2024-02-01.19.0",
    "2024-07-01.20.0",
    "2025-06-01",
];

/// The version berth's own CLI sends.
pub const API_VERSION: &str = "2024-07-01.20.0";

/// Paths of berth's own, outside Batch's API (the node protocol, the web view's pages):
/// no `api-version` needed.
fn exempt(path: &str) -> bool {
    matches!(path, "/node" | "/metrics" | "/ui")
        || path.starts_with("/ui/")
        || path
            .strip_prefix(berth_proto::node_protocol::PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A random UUID (version 4, RFC 9562).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness: a request id need only be unique enough to find a log line.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub async fn request_ids(req: Request, next: Next) -> Response {
    let id = uuid_v4();
    let echo = req
        .headers()
        .get("return-client-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        .then(|| req.headers().get("client-request-id").cloned())
        .flatten();
    let span =
        tracing::debug_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("request-id", v);
    }
    if let Some(c) = echo {
        h.insert("client-request-id", c);
    }
    resp
}

/// The request header that tells handlers the listener's scheme, for the URLs they
/// answer with; set by [`mark_scheme`] alone (a client's own is dropped).
pub const SCHEME: &str = "x-forwarded-proto";

/// Marks each request `https` (`tls`) or removes any mark a client sent.
pub async fn mark_scheme(
    axum::extract::State(tls): axum::extract::State<bool>,
    mut req: Request,
    next: Next,
) -> Response {
    let h = req.headers_mut();
    h.remove(SCHEME);
    if tls {
        h.insert(SCHEME, HeaderValue::from_static("https"));
    }
    next.run(req).await
}

/// `api-version` checked against [`API_VERSIONS`].
fn check_version(query: Option<&str>) -> Result<(), ApiError> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == "api-version")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        });
    match given {
        None => Err(ApiError::MissingRequiredQueryParameter(
            "A query parameter that's mandatory for this request is not specified: api-version."
                .into(),
        )),
        Some(v) if API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ApiError::InvalidQueryParameterValue(format!(
            "api-version: {v:?} is not a version berth supports; use one of {}",
            API_VERSIONS.join(", ")
        ))),
    }
}

pub async fn batch_rules(req: Request, next: Next) -> Response {
    if !exempt(req.uri().path()) {
        if let Err(e) = check_version(req.uri().query()) {
            return e.into_response();
        }
    }
    let method = req.method().clone();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        let mut r = ApiError::UnsupportedHttpVerb(format!(
            "The resource doesn't support the specified HTTP verb {method}."
        ))
        .into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(axum::http::header::ALLOW, a);
        }
        return r;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
        assert_ne!(a, uuid_v4());
    }

    #[test]
    fn api_versions_are_required_and_checked() {
        assert!(check_version(Some("api-version=2024-07-01.20.0")).is_ok());
        assert!(check_version(Some("maxresults=2&api-version=2025-06-01")).is_ok());
        let e = check_version(None).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (400, "MissingRequiredQueryParameter")
        );
        let e = check_version(Some("api-version")).unwrap_err();
        assert_eq!(e.code(), "InvalidQueryParameterValue");
        let e = check_version(Some("api-version=2019-01-01.8.0")).unwrap_err();
        assert_eq!(e.code(), "InvalidQueryParameterValue");
        assert!(e.message().contains("\"2019-01-01.8.0\""), "{e}");
    }

    #[test]
    fn berths_own_paths_need_no_version() {
        let node = format!("{}/heartbeat", berth_proto::node_protocol::PREFIX);
        for p in ["/node", "/metrics", "/ui", "/ui/login", node.as_str()] {
            assert!(exempt(p), "{p}");
        }
        for p in [
            "/jobs",
            "/pools/p/nodes",
            "/nodeagent",
            "/nodeagent/v1x/enrol",
            "/uix",
        ] {
            assert!(!exempt(p), "{p}");
        }
    }
}
