//! What Batch adds to every job, task and job schedule it answers with: `url`, `eTag`,
//! `lastModified` in the body, `ETag` and `Last-Modified` headers, and the conditional
//! request headers (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) checked against them.
//!
//! The ETag is a hash of the entity's JSON as stored, so every write that changes anything
//! changes it, with no version column to keep. `Last-Modified` is the latest of the
//! entity's own times (creation, state transition, the job's `lastModified` that an update
//! sets, execution start and end).

use super::ApiError;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// An entity's version: what `ETag` and `Last-Modified` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Batch's shape: `0x` and 16 hex digits, sent unquoted as Batch does.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
}

/// The times whose latest is an entity's `Last-Modified`.
const TIMES: &[&[&str]] = &[
    &["creationTime"],
    &["stateTransitionTime"],
    &["lastModified"],
    &["executionInfo", "startTime"],
    &["executionInfo", "endTime"],
    &["executionInfo", "lastRetryTime"],
    &["executionInfo", "lastRequeueTime"],
];

impl Version {
    /// The version of `entity`, the JSON of a stored view (before [`decorate`]).
    pub fn of(entity: &Value) -> Version {
        let digest = Sha256::digest(entity.to_string().as_bytes());
        let etag = format!(
            "0x{}",
            digest[..8]
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        );
        let last_modified = TIMES
            .iter()
            .filter_map(|path| {
                let v = path.iter().try_fold(entity, |v, k| v.get(k))?;
                v.as_str()?.parse::<DateTime<Utc>>().ok()
            })
            .max()
            .unwrap_or(DateTime::UNIX_EPOCH);
        Version {
            etag,
            last_modified,
        }
    }

    /// `ETag` and `Last-Modified` (an HTTP date) on `resp`.
    pub fn set_headers(&self, h: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&http_date(self.last_modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
}

fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::from(t))
}

