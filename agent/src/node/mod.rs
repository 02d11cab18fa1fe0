//! Where things live on this machine: the Batch directory tree and the task users.

pub mod beneath;
pub mod job_token;
pub mod layout;
pub mod retention;
pub mod status;
pub mod users;

pub use beneath::{Beneath, BeneathError};
pub use layout::NodeLayout;
pub use status::NodeStatus;
pub use users::{ResolvedUser, UserError};
