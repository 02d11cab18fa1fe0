//! The web view's session rules, shared by the agent's TCP guard and the service's client
//! guard: where a request's token comes from (the bearer header, else the session cookie),
//! CSRF on cookie-carried actions, and what a read-only token may do.
//!
//! CSRF: the cookie holds the token itself (HttpOnly, SameSite=Strict, Path=/). Every
//! state-changing request carried by the cookie must also send `x-berth-csrf` with the
//! HMAC-SHA256 of the token (a per-session value, [`csrf_token`]), which the page reads from
//! `/ui/session` (same-origin only). Stateless on purpose: any agent or service replica
//! checks it without a session table, and the value reveals nothing of the token. The
//! custom header also makes a cross-site `fetch` need a CORS preflight, which berth never
//! grants; SameSite=Strict keeps the cookie off cross-site requests in the first place.

use crate::api::{constant_time_eq, ApiError};
use axum::http::{header, HeaderMap, Method};
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

/// The session cookie's name.
pub const COOKIE: &str = "berth_session";

/// The header a page sends on actions, holding [`csrf_token`] of its cookie.
pub const CSRF_HEADER: &str = "x-berth-csrf";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every operation.
    Full,
    /// GET and HEAD only; any action is 403 `AuthorizationFailure`.
    ReadOnly,
}

/// Reads only: GET, HEAD (and OPTIONS, which berth answers with 405 anyway).
pub fn is_read(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's token: `Authorization: Bearer` when sent, else the session cookie. A
/// state-changing request carried by the cookie without the matching [`CSRF_HEADER`] is
/// 403 `AuthorizationFailure`; `Ok(None)`: no credential at all.
pub fn credential(h: &HeaderMap, method: &Method) -> Result<Option<String>, ApiError> {
    if h.contains_key(header::AUTHORIZATION) {
        return Ok(crate::api::bearer(h).map(str::to_string));
    }
    let Some(token) = cookie_token(h) else {
        return Ok(None);
    };
    if !is_read(method) {
        let sent = h
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), csrf_token(&token).as_bytes()) {
            return Err(ApiError::AuthorizationFailure(format!(
                "an action made with the web view's cookie must send the {CSRF_HEADER} header of its session"
            )));
        }
    }
    Ok(Some(token))
}

/// The token in the session cookie, if any (the last one wins, as browsers send the most
/// specific path first and there is only one path here).
pub fn cookie_token(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .rfind(|t| !t.is_empty())
}

