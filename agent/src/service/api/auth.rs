//! The client guard: `Authorization: Bearer <token>` (or the web view's session cookie,
//! `crate::ui::session`), one of the configured client tokens, compared in constant time;
//! a read-only token may only read. A node token or the enrolment secret is refused here.

use crate::api::ApiError;
use crate::service::state::ServiceState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn require_client(State(s): State<ServiceState>, req: Request, next: Next) -> Response {
    use crate::ui::session;
    let given = match session::credential(req.headers(), req.method()) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    match given.as_deref() {
        Some(t) if client_token(&s.settings.client_tokens, t) => next.run(req).await,
        Some(t) if client_token(&s.settings.read_only_tokens, t) => {
            if session::is_read(req.method()) {
                next.run(req).await
            } else {
                session::read_only_refused().into_response()
            }
        }
        _ => {
            let mut r = ApiError::AuthenticationFailed(
                "send Authorization: Bearer <a client token of the service's token_file>".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            r
        }
    }
}

/// Whether `given` is one of `tokens`; every token is compared, each in constant time.
fn client_token(tokens: &[String], given: &str) -> bool {
    tokens.iter().fold(false, |ok, t| {
        crate::api::constant_time_eq(t.as_bytes(), given.as_bytes()) | ok
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_configured_token() {
        let tokens = vec!["a".repeat(16), "b".repeat(20)];
        assert!(super::client_token(&tokens, &"b".repeat(20)));
        assert!(!super::client_token(&tokens, &"b".repeat(19)));
        assert!(!super::client_token(&tokens, ""));
    }
}
