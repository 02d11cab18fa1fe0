//! STUB until the node protocol lands: the node protocol's routes (`/nodeagent/v1/*`),
//! which authenticate nodes themselves. Replaced by the real module.

use super::state::ServiceState;
use axum::Router;

pub fn router() -> Router<ServiceState> {
    Router::new()
}
