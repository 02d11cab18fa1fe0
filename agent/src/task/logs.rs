//! Container output -> `stdout.txt` / `stderr.txt` in the task directory.
//! Bytes are written as they arrive (constant memory), and the files are owned by the
//! task's user like the rest of its directory.

use crate::engine::{EngineError, Output};
use futures_util::{Stream, StreamExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub const STDOUT: &str = "stdout.txt";
pub const STDERR: &str = "stderr.txt";

/// Creates (truncates) the two output files of an attempt.
pub async fn open(
    task_dir: &Path,
    uid_gid: Option<(u32, u32)>,
) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let mk = |name: &str| -> PathBuf { task_dir.join(name) };
    let out = tokio::fs::File::create(mk(STDOUT)).await?;
    let err = tokio::fs::File::create(mk(STDERR)).await?;
    if let Some((uid, gid)) = uid_gid {
        for n in [STDOUT, STDERR] {
            std::os::unix::fs::chown(mk(n), Some(uid), Some(gid))?;
        }
    }
    Ok((out, err))
}

/// Copies a container's output stream into the files until the stream ends.
/// Returns the byte counts written.
pub async fn copy(
    mut stream: impl Stream<Item = Result<Output, EngineError>> + Unpin,
    mut out: tokio::fs::File,
    mut err: tokio::fs::File,
) -> Result<(u64, u64), std::io::Error> {
    let (mut n_out, mut n_err) = (0u64, 0u64);
    while let Some(item) = stream.next().await {
        match item {
            Ok(Output::Stdout(b)) => {
                out.write_all(&b).await?;
                n_out += b.len() as u64;
            }
            Ok(Output::Stderr(b)) => {
                err.write_all(&b).await?;
                n_err += b.len() as u64;
            }
            Err(e) => {
                tracing::warn!(error = %e, "output stream ended with an error");
                break;
            }
        }
    }
    out.flush().await?;
    err.flush().await?;
    out.sync_all().await?;
    err.sync_all().await?;
    Ok((n_out, n_err))
}