/// The base of absolute URLs (`url`, `odata.metadata`, `odata.nextLink`): `https://` on
/// the TLS listener (its [`super::headers::SCHEME`] mark), else `http://`, and the
/// request's `Host` (`berth` on the Unix socket).
pub fn base_url(h: &HeaderMap) -> String {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '?', '#']))
        .unwrap_or("berth");
    let scheme = match h.get(super::headers::SCHEME) {
        Some(v) if v == "https" => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// Adds `url` (`base` + `path`), `eTag` and `lastModified` to `entity`, as Batch's
/// bodies have them.
pub fn decorate(entity: &mut Value, v: &Version, url: String) {
    if let Some(o) = entity.as_object_mut() {
        o.insert("url".into(), Value::String(url));
        o.insert("eTag".into(), Value::String(v.etag.clone()));
        o.insert(
            "lastModified".into(),
            Value::String(
                v.last_modified
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        );
    }
}

/// What the conditional headers decide for a request on an entity at version `v`.
#[derive(Debug, PartialEq, Eq)]
pub enum Condition {
    Proceed,
    /// 304: a GET whose `If-None-Match` or `If-Modified-Since` says the client has it.
    NotModified,
}

/// One ETag list header's entries (`*`, or ETags, quoted or not, weak or strong).
fn etags(h: &HeaderMap, name: &header::HeaderName) -> Option<Vec<String>> {
    let raw = h.get(name)?.to_str().ok()?;
    Some(
        raw.split(',')
            .map(|t| {
                t.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

fn date(h: &HeaderMap, name: &header::HeaderName) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = h.get(name) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .map(|t| Some(DateTime::<Utc>::from(t)))
        .ok_or_else(|| {
            ApiError::InvalidHeaderValue(format!(
                "{name}: not an HTTP date (e.g. Tue, 01 Dec 2026 10:00:00 GMT)"
            ))
        })
}

/// Checks the conditional headers of a `method` request against version `v`, in RFC
/// 9110's order: `If-Match`, else `If-Unmodified-Since` (412 `ConditionNotMet` when they
/// fail); then `If-None-Match` (304 for GET and HEAD, 412 otherwise), else
/// `If-Modified-Since` (GET and HEAD only). HTTP dates have whole seconds.
pub fn check(h: &HeaderMap, method: &Method, v: &Version) -> Result<Condition, ApiError> {
    let failed = |what: &str| {
        ApiError::ConditionNotMet(format!(
            "The condition specified using HTTP conditional header(s) is not met ({what}; the resource's ETag is {} and it was last modified {}).",
            v.etag,
            http_date(v.last_modified)
        ))
    };
    let modified = v.last_modified.trunc_subsecs(0);
    let read = method == Method::GET || method == Method::HEAD;
    if let Some(tags) = etags(h, &header::IF_MATCH) {
        if !tags.iter().any(|t| t == "*" || *t == v.etag) {
            return Err(failed("If-Match"));
        }
    } else if let Some(since) = date(h, &header::IF_UNMODIFIED_SINCE)? {
        if modified > since {
            return Err(failed("If-Unmodified-Since"));
        }
    }
    if let Some(tags) = etags(h, &header::IF_NONE_MATCH) {
        if tags.iter().any(|t| t == "*" || *t == v.etag) {
            return if read {
                Ok(Condition::NotModified)
            } else {
                Err(failed("If-None-Match"))
            };
        }
    } else if read {
        if let Some(since) = date(h, &header::IF_MODIFIED_SINCE)? {
            if modified <= since {
                return Ok(Condition::NotModified);
            }
        }
    }
    Ok(Condition::Proceed)
}

/// Checks the conditions of a request that changes `view` (PATCH, PUT, DELETE, POST
/// actions); `Ok` means go ahead. The check and the change are not one transaction: a
/// write between them (by the scheduler) is not seen, as on any single node of Batch.
pub fn check_write<T: serde::Serialize>(
    h: &HeaderMap,
    method: &Method,
    view: &T,
) -> Result<(), ApiError> {
    if !h.contains_key(header::IF_MATCH)
        && !h.contains_key(header::IF_NONE_MATCH)
        && !h.contains_key(header::IF_MODIFIED_SINCE)
        && !h.contains_key(header::IF_UNMODIFIED_SINCE)
    {
        return Ok(());
    }
    check(h, method, &version(view)?).map(|_| ())
}

/// The answer to a GET of one entity: its decorated JSON (with `odata.metadata`; only the
/// `select`ed properties when given) and headers, or 304 with the headers alone.
pub fn answer<T: serde::Serialize>(
    h: &HeaderMap,
    method: &Method,
    view: &T,
    path: &str,
    metadata: &str,
    select: Option<Vec<String>>,
) -> Result<Response, ApiError> {
    answer_with(h, method, view, (path, metadata), select, Map::new())
}

/// [`answer`] with `extra` properties (berth's extension fields, which are not part of
/// the entity's version) added to the body.
pub fn answer_with<T: serde::Serialize>(
    h: &HeaderMap,
    method: &Method,
    view: &T,
    (path, metadata): (&str, &str),
    select: Option<Vec<String>>,
    extra: Map<String, Value>,
) -> Result<Response, ApiError> {
    let mut entity = json(view)?;
    let v = Version::of(&entity);
    let base = base_url(h);
    let cond = check(h, method, &v)?;
    let mut resp = if cond == Condition::NotModified {
        axum::http::StatusCode::NOT_MODIFIED.into_response()
    } else {
        decorate(&mut entity, &v, format!("{base}{path}"));
        if let Some(o) = entity.as_object_mut() {
            o.extend(extra);
        }
        if let Some(names) = select {
            entity = super::list::select(entity, &names);
        }
        if let Some(o) = entity.as_object_mut() {
            o.insert(
                "odata.metadata".into(),
                Value::String(format!("{base}/$metadata#{metadata}/@Element")),
            );
        }
        axum::Json(entity).into_response()
    };
    v.set_headers(resp.headers_mut());
    Ok(resp)
}

/// A list item: `view` as JSON with `url`, `eTag`, `lastModified`.
pub fn item<T: serde::Serialize>(view: &T, base: &str, path: &str) -> Result<Value, ApiError> {
    let mut e = json(view)?;
    let v = Version::of(&e);
    decorate(&mut e, &v, format!("{base}{path}"));
    Ok(e)
}

/// The version of a view.
pub fn version<T: serde::Serialize>(view: &T) -> Result<Version, ApiError> {
    Ok(Version::of(&json(view)?))
}

/// An answer without a body after a change (`status`), with the entity's new version, if
/// it still exists, and Batch's `DataServiceId` (its URL).
pub fn changed<T: serde::Serialize>(
    h: &HeaderMap,
    status: axum::http::StatusCode,
    view: Option<&T>,
    path: &str,
) -> Result<Response, ApiError> {
    let mut resp = status.into_response();
    if let Some(view) = view {
        version(view)?.set_headers(resp.headers_mut());
    }
    if let Ok(u) = HeaderValue::from_str(&format!("{}{path}", base_url(h))) {
        resp.headers_mut().insert("dataserviceid", u);
    }
    Ok(resp)
}

/// 201 for a created entity at `path`: `Location` and `DataServiceId` (its URL), `ETag`
/// and `Last-Modified`.
pub fn created<T: serde::Serialize>(
    h: &HeaderMap,
    view: &T,
    path: &str,
) -> Result<Response, ApiError> {
    let mut resp = changed(h, axum::http::StatusCode::CREATED, Some(view), path)?;
    if let Ok(u) = HeaderValue::from_str(&format!("{}{path}", base_url(h))) {
        resp.headers_mut().insert(header::LOCATION, u);
    }
    Ok(resp)
}

/// A JSON view as a `Value` (a view always serialises).
pub fn json<T: serde::Serialize>(view: &T) -> Result<Value, ApiError> {
    serde_json::to_value(view).map_err(ApiError::internal)
}

/// An id as one URL path segment.
pub fn seg(id: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(id, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn entity() -> Value {
        json!({"id": "j", "creationTime": "2026-01-01T10:00:00Z",
               "stateTransitionTime": "2026-01-01T10:00:05.250Z",
               "executionInfo": {"startTime": "2026-01-01T10:00:01Z"}})
    }

    #[test]
    fn versions_follow_the_content_and_the_latest_time() {
        let a = Version::of(&entity());
        assert!(a.etag.starts_with("0x") && a.etag.len() == 18, "{}", a.etag);
        assert_eq!(
            a.last_modified,
            "2026-01-01T10:00:05.250Z".parse::<DateTime<Utc>>().unwrap()
        );
        let mut changed = entity();
        changed["priority"] = json!(5);
        assert_ne!(Version::of(&changed).etag, a.etag);
        assert_eq!(
            Version::of(&entity()),
            a,
            "the same content, the same version"
        );
    }

    #[test]
    fn conditions_decide_as_rfc_9110_says() {
        let v = Version::of(&entity());
        let tag = v.etag.clone();
        let quoted = format!("\"{tag}\"");
        let get = Method::GET;
        let patch = Method::PATCH;
        let before = "Thu, 01 Jan 2026 10:00:04 GMT";
        let same = "Thu, 01 Jan 2026 10:00:05 GMT";
        type Case<'a> = (
            Method,
            Vec<(&'static str, &'a str)>,
            Result<Condition, &'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            (get.clone(), vec![], Ok(Condition::Proceed)),
            (
                patch.clone(),
                vec![("if-match", &tag)],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-match", &quoted)],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-match", "*")],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-match", "0x1, 0x2")],
                Err("If-Match"),
            ),
            (
                get.clone(),
                vec![("if-none-match", &tag)],
                Ok(Condition::NotModified),
            ),
            (
                get.clone(),
                vec![("if-none-match", "0x1")],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-none-match", "*")],
                Err("If-None-Match"),
            ),
            (
                get.clone(),
                vec![("if-modified-since", same)],
                Ok(Condition::NotModified),
            ),
            (
                get.clone(),
                vec![("if-modified-since", before)],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-modified-since", same)],
                Ok(Condition::Proceed),
            ),
            (
                patch.clone(),
                vec![("if-unmodified-since", before)],
                Err("If-Unmodified-Since"),
            ),
            (
                patch.clone(),
                vec![("if-unmodified-since", same)],
                Ok(Condition::Proceed),
            ),
            // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
            (
                patch.clone(),
                vec![("if-match", &tag), ("if-unmodified-since", before)],
                Ok(Condition::Proceed),
            ),
            (
                get.clone(),
                vec![("if-none-match", "0x1"), ("if-modified-since", same)],
                Ok(Condition::Proceed),
            ),
        ];
        for (m, hs, want) in cases {
            let got = check(&headers(&hs), &m, &v);
            match (got, want) {
                (Ok(c), Ok(w)) => assert_eq!(c, w, "{m} {hs:?}"),
                (Err(e), Err(w)) => {
                    assert_eq!((e.status().as_u16(), e.code()), (412, "ConditionNotMet"));
                    assert!(e.message().contains(w), "{e}");
                }
                (got, want) => panic!("{m} {hs:?}: {got:?}, want {want:?}"),
            }
        }
        let bad = check(&headers(&[("if-modified-since", "yesterday")]), &get, &v).unwrap_err();
        assert_eq!(bad.code(), "InvalidHeaderValue");
    }

    #[test]
    fn decorated_bodies_carry_url_etag_and_last_modified() {
        let mut e = entity();
        let v = Version::of(&e);
        let h = headers(&[("host", "node1:8080")]);
        decorate(&mut e, &v, format!("{}/jobs/j", base_url(&h)));
        assert_eq!(e["url"], "http://node1:8080/jobs/j");
        assert_eq!(e["eTag"], v.etag.as_str());
        assert_eq!(e["lastModified"], "2026-01-01T10:00:05.250Z");
    }
}
