//! The web view at `/ui/`: a login form, then one page (hash-routed: pool, jobs, job, task,
//! node) whose script reads and acts through berth's own REST API with the session cookie.
//! Served by the agent's TCP listener and by `berth service`, beside their APIs; the
//! assets are in the binary (no CDN, nothing fetched at run time).
//!
//! Only the login form, the assets and `/ui/session` are answered here; every datum comes
//! from the API, under its guard ([`session`] gives the guards the cookie rules).

pub mod session;

pub use session::Access;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Which server the view is in: the agent shows its one node, the service its pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Agent,
    Service,
}

/// Decides what a token given at login may do; `None`: not a token of this server.
pub type Check = Arc<dyn Fn(&str) -> Option<Access> + Send + Sync>;

/// The view's settings.
#[derive(Clone)]
pub struct Ui {
    pub mode: Mode,
    pub check: Check,
    /// Mark the cookie `Secure` (the server speaks HTTPS).
    pub secure_cookie: bool,
}

/// The `/ui` routes, for any router state (merged outside the API's guard: the login page
/// must be reachable without a token).
pub fn router<S: Clone + Send + Sync + 'static>(ui: Ui) -> Router<S> {
    let ui = Arc::new(ui);
    let (a, b, c, d, e) = (ui.clone(), ui.clone(), ui.clone(), ui.clone(), ui);
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route(
            "/ui/",
            get(move |h: HeaderMap| async move { index(&a, &h) }),
        )
        .route(
            "/ui/login",
            get(|| async { page(login_page(None), StatusCode::OK) })
                .post(move |h: HeaderMap, body: Bytes| async move { login(&b, &h, &body) }),
        )
        .route(
            "/ui/logout",
            axum::routing::post(move || async move { logout(&c) }),
        )
        .route(
            "/ui/session",
            get(move |h: HeaderMap| async move { session_info(&d, &h) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route("/ui/app.css", get(|| async { asset(APP_CSS, "text/css") }))
        .route("/ui/{*rest}", get(move || async move { not_found(&e) }))
}

/// The session's access, if its cookie holds a good token.
fn access(ui: &Ui, h: &HeaderMap) -> Option<(String, Access)> {
    let token = session::cookie_token(h)?;
    let a = (ui.check)(&token)?;
    Some((token, a))
}

fn index(ui: &Ui, h: &HeaderMap) -> Response {
    match access(ui, h) {
        Some(_) => page(INDEX.to_string(), StatusCode::OK),
        None => redirect("/ui/login"),
    }
}

fn login(ui: &Ui, h: &HeaderMap, body: &[u8]) -> Response {
    if !same_origin(h) {
        return (
            StatusCode::FORBIDDEN,
            "a login must come from this site's own form",
        )
            .into_response();
    }
    let token = form_value(body, "token").unwrap_or_default();
    let token = token.trim();
    if (ui.check)(token).is_none() {
        return page(
            login_page(Some("That token is not accepted here.")),
            StatusCode::UNAUTHORIZED,
        );
    }
    let mut r = redirect("/ui/");
    if let Ok(v) = session::set_cookie(token, ui.secure_cookie).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether the request's `Origin`, when a browser sent one, names this server (`Host`): a
/// login form posted from another site is refused (login CSRF).
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    origin.split_once("://").map(|(_, rest)| rest) == host
}

fn logout(ui: &Ui) -> Response {
    let mut r = redirect("/ui/login");
    if let Ok(v) = session::clear_cookie(ui.secure_cookie).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `{"mode": "agent"|"service", "access": "full"|"readOnly", "csrf": "<hex>"}`, or 401.
fn session_info(ui: &Ui, h: &HeaderMap) -> Response {
    let Some((token, a)) = access(ui, h) else {
        return crate::api::ApiError::AuthenticationFailed("log in at /ui/login".into())
            .into_response();
    };
    let body = serde_json::json!({
        "mode": match ui.mode { Mode::Agent => "agent", Mode::Service => "service" },
        "access": match a { Access::Full => "full", Access::ReadOnly => "readOnly" },
        "csrf": session::csrf_token(&token),
    });
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn not_found(_ui: &Ui) -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such page; the web view is at /ui/",
    )
        .into_response()
}

/// `value` of `key` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn login_page(error: Option<&str>) -> String {
    let msg = error
        .map(|e| format!(r#"<p class="error" role="alert" id="login-error">{e}</p>"#))
        .unwrap_or_default();
    LOGIN.replace("<!--error-->", &msg)
}

/// Pages are never framed (clickjacking) and load nothing from elsewhere.
fn page(html: String, status: StatusCode) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values() {
        assert_eq!(
            form_value(b"a=1&token=abc%2Bd+e", "token").as_deref(),
            Some("abc+d e")
        );
        assert_eq!(form_value(b"a=1", "token"), None);
    }

    #[test]
    fn logins_from_other_sites_are_refused() {
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), v.parse().unwrap());
            }
            m
        };
        assert!(same_origin(&h(&[(header::HOST, "127.0.0.1:8470")])));
        assert!(same_origin(&h(&[
            (header::HOST, "127.0.0.1:8470"),
            (header::ORIGIN, "http://127.0.0.1:8470")
        ])));
        assert!(!same_origin(&h(&[
            (header::HOST, "127.0.0.1:8470"),
            (header::ORIGIN, "https://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            (header::HOST, "127.0.0.1:8470"),
            (header::ORIGIN, "null")
        ])));
    }

    #[test]
    fn login_errors_are_shown_once() {
        assert!(!login_page(None).contains("role=\"alert\""));
        assert!(login_page(Some("no")).contains("role=\"alert\""));
    }
}
