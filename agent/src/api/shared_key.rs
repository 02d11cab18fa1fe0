//! Batch's SharedKey authentication: `Authorization: SharedKey {account}:{signature}`, the
//! signature being base64 of HMAC-SHA256, keyed with the base64-decoded account key, over
//! the canonical string that the SDKs' signers build (azure-batch 14.x
//! `batch_auth.SharedKeyAuth`, 15.x `BatchSharedKeyAuthPolicy`, the az CLI through 14.x):
//!
//! ```text
//! METHOD\n
//! content-encoding\n content-language\n content-length\n content-md5\n content-type\n
//! date\n if-modified-since\n if-match\n if-none-match\n if-unmodified-since\n range\n
//! name:value\n            every header whose name holds "ocp-", lower case, sorted
//! /{account}{raw path}
//! \nname:value            every query parameter, decoded, sorted, its first value
//! ```
//!
//! An absent or empty header signs as empty, except `content-length` of a method other
//! than GET and HEAD, which signs as `0` (both SDKs send or sign it so). The request's
//! `ocp-date` (or `Date`) must be within [`CLOCK_SKEW`] of the agent's clock, so that a
//! captured request cannot be replayed later. Keys are compared by `hmac`'s constant-time
//! verify, with every configured key (two during a rotation); they are never logged.
//!
//! Shared with the service: [`AccountKeys`] and [`Refusal::into_response`] need nothing of
//! the agent's.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How far a request's `ocp-date` may be from the agent's clock, either way.
pub const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The headers signed by position, in order (Batch's list, as the SDKs have it).
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// A Batch account name and its keys (one, or two while rotating); the key bytes are the
/// base64-decoded key as Batch shows it.
#[derive(Clone)]
pub struct AccountKeys {
    account: String,
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKeys")
            .field("account", &self.account)
            .field("keys", &format_args!("<{} hidden>", self.keys.len()))
            .finish()
    }
}

/// The account's keys as read from their files, re-read on SIGHUP (a rotated key is
/// taken without a restart; a failed re-read keeps the keys in use).
#[derive(Debug)]
pub struct KeyRing {
    files: Vec<PathBuf>,
    current: std::sync::RwLock<Arc<AccountKeys>>,
}

impl KeyRing {
    /// [`AccountKeys::read`], kept with its files.
    pub fn read(account: &str, files: &[PathBuf]) -> Result<Arc<Self>, String> {
        let keys = AccountKeys::read(account, files)?;
        Ok(Arc::new(KeyRing {
            files: files.to_vec(),
            current: std::sync::RwLock::new(Arc::new(keys)),
        }))
    }

    /// The keys now.
    pub fn get(&self) -> Arc<AccountKeys> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the key files.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = AccountKeys::read(self.get().account(), &self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

/// Why a SharedKey request was refused: each is Batch's 403 `AuthenticationFailed`, with
/// an `AuthenticationErrorDetail` saying which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not `SharedKey {account}:{signature}`.
    Malformed,
    /// Another account's name.
    WrongAccount(String),
    /// Neither `ocp-date` nor `Date`, or not an HTTP date.
    NoDate,
    /// A date outside [`CLOCK_SKEW`].
    Skewed(String),
    /// No key gives this signature; the string the agent signed, as Batch says it.
    Mismatch { string_to_sign: String },
}

impl AccountKeys {
    /// `account` with `keys` (decoded key bytes, at least one).
    pub fn new(account: &str, keys: Vec<Vec<u8>>) -> Self {
        AccountKeys {
            account: account.to_string(),
            keys,
        }
    }

    /// The account name and 1 or 2 key files, each one line of base64 (as Batch shows
    /// an account key) that decodes to at least 32 bytes. A file others can read is
    /// accepted with a warning. Errors name the file, never its content.
    pub fn read(account: &str, files: &[PathBuf]) -> Result<Self, String> {
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "account_name {account:?}: use letters and digits only, as Batch does"
            ));
        }
        if files.is_empty() || files.len() > 2 {
            return Err(format!(
                "account_key_files: give one or two key files (two while rotating), not {}",
                files.len()
            ));
        }
        let keys = files
            .iter()
            .map(|f| read_key(f))
            .collect::<Result<_, _>>()?;
        Ok(Self::new(account, keys))
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Checks a request's SharedKey `authorization` (the header's value) against
    /// `method`, `uri` and `headers` as received, at time `now`.
    pub fn verify(
        &self,
        authorization: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let (account, signature) = authorization
            .strip_prefix("SharedKey ")
            .and_then(|v| v.trim().split_once(':'))
            .ok_or(Refusal::Malformed)?;
        if account != self.account {
            return Err(Refusal::WrongAccount(account.to_string()));
        }
        check_date(headers, now)?;
        let string_to_sign = string_to_sign(method, uri, headers, &self.account);
        let given = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .unwrap_or_default();
        let good = self.keys.iter().any(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
            mac.update(string_to_sign.as_bytes());
            mac.verify_slice(&given).is_ok()
        });
        if good {
            Ok(())
        } else {
            Err(Refusal::Mismatch { string_to_sign })
        }
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("account key file {}: {e}", path.display()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|k| k.len() >= 32)
        .ok_or_else(|| {
            format!(
                "account key file {}: the key must be one line of base64 of at least 32 bytes (`openssl rand -base64 64`)",
                path.display()
            )
        })?;
    if let Ok(md) = std::fs::metadata(path) {
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the account key file can be read by others; chmod 600 it");
        }
    }
    Ok(key)
}

