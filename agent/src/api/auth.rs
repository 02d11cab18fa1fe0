//! The TCP listener's guard: every request carries `Authorization: Bearer <token>` (or the
//! web view's session cookie, `crate::ui::session`), compared in constant time, or Batch's
//! `SharedKey {account}:{signature}` (see [`super::shared_key`]). The Unix socket needs
//! none: its file mode and group are the guard.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;

/// Reads the token file: one line, at least 16 characters. A file others can read is
/// accepted with a warning.
pub fn read_token(path: &Path) -> Result<Arc<str>, String> {
    use std::os::unix::fs::PermissionsExt;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(format!(
            "token_file {}: the token must be one word of at least 16 characters",
            path.display()
        ));
    }
    if let Ok(md) = std::fs::metadata(path) {
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the token file can be read by others; chmod 600 it");
        }
    }
    Ok(Arc::from(token))
}

/// The tokens in `path`, one per line (blank lines and `#` comments skipped), each one word
/// of at least 16 characters.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tokens = parse_tokens(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(file = %path.display(), "others can read this secret file; chmod 600 it");
    }
    Ok(tokens)
}

pub fn parse_tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.len() < 16 || t.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: a token must be one word of at least 16 characters",
                i + 1
            ));
        }
        out.push(t.to_string());
    }
    if out.is_empty() {
        return Err("no token in the file".into());
    }
    Ok(out)
}

/// Equal bytes, in a time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Pool mode: the service's file-proxy credential, good for reading files (and the job
/// preparation status) only. Every enrolment brings a new one (the service derives it
/// for the node's epoch) and the member puts it here, so only the newest enrolment's is
/// accepted.
#[derive(Clone, Default)]
pub struct ProxyCredential(Arc<std::sync::RwLock<Option<Arc<str>>>>);

impl ProxyCredential {
    /// Replaces the credential (None: no proxy may read).
    pub fn set(&self, token: Option<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = token.map(Arc::from);
    }

    /// Whether `given` is the current credential (constant time).
    pub fn is(&self, given: &str) -> bool {
        let cur = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        cur.is_some_and(|p| constant_time_eq(given.as_bytes(), p.as_bytes()))
    }
}

impl std::fmt::Debug for ProxyCredential {
    /// Never prints the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCredential(<redacted>)")
    }
}

/// What the TCP guard checks requests against: the agent's token (every operation), and
/// job tokens (their job's operations only, while the job lasts).
#[derive(Clone)]
pub struct TcpGuard {
    /// The agent's bearer token, if `token_file` is set.
    pub token: Option<Arc<str>>,
    /// The Batch account and keys SharedKey requests are signed with, if configured.
    pub shared_key: Option<Arc<super::shared_key::KeyRing>>,
    /// Pool mode: the service's file proxy credential, good for reading files (and the job
    /// preparation status) only.
    pub proxy_token: ProxyCredential,
    /// Tokens good for reads only (`read_only_token_file`).
    pub read_only: Arc<[String]>,
    pub state: super::AppState,
}

/// The token of a request's `Authorization: Bearer <token>`, trimmed; None when there is
/// none (or it is empty). Every bearer guard of berth's reads it here: the agent's TCP
/// guard, the service's client guard and its node protocol.
pub fn bearer(h: &axum::http::HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Batch's 401 `AuthenticationFailed` telling the client `how` to authenticate, with
/// `WWW-Authenticate: Bearer`.
pub fn bearer_refused(how: &str) -> Response {
    let mut r = ApiError::AuthenticationFailed(how.into()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("static header"),
    );
    r
}

/// A request signed `Authorization: SharedKey {account}:{signature}`: `Some(Ok(()))` when
/// `keys` verify it, `Some(Err(answer))` when they do not (Batch's 403) or there are no keys
/// (`none`'s answer); `None` for any other request. The agent's TCP guard and the
/// service's client guard both check SharedKey here.
pub fn check_shared_key(
    keys: Option<&super::shared_key::KeyRing>,
    req: &Request,
    none: fn() -> Response,
) -> Option<Result<(), Response>> {
    let sk = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("SharedKey "))?;
    let Some(keys) = keys else {
        return Some(Err(none()));
    };
    Some(
        keys.get()
            .verify(
                sk,
                req.method(),
                req.uri(),
                req.headers(),
                std::time::SystemTime::now(),
            )
            .map_err(|refusal| {
                tracing::debug!(detail = %refusal.detail(), "SharedKey request refused");
                refusal.into_response()
            }),
    )
}

