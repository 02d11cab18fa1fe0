//! berth's node protocol as the service serves it (`berth_proto::node_protocol`, under
//! its `PREFIX`): enrol, heartbeat, claim (a long poll), report, adopt, leave. Every call
//! but enrol is authorised by the node token minted at enrol; a token names its epoch,
//! and only the node's newest epoch counts (an older one is answered `NodeSuperseded`).

mod claim;
mod commands;
mod enrol;
mod heartbeat;
mod report;
pub(crate) mod token;

pub use report::leave_pool;

use super::attempts::NodeRef;
use super::state::ServiceState;
use crate::api::ApiError;
use crate::service::db::Cached;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::post;
use axum::Router;
use berth_proto::node_protocol::PREFIX;
use serde::de::DeserializeOwned;

/// The node protocol's routes, each under `PREFIX` (`/nodeagent/v1/enrol`, ...).
pub fn router() -> Router<ServiceState> {
    let r = |p: &str| format!("{PREFIX}/{p}");
    Router::new()
        .route(&r("enrol"), post(enrol::enrol))
        .route(&r("heartbeat"), post(heartbeat::heartbeat))
        .route(&r("claim"), post(claim::claim))
        .route(&r("report"), post(report::report))
        .route(&r("reports"), post(report::reports))
        .route(&r("adopt"), post(report::adopt))
        .route(&r("leave"), post(report::leave))
}

/// The node a call comes from, proven by its token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub node: NodeRef,
    pub epoch: i64,
}

impl Caller {
    /// Locks the caller's node row for the rest of `tx` (the first lock of every write,
    /// in the order `service::attempts` documents) and checks, under the lock, that the
    /// caller's enrolment is still the node's: the token was checked before the
    /// transaction began, and a newer enrolment committed since then must win.
    pub(crate) async fn lock(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), ApiError> {
        if super::attempts::lock_node_at(tx, &self.node, self.epoch).await? {
            Ok(())
        } else {
            Err(self.superseded())
        }
    }

    /// Batch's 409 `NodeSuperseded` for this caller.
    fn superseded(&self) -> ApiError {
        superseded(&self.node)
    }

    /// The body's epoch must be the token's: a body of another enrolment is stale.
    fn check_epoch(&self, epoch: i64) -> Result<(), ApiError> {
        if epoch == self.epoch {
            Ok(())
        } else {
            Err(ApiError::NodeSuperseded(format!(
                "the request names epoch {epoch}, the token epoch {}",
                self.epoch
            )))
        }
    }
}

impl FromRequestParts<ServiceState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ServiceState) -> Result<Self, ApiError> {
        let tok = bearer(&parts.headers)?;
        let refused = || ApiError::AuthenticationFailed("the node token is not valid".into());
        let (epoch, _) = token::parse(tok).ok_or_else(refused)?;
        let conn = st.db.node_conn().await?;
        let row = conn
            .query_opt_cached(
                "SELECT e.pool_id, e.node_id, e.token_hash, n.epoch
                 FROM enrolments e LEFT JOIN nodes n ON n.pool_id = e.pool_id AND n.id = e.node_id
                 WHERE e.epoch = $1",
                &[&epoch],
            )
            .await
            .map_err(super::db::DbError::from)?
            .ok_or_else(refused)?;
        let hash: Vec<u8> = row.get(2);
        if !crate::api::constant_time_eq(&hash, &token::hash(tok)) {
            return Err(refused());
        }
        let node = NodeRef {
            pool_id: row.get(0),
            node_id: row.get(1),
        };
        if row.get::<_, Option<i64>>(3) != Some(epoch) {
            return Err(superseded(&node));
        }
        Ok(Caller { node, epoch })
    }
}

fn superseded(node: &NodeRef) -> ApiError {
    ApiError::NodeSuperseded(format!(
        "node {} of pool {} was enrolled again or removed; this agent must stop",
        node.node_id, node.pool_id
    ))
}

/// The `Authorization: Bearer <token>` of a request; 401 when absent.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    crate::api::bearer(headers).ok_or_else(|| {
        ApiError::AuthenticationFailed("the request has no Authorization: Bearer credential".into())
    })
}

/// A JSON body of the node protocol; 400 naming what does not read.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestBody(e.to_string()))
}

/// The node's `fileAddress` when it can be used; one that cannot is logged and left out
/// (the node keeps working; its files answer `TaskFilesUnavailable`).
pub(crate) fn usable_file_address(node: &str, a: Option<&str>) -> Option<String> {
    match check_file_address(a) {
        Ok(()) => a.map(str::to_string),
        Err(e) => {
            tracing::warn!(node, error = %e, "a node's file address is not used");
            None
        }
    }
}

/// A node's `fileAddress`, checked before it is stored: the service's file proxy will
/// fetch from it, so it must be a plain `http(s)://host[:port]` base (no user, path, query
/// or fragment that would steer the client's path elsewhere) and not a link-local address
/// (cloud metadata services live there).
pub(crate) fn check_file_address(a: Option<&str>) -> Result<(), ApiError> {
    let Some(a) = a else { return Ok(()) };
    let bad = |why: &str| {
        ApiError::InvalidPropertyValue(format!(
            "fileAddress {a:?}: {why}; give http(s)://HOST[:PORT]"
        ))
    };
    let url = reqwest::Url::parse(a).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("no user or password"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || a.contains(['?', '#'])
    {
        return Err(bad("no path, query or fragment"));
    }
    let Some(host) = url.host_str() else {
        return Err(bad("no host"));
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let link_local = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local() || ip.is_unspecified(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.is_unspecified()
        }
        Err(_) => false,
    };
    if link_local {
        return Err(bad(
            "a link-local or unspecified address cannot be a node's",
        ));
    }
    Ok(())
}

/// A node-bound answer with secrets in full: the pool's and tasks' registry passwords are
/// what the node pulls with. Only the node protocol answers this way, to a node's own
/// credential; the client API's answers hide them.
pub(crate) fn to_node<T: serde::Serialize>(v: &T) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body = berth_proto::common::with_secrets_revealed(|| serde_json::to_vec(v))
        .map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod file_address_tests {
    use super::check_file_address;

    #[test]
    fn only_plain_node_addresses_are_stored() {
        for ok in [
            "http://127.0.0.1:8080",
            "https://node1.pool.example:443/",
            "http://[::1]:9",
        ] {
            assert!(check_file_address(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data/#",
            "http://169.254.169.254",
            "http://10.0.0.1:80/x",
            "http://10.0.0.1:80?x=",
            "http://user:pw@10.0.0.1",
            "file:///etc/passwd",
            "http://0.0.0.0:8080",
            "http://[fe80::1]:80",
            "10.0.0.1:80",
        ] {
            assert!(check_file_address(Some(bad)).is_err(), "{bad}");
        }
    }
}
