//! The client guard: `Authorization: Bearer <token>` (or the web view's session cookie,
//! `crate::ui::session`), one of the configured client tokens, compared in constant time;
//! a read-only token may only read; or Batch's `SharedKey` with the service's account keys
//! (`crate::api::check_shared_key`). A node token or the enrolment secret is refused here.

use crate::service::state::ServiceState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

pub async fn require_client(State(s): State<ServiceState>, req: Request, next: Next) -> Response {
    use crate::ui::session::{judge, one_of, Verdict};
    let set = &s.settings;
    let full = |t: &str| one_of(&set.client_tokens, t);
    match judge(
        &req,
        set.shared_key.as_deref(),
        full,
        &set.read_only_tokens,
        refused,
    ) {
        Verdict::Pass => next.run(req).await,
        Verdict::Answer(a) => a,
        Verdict::Other(_) => refused(),
    }
}

fn refused() -> Response {
    crate::api::bearer_refused(
        "send Authorization: Bearer <a client token of the service's token_file>, or SharedKey <account_name>:<signature> when the service has account keys",
    )
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
