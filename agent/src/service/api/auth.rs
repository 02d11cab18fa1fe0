//! The client guard: `Authorization: Bearer <token>` (or the web view's session cookie,
//! `crate::ui::session`), one of the configured client tokens, compared in constant time;
//! a read-only token may only read. A node token or the enrolment secret is refused here.

use crate::service::state::ServiceState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn require_client(State(s): State<ServiceState>, req: Request, next: Next) -> Response {
    use crate::ui::session;
    let given = match session::credential(req.headers(), req.method()) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    match given.as_deref() {
        Some(t) if session::one_of(&s.settings.client_tokens, t) => next.run(req).await,
        Some(t) if session::one_of(&s.settings.read_only_tokens, t) => {
            if session::is_read(req.method()) {
                next.run(req).await
            } else {
                session::read_only_refused().into_response()
            }
        }
        _ => crate::api::bearer_refused(
            "send Authorization: Bearer <a client token of the service's token_file>",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_configured_token() {
        let tokens = vec!["a".repeat(16), "b".repeat(20)];
        assert!(crate::ui::session::one_of(&tokens, &"b".repeat(20)));
        assert!(!crate::ui::session::one_of(&tokens, &"b".repeat(19)));
        assert!(!crate::ui::session::one_of(&tokens, ""));
    }
}