/// `ocp-date` (else `Date`) within [`CLOCK_SKEW`] of `now`.
fn check_date(headers: &HeaderMap, now: SystemTime) -> Result<(), Refusal> {
    let text = ["ocp-date", "date"]
        .iter()
        .find_map(|n| value(headers, n))
        .ok_or(Refusal::NoDate)?;
    let at = httpdate::parse_http_date(text).map_err(|_| Refusal::NoDate)?;
    let off = at
        .duration_since(now)
        .or_else(|_| now.duration_since(at))
        .unwrap_or_default();
    if off > CLOCK_SKEW {
        return Err(Refusal::Skewed(text.to_string()));
    }
    Ok(())
}

/// A header's value, if present and not empty (the signers skip empty ones).
fn value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The canonical string of a request, as the SDKs' signers build it (module docs).
pub fn string_to_sign(method: &Method, uri: &Uri, headers: &HeaderMap, account: &str) -> String {
    let mut s = format!("{method}\n");
    let bodiless = matches!(*method, Method::GET | Method::HEAD);
    for name in SIGNED_HEADERS {
        let v = match value(headers, name) {
            None if name == "content-length" && !bodiless => "0",
            v => v.unwrap_or(""),
        };
        s.push_str(v);
        s.push('\n');
    }
    let mut ocp: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().contains("ocp-"))
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok().filter(|v| !v.is_empty())?)))
        .collect();
    ocp.sort();
    for (n, v) in ocp {
        s.push_str(&format!("{n}:{v}\n"));
    }
    s.push_str(&format!("/{account}{}", uri.path()));
    for (n, v) in first_values(uri.query().unwrap_or("")) {
        s.push_str(&format!("\n{n}:{v}"));
    }
    s
}

/// Python's `parse_qs` as the signers use it: `&`-separated `name=value` pairs, `+` and
/// percent escapes decoded, pairs without `=` or with an empty value dropped; each name's
/// first value, sorted by name.
fn first_values(query: &str) -> std::collections::BTreeMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut out = std::collections::BTreeMap::new();
    for pair in query.split('&') {
        let Some((n, v)) = pair.split_once('=') else {
            continue;
        };
        if !v.is_empty() {
            out.entry(decode(n)).or_insert_with(|| decode(v));
        }
    }
    out
}

impl Refusal {
    /// What the client reads in `AuthenticationErrorDetail`.
    pub fn detail(&self) -> String {
        match self {
            Refusal::Malformed => {
                "The Authorization header must be SharedKey {account}:{signature}.".into()
            }
            Refusal::WrongAccount(a) => format!("The account {a:?} is not this node's account."),
            Refusal::NoDate => {
                "Request date header not specified: send ocp-date (or Date) as an HTTP date."
                    .into()
            }
            Refusal::Skewed(d) => format!(
                "Request date header too old or in the future: {d:?}; it must be within {} minutes of the server's clock.",
                CLOCK_SKEW.as_secs() / 60
            ),
            Refusal::Mismatch { string_to_sign } => format!(
                "The MAC signature found in the HTTP request is not the same as any computed signature. Server used following string to sign: '{string_to_sign}'."
            ),
        }
    }
}

