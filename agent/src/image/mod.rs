//! IMAGES, below pool start and tasks, which both use them: the node's image store (one
//! shared pull per image and credentials, retries, limits; `store.rs`), where a pull's
//! credentials come from (task registry, pool registry, Docker config; `credentials.rs`),
//! and how pull progress is shown (bars or log lines; `progress.rs`).

pub mod board;
pub mod credentials;
pub mod progress;
pub mod store;
