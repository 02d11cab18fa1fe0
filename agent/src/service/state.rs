//! What every handler of the service shares: the database and the settings. Nothing else:
//! the service keeps no state of its own between requests (any replica answers any call).

use super::db::Db;
use std::sync::Arc;

#[derive(Clone)]
pub struct ServiceState {
    pub db: Db,
    pub settings: Arc<Settings>,
    /// Wakes long-polling claims when tasks become claimable (fed by PostgreSQL's
    /// `LISTEN berth_ready`, see `service::wake`).
    pub wake: Arc<super::wake::Wake>,
}

/// The service's secrets and knobs, from its configuration file and flags.
#[derive(Clone, Default)]
pub struct Settings {
    /// Bearer tokens clients (SDKs, the CLI) may use; any one of them is good.
    pub client_tokens: Vec<String>,
    /// Tokens good for reads only (GET and HEAD of the client API; the web view's viewers).
    pub read_only_tokens: Vec<String>,
    /// The service speaks HTTPS: the web view's cookie is marked `Secure`.
    pub secure_cookies: bool,
    /// The secret an agent shows to enrol a node (`Authorization: Bearer <secret>`).
    pub enrolment_secret: String,
    /// The key of the nodes' file-proxy credentials (`node_api::token::proxy`); empty:
    /// derived from the enrolment secret (see [`Settings::proxy_key`]).
    pub proxy_secret: String,
    /// Batch's SharedKey: the account and keys clients may sign requests with.
    pub shared_key: Option<Arc<crate::api::shared_key::KeyRing>>,
}

impl Settings {
    /// The key file-proxy credentials are derived with: the proxy secret, or, when none
    /// is configured, one derived from the enrolment secret. Agents hold the enrolment
    /// secret, so only a proxy secret of its own keeps one node from reading another's
    /// files directly.
    pub fn proxy_key(&self) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        if !self.proxy_secret.is_empty() {
            return self.proxy_secret.as_bytes().to_vec();
        }
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.enrolment_secret.as_bytes())
            .expect("any key length");
        m.update(b"berth file-proxy key");
        m.finalize().into_bytes().to_vec()
    }
}

impl std::fmt::Debug for Settings {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "client_tokens",
                &format_args!("[{} redacted]", self.client_tokens.len()),
            )
            .field(
                "read_only_tokens",
                &format_args!("[{} redacted]", self.read_only_tokens.len()),
            )
            .field("enrolment_secret", &"<redacted>")
            .field("secure_cookies", &self.secure_cookies)
            .field("proxy_secret", &"<redacted>")
            .field(
                "shared_key",
                &self
                    .shared_key
                    .as_ref()
                    .map(|k| k.get().account().to_string()),
            )
            .finish()
    }
}
