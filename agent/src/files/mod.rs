//! TASK FILES, around the attempts of one task:
//! `resourceFiles` -> [`resources::download`] into `wd` before the first attempt;
//! `outputFiles` -> [`pattern`] (pure) -> [`outputs::upload`] after the last one.
//! [`blob`] is the one HTTP seam: streamed GETs, List Blobs, Put Blob / Block / Block List.

pub mod blob;
pub mod outputs;
pub mod pattern;
pub mod resources;

use crate::error_chain::{chain, Cause};
use crate::node::BeneathError;
use berth_proto::FailureCode;
use std::sync::OnceLock;

/// A transfer that failed, as Batch reports it: a failure code and a message that names
/// the file and the URL without its query; an I/O error behind it is kept as `source`.
/// [`FileError::details`] is the text the task's failure info shows.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FileError {
    pub code: FailureCode,
    pub message: String,
    #[source]
    pub source: Option<Cause>,
}

impl FileError {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        FileError {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// `message` says what failed, `source` why.
    pub fn caused(
        code: FailureCode,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        FileError {
            code,
            message: message.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// A file operation beneath a task's directory that failed, with `code`: the path,
    /// and the I/O error as its cause; what the task planted, in words.
    pub fn beneath(code: FailureCode, e: BeneathError) -> Self {
        match e {
            BeneathError::Io { path, source } => {
                FileError::caused(code, path.display().to_string(), source)
            }
            refused => FileError::new(code, refused.to_string()),
        }
    }

    /// The message and its causes ("stdout.txt: No space left on device").
    pub fn details(&self) -> String {
        match &self.source {
            Some(s) => format!("{}: {}", self.message, chain(s)),
            None => self.message.clone(),
        }
    }
}

/// How transfers are shaped. The defaults keep memory bounded: a download holds one
/// write buffer, an upload `block_size * block_concurrency` bytes per file. 2 MiB x 4 was
/// as fast as 4 MiB x 3 or 2 MiB x 6 against Azurite with half the memory
/// (`cargo bench -p berth-tests --bench transfer`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Files transferred at once.
    pub file_concurrency: usize,
    /// Blocks of one file in flight at once.
    pub block_concurrency: usize,
    /// Put Block size; files up to this size go up in one Put Blob.
    pub block_size: usize,
    /// Tries per request for transient errors (timeouts, 5xx, 429, dropped connections).
    pub attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_concurrency: 4,
            block_concurrency: 4,
            block_size: 2 << 20,
            attempts: 4,
        }
    }
}

/// The HTTP client and limits every task's transfers share.
pub struct Transfers {
    pub http: blob::Http,
    pub limits: Limits,
}

impl Transfers {
    pub fn new(limits: Limits) -> Result<Transfers, reqwest::Error> {
        Ok(Transfers {
            http: blob::Http::new()?,
            limits,
        })
    }

    /// The process's transfers, made on first use (loading the trust store costs a few ms,
    /// which tasks without files never pay).
    pub fn shared() -> Result<&'static Transfers, FileError> {
        static SHARED: OnceLock<Result<Transfers, Cause>> = OnceLock::new();
        SHARED
            .get_or_init(|| Transfers::new(Limits::default()).map_err(Cause::new))
            .as_ref()
            .map_err(|e| FileError {
                code: FailureCode::Unknown,
                message: "HTTP client".into(),
                source: Some(e.clone()),
            })
    }
}

/// Files and directories made for the task belong to its user (root owns them for admin
/// tasks, and when berth itself does not run as root).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The task user's, or none for admin or when berth is not root (it cannot chown).
    pub fn of(user: &crate::node::ResolvedUser) -> Option<Owner> {
        (nix::unistd::Uid::effective().is_root() && !user.admin).then_some(Owner {
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// Gives an opened file or directory to the owner, through its descriptor (a task's
    /// directory may hold links: a path would be followed).
    pub fn apply(owner: Option<Owner>, fd: impl std::os::fd::AsFd) -> std::io::Result<()> {
        match owner {
            Some(o) => crate::node::beneath::fchown(fd, o.uid, o.gid),
            None => Ok(()),
        }
    }
}