pub async fn require_token(State(g): State<TcpGuard>, req: Request, next: Next) -> Response {
    use crate::ui::session::{judge, Verdict};
    let full = |t: &str| {
        g.token
            .as_ref()
            .is_some_and(|k| constant_time_eq(t.as_bytes(), k.as_bytes()))
    };
    let given = match judge(&req, g.shared_key.as_deref(), full, &g.read_only, refused) {
        Verdict::Pass => return next.run(req).await,
        Verdict::Answer(a) => return a,
        Verdict::Other(t) => t,
    };
    match given.as_deref() {
        Some(t) if g.proxy_token.is(t) => {
            if proxy_allows(req.method(), req.uri().path()) {
                next.run(req).await
            } else {
                ApiError::AuthorizationFailure(
                    "the service's proxy credential is good for reading files and the job preparation status only".into(),
                )
                .into_response()
            }
        }
        Some(t) if t.starts_with("bjt1.") => match job_token(&g.state, t) {
            Some(claim)
                if crate::node::job_token::allows(&claim, req.method(), req.uri().path()) =>
            {
                next.run(req).await
            }
            Some(claim) => ApiError::AuthorizationFailure(format!(
                "a job token is good for job {:?}'s own tasks only",
                claim.job_id
            ))
            .into_response(),
            None => refused(),
        },
        _ => refused(),
    }
}

/// What the service's file proxy may do: read task files, node files and a job's
/// preparation and release status.
fn proxy_allows(method: &axum::http::Method, path: &str) -> bool {
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    // Exactly `/jobs/{job}/tasks/{task}/files[/...]` or `/pools/{pool}/nodes/{node}/files[/...]`,
    // or `/jobs/{job}/jobpreparationandreleasetaskstatus` (the service merges the nodes').
    let seg: Vec<&str> = path.split('/').collect();
    let files = seg.len() >= 6
        && seg[0].is_empty()
        && seg[5] == "files"
        && matches!((seg[1], seg[3]), ("jobs", "tasks") | ("pools", "nodes"));
    let prep = seg.len() == 4
        && seg[0].is_empty()
        && seg[1] == "jobs"
        && seg[3] == "jobpreparationandreleasetaskstatus";
    read && (files || prep)
}

/// The job a token is good for, if it is valid and its job still runs (not completed,
/// not being deleted, not another job of the same id).
fn job_token(s: &super::AppState, token: &str) -> Option<crate::node::job_token::JobClaim> {
    let claim = s.rt.job_tokens.get()?.tokens.verify(token)?;
    let job = s.store.job(&claim.job_id).ok()??;
    let live = !matches!(
        job.state,
        berth_proto::JobState::Completed | berth_proto::JobState::Deleting
    );
    (live && job.creation_time == claim.created).then_some(claim)
}

fn refused() -> Response {
    bearer_refused(
        "send Authorization: Bearer <the token in the agent's token_file, or a task's AZ_BATCH_AUTHENTICATION_TOKEN>, or SharedKey <account_name>:<signature> when the agent has account keys",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn the_proxy_credential_reads_files_and_the_prep_status_only() {
        assert!(proxy_allows(
            &Method::GET,
            "/jobs/j/tasks/t/files/stdout.txt"
        ));
        assert!(proxy_allows(
            &Method::HEAD,
            "/pools/p/nodes/n/files/startup/stdout.txt"
        ));
        assert!(!proxy_allows(
            &Method::DELETE,
            "/jobs/j/tasks/t/files/stdout.txt"
        ));
        assert!(!proxy_allows(&Method::GET, "/jobs/j/tasks/t"));
        assert!(proxy_allows(
            &Method::GET,
            "/jobs/j/jobpreparationandreleasetaskstatus"
        ));
        for not_files in [
            "/jobs/files",
            "/jobs/files/tasks",
            "/jobschedules/files/jobs",
            "/jobs/j/files/t/files",
            "/jobs/j/jobpreparationandreleasetaskstatus/x",
            "/jobs/j/tasks",
        ] {
            assert!(!proxy_allows(&Method::GET, not_files), "{not_files}");
        }
        assert!(!proxy_allows(&Method::POST, "/jobs"));
    }
}
