//! The client guard: `Authorization: Bearer <token>`, one of the configured client tokens,
//! compared in constant time. A node token or the enrolment secret is refused here.

use crate::service::state::ServiceState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

pub async fn require_client(State(s): State<ServiceState>, req: Request, next: Next) -> Response {
    match crate::api::bearer(req.headers()) {
        Some(t) if client_token(&s.settings.client_tokens, t) => next.run(req).await,
        _ => crate::api::bearer_refused(
            "send Authorization: Bearer <a client token of the service's token_file>",
        ),
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
