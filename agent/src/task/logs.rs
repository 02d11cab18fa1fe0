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

/// Opens the output files to add to them (an adopted container's new output).
pub async fn open_append(task_dir: &Path) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let mut o = tokio::fs::OpenOptions::new();
    o.append(true).create(true);
    Ok((
        o.open(task_dir.join(STDOUT)).await?,
        o.open(task_dir.join(STDERR)).await?,
    ))
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

/// Appends what `stream` (the whole output, read again after exit) holds beyond what the
/// files already have. Both reads come from the same log store in order, so each file's
/// content is a prefix of its stream. Returns the bytes appended.
pub async fn complete(
    mut stream: impl Stream<Item = Result<Output, EngineError>> + Unpin,
    task_dir: &Path,
) -> Result<(u64, u64), std::io::Error> {
    async fn open(p: PathBuf) -> std::io::Result<tokio::fs::File> {
        tokio::fs::OpenOptions::new().append(true).open(p).await
    }
    let (mut out, mut err) = (
        open(task_dir.join(STDOUT)).await?,
        open(task_dir.join(STDERR)).await?,
    );
    let mut skip_out = out.metadata().await?.len();
    let mut skip_err = err.metadata().await?.len();
    let (mut added_out, mut added_err) = (0u64, 0u64);
    // Writes the part of `b` past the `skip` bytes already in the file.
    async fn tail(
        f: &mut tokio::fs::File,
        b: &[u8],
        skip: &mut u64,
        added: &mut u64,
    ) -> std::io::Result<()> {
        let n = (*skip).min(b.len() as u64);
        *skip -= n;
        #[allow(clippy::cast_possible_truncation)]
        let rest = &b[n as usize..];
        f.write_all(rest).await?;
        *added += rest.len() as u64;
        Ok(())
    }
    while let Some(item) = stream.next().await {
        match item {
            Ok(Output::Stdout(b)) => tail(&mut out, &b, &mut skip_out, &mut added_out).await?,
            Ok(Output::Stderr(b)) => tail(&mut err, &b, &mut skip_err, &mut added_err).await?,
            Err(e) => {
                tracing::warn!(error = %e, "reading the container's output again failed");
                break;
            }
        }
    }
    out.sync_all().await?;
    err.sync_all().await?;
    Ok((added_out, added_err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn complete_appends_only_what_the_files_lack() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "line1\nli").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let full = futures_util::stream::iter(vec![
            Ok(Output::Stdout(b"line1\n".to_vec())),
            Ok(Output::Stderr(b"err\n".to_vec())),
            Ok(Output::Stdout(b"line2\nline3\n".to_vec())),
        ]);
        let added = complete(full, dir.path()).await.unwrap();
        assert_eq!(added, (10, 4));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(STDOUT)).unwrap(),
            "line1\nline2\nline3\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(STDERR)).unwrap(),
            "err\n"
        );
    }
}