impl IntoResponse for Refusal {
    /// Batch's 403 `AuthenticationFailed`, the detail under `values`.
    fn into_response(self) -> Response {
        let mut body = super::error::body(
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        );
        body["values"] =
            serde_json::json!([{"key": "AuthenticationErrorDetail", "value": self.detail()}]);
        (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Requests signed by the SDKs' own signers (tests/sdk/shared_key_vectors.py made
    /// this file, with both SDKs' signers and a fixed ocp-date).
    const VECTORS: &str = include_str!("testdata/shared_key_vectors.json");

    fn request(v: &serde_json::Value) -> (Method, Uri, HeaderMap) {
        let method: Method = v["method"].as_str().unwrap().parse().unwrap();
        let url = v["url"].as_str().unwrap();
        let path_and_query = &url[url.find("://").unwrap() + 3..];
        let uri: Uri = path_and_query[path_and_query.find('/').unwrap()..]
            .parse()
            .unwrap();
        let mut h = HeaderMap::new();
        for (k, val) in v["headers"].as_object().unwrap() {
            h.append(
                axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
            );
        }
        (method, uri, h)
    }

    #[test]
    fn the_sdks_signatures_verify_and_nothing_else_does() {
        let all: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(all["key"].as_str().unwrap())
            .unwrap();
        let other = vec![7u8; 64];
        let keys = AccountKeys::new(all["account"].as_str().unwrap(), vec![other, key]);
        let vectors = all["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 8, "{}", vectors.len());
        for v in vectors {
            let (method, uri, headers) = request(v);
            let now = httpdate::parse_http_date(headers["ocp-date"].to_str().unwrap()).unwrap();
            let auth = headers["authorization"].to_str().unwrap();
            assert_eq!(
                string_to_sign(&method, &uri, &headers, keys.account()),
                v["string_to_sign"].as_str().unwrap(),
                "{}",
                v["name"]
            );
            assert_eq!(
                keys.verify(auth, &method, &uri, &headers, now),
                Ok(()),
                "{}",
                v["name"]
            );
            // One byte more in the path, or a changed header, is refused.
            let longer: Uri = format!("{}x", uri).parse().unwrap();
            assert!(matches!(
                keys.verify(auth, &method, &longer, &headers, now),
                Err(Refusal::Mismatch { .. })
            ));
            let mut changed = headers.clone();
            changed.insert("if-match", HeaderValue::from_static("\"0x1\""));
            assert!(keys.verify(auth, &method, &uri, &changed, now).is_err());
            // Too late, and too early.
            let later = now + CLOCK_SKEW + Duration::from_secs(1);
            assert!(matches!(
                keys.verify(auth, &method, &uri, &headers, later),
                Err(Refusal::Skewed(_))
            ));
            let earlier = now - CLOCK_SKEW - Duration::from_secs(1);
            assert!(keys.verify(auth, &method, &uri, &headers, earlier).is_err());
            assert_eq!(
                keys.verify(auth, &method, &uri, &headers, now - CLOCK_SKEW),
                Ok(())
            );
        }
        // The wrong key alone, another account, no date, no SharedKey form.
        let (method, uri, headers) = request(&vectors[0]);
        let now = httpdate::parse_http_date(headers["ocp-date"].to_str().unwrap()).unwrap();
        let auth = headers["authorization"].to_str().unwrap();
        let wrong = AccountKeys::new(keys.account(), vec![vec![7u8; 64]]);
        assert!(matches!(
            wrong.verify(auth, &method, &uri, &headers, now),
            Err(Refusal::Mismatch { .. })
        ));
        let (_, sig) = auth.split_once(':').unwrap();
        assert_eq!(
            keys.verify(
                &format!("SharedKey someone:{sig}"),
                &method,
                &uri,
                &headers,
                now
            ),
            Err(Refusal::WrongAccount("someone".into()))
        );
        let mut undated = headers.clone();
        undated.remove("ocp-date");
        assert_eq!(
            keys.verify(auth, &method, &uri, &undated, now),
            Err(Refusal::NoDate)
        );
        assert_eq!(
            keys.verify("Bearer x", &method, &uri, &headers, now),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn queries_decode_as_pythons_parse_qs() {
        let q = first_values("b=2&a=1&a=3&empty=&bare&%24filter=id+eq+%27x%27&c=%zz");
        assert_eq!(
            q.into_iter().collect::<Vec<_>>(),
            [
                ("$filter".to_string(), "id eq 'x'".to_string()),
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "%zz".into()),
            ]
        );
    }

    #[test]
    fn key_files_hold_base64_keys_and_are_never_printed() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("k1");
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
        std::fs::write(&good, format!("{key}\n")).unwrap();
        let bad = d.path().join("k2");
        std::fs::write(&bad, "not base64!\n").unwrap();
        let k = AccountKeys::read("berth", std::slice::from_ref(&good)).unwrap();
        assert!(!format!("{k:?}").contains(&key[..8]), "{k:?}");
        let e = AccountKeys::read("berth", &[good.clone(), bad]).unwrap_err();
        assert!(e.contains("k2") && !e.contains("not base64"), "{e}");
        assert!(AccountKeys::read("berth", &[]).is_err());
        assert!(AccountKeys::read("berth", &[good.clone(), good.clone(), good.clone()]).is_err());
        assert!(AccountKeys::read("a-b", &[good]).is_err());
    }

    #[test]
    fn refusals_are_batchs_403() {
        let r = Refusal::Skewed("Mon, 01 Jan 2001 00:00:00 GMT".into()).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