/// The CSRF value of a session: hex HMAC-SHA256 keyed by its token.
pub fn csrf_token(token: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(b"berth web view csrf v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `Set-Cookie` for a session of `token`; `secure` adds `Secure` (HTTPS only).
pub fn set_cookie(token: &str, secure: bool) -> String {
    let v = utf8_percent_encode(token, NON_ALPHANUMERIC);
    let s = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={v}; HttpOnly; SameSite=Strict; Path=/{s}")
}

/// `Set-Cookie` that ends the session.
pub fn clear_cookie(secure: bool) -> String {
    let s = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{s}")
}

/// What a guard makes of a request by the rules both guards share.
pub enum Verdict {
    /// Let it through (a good SharedKey signature, a full token, a read-only token
    /// reading).
    Pass,
    /// Answer this instead (a bad signature, a CSRF failure, a read-only token acting).
    Answer(axum::response::Response),
    /// A credential neither full nor read-only (`None`: none at all): the guard decides
    /// (the agent knows more kinds; otherwise refused).
    Other(Option<String>),
}

/// The agent's and the service's guards in one: a SharedKey signature when `keys` are
/// set and the request is signed, else the bearer header or the session cookie
/// ([`credential`], CSRF on actions); a token `full` accepts passes, one of `read_only`
/// passes reads and is refused actions. `refused`: the answer for a bad signature.
pub fn judge(
    req: &axum::extract::Request,
    keys: Option<&crate::api::shared_key::KeyRing>,
    full: impl Fn(&str) -> bool,
    read_only: &[String],
    refused: fn() -> axum::response::Response,
) -> Verdict {
    use axum::response::IntoResponse;
    if let Some(signed) = crate::api::check_shared_key(keys, req, refused) {
        return match signed {
            Ok(()) => Verdict::Pass,
            Err(answer) => Verdict::Answer(answer),
        };
    }
    match credential(req.headers(), req.method()) {
        Err(e) => Verdict::Answer(e.into_response()),
        Ok(Some(t)) if full(&t) => Verdict::Pass,
        Ok(Some(t)) if one_of(read_only, &t) => {
            if is_read(req.method()) {
                Verdict::Pass
            } else {
                Verdict::Answer(read_only_refused().into_response())
            }
        }
        Ok(other) => Verdict::Other(other),
    }
}

/// The refusal of an action to a read-only token.
pub fn read_only_refused() -> ApiError {
    ApiError::AuthorizationFailure("this token is read-only: it may read, not act".into())
}

/// Whether `given` is one of `tokens`; every token is compared, each in constant time.
pub fn one_of(tokens: &[String], given: &str) -> bool {
    tokens.iter().fold(false, |ok, t| {
        constant_time_eq(t.as_bytes(), given.as_bytes()) | ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const T: &str = "a-token-of-16+chars;=x";

    #[test]
    fn the_bearer_header_comes_first_and_needs_no_csrf() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "berth_session=zzz"),
        ]);
        assert_eq!(
            credential(&h, &Method::POST).unwrap().as_deref(),
            Some("abc")
        );
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(credential(&h, &Method::GET).unwrap(), None);
        assert_eq!(credential(&HeaderMap::new(), &Method::GET).unwrap(), None);
    }

    #[test]
    fn the_cookie_round_trips_any_token() {
        let set = set_cookie(T, false);
        assert!(set.contains("; HttpOnly; SameSite=Strict; Path=/"), "{set}");
        assert!(!set.contains("Secure"));
        assert!(set_cookie(T, true).ends_with("; Secure"));
        let value = set.split(';').next().unwrap();
        let h = headers(&[("cookie", &format!("other=1; {value}; x=y"))]);
        assert_eq!(cookie_token(&h).as_deref(), Some(T));
        assert_eq!(credential(&h, &Method::GET).unwrap().as_deref(), Some(T));
        let cleared = clear_cookie(false);
        let h = headers(&[("cookie", cleared.split(';').next().unwrap())]);
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn cookie_actions_need_the_sessions_csrf_value() {
        let cookie = format!("{COOKIE}=abcdefghijklmnop");
        let csrf = csrf_token("abcdefghijklmnop");
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, csrf_token("abcdefghijklmnoq"));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let none = headers(&[("cookie", &cookie)]);
            let e = credential(&none, &m).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (403, "AuthorizationFailure")
            );
            let wrong = headers(&[
                ("cookie", &cookie),
                (CSRF_HEADER, &csrf_token("other-token-xxxxxx")),
            ]);
            assert!(credential(&wrong, &m).is_err());
            let right = headers(&[("cookie", &cookie), (CSRF_HEADER, &csrf)]);
            assert_eq!(
                credential(&right, &m).unwrap().as_deref(),
                Some("abcdefghijklmnop")
            );
        }
        // Reads need none.
        let h = headers(&[("cookie", &cookie)]);
        assert!(credential(&h, &Method::GET).is_ok());
        assert!(credential(&h, &Method::HEAD).is_ok());
    }

    #[test]
    fn read_only_means_get_and_head() {
        assert!(is_read(&Method::GET) && is_read(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(!is_read(&m));
        }
        let e = read_only_refused();
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (403, "AuthorizationFailure")
        );
    }

    #[test]
    fn token_lists() {
        let tokens = vec!["a".repeat(16), "b".repeat(20)];
        assert!(one_of(&tokens, &"b".repeat(20)));
        assert!(!one_of(&tokens, &"b".repeat(19)));
        assert!(!one_of(&[], "x"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ro");
        std::fs::write(&p, "# viewers\n\nview-token-0123456789\n").unwrap();
        assert_eq!(
            crate::api::read_tokens(&p).unwrap(),
            vec!["view-token-0123456789"]
        );
        std::fs::write(&p, "short\n").unwrap();
        assert!(crate::api::read_tokens(&p).unwrap_err().contains("line 1"));
    }
}
