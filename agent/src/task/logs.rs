//! Container output -> `stdout.txt` / `stderr.txt` in the task directory.
//! Bytes are written as they arrive (constant memory, however long a line), each file up
//! to the node's output limit: past it the rest is dropped and one marker line says so.
//! A write that fails (a full disk) ends the copy with the error, so the attempt can stop
//! the container instead of running on with its output lost.

use crate::engine::{EngineError, Output};
use crate::error_chain::Chain;
use crate::node::beneath::{self, Beneath};
use futures_util::{Stream, StreamExt};
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub const STDOUT: &str = "stdout.txt";
pub const STDERR: &str = "stderr.txt";

/// Creates (empties) the two output files of an attempt, owned by `uid_gid`. The task owns
/// its directory and may have left anything under these names: a link, a FIFO, a hard
/// link is refused (see [`crate::node::beneath`]), never written through.
pub async fn open(
    task_dir: &Path,
    uid_gid: Option<(u32, u32)>,
) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let dir = Beneath::open(task_dir)?;
    let mut files = Vec::with_capacity(2);
    for n in [STDOUT, STDERR] {
        let f = dir.create(n, 0o644)?;
        if let Some((uid, gid)) = uid_gid {
            beneath::fchown(&f, uid, gid)?;
        }
        files.push(tokio::fs::File::from_std(f));
    }
    let err = files.pop().unwrap_or_else(|| unreachable!());
    let out = files.pop().unwrap_or_else(|| unreachable!());
    Ok((out, err))
}

/// Opens the output files to add to them (an adopted container's new output).
pub async fn open_append(task_dir: &Path) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let dir = Beneath::open(task_dir)?;
    let open =
        |n| -> std::io::Result<_> { Ok(tokio::fs::File::from_std(dir.append(n, Some(0o644))?)) };
    Ok((open(STDOUT)?, open(STDERR)?))
}

/// The line written once where a file reached the limit.
pub fn marker(name: &str, limit: u64) -> String {
    format!("\n[berth: {name} reached this node's task output limit of {limit} bytes; the rest was dropped]\n")
}

/// The output files of a task that reached the limit. A file longer than the limit holds
/// the marker, so this needs no other record and survives an agent restart.
pub fn truncated(task_dir: &Path, limit: Option<u64>) -> Vec<String> {
    let Some(limit) = limit else { return vec![] };
    [STDOUT, STDERR]
        .into_iter()
        .filter(|n| {
            // Looked at, not followed: a link the task left is no output of its own.
            Beneath::open(task_dir)
                .and_then(|d| d.lstat(n))
                .is_ok_and(|st| {
                    beneath::kind(&st) == rustix::fs::FileType::RegularFile
                        && st.st_size as u64 > limit
                })
        })
        .map(String::from)
        .collect()
}

/// One output file being written: counts what it holds and drops what is past the limit.
struct Sink {
    file: tokio::fs::File,
    name: &'static str,
    /// Bytes in the file (the marker excluded), and when it was opened.
    len: u64,
    start: u64,
    limit: Option<u64>,
    /// The marker is written; everything further is dropped.
    full: bool,
    dropped: u64,
}

impl Sink {
    /// `len`: what the file holds already. A file longer than the limit is already marked.
    fn new(file: tokio::fs::File, name: &'static str, len: u64, limit: Option<u64>) -> Self {
        let full = limit.is_some_and(|l| len > l);
        Sink {
            file,
            name,
            len,
            start: len,
            limit,
            full,
            dropped: 0,
        }
    }

    async fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.full {
            self.dropped += b.len() as u64;
            return Ok(());
        }
        let room = self.limit.map_or(u64::MAX, |l| l.saturating_sub(self.len));
        #[allow(clippy::cast_possible_truncation)]
        let keep = (b.len() as u64).min(room) as usize;
        self.file.write_all(&b[..keep]).await?;
        self.len += keep as u64;
        if keep < b.len() {
            let limit = self.limit.unwrap_or(0);
            tracing::warn!(
                file = self.name,
                limit,
                "the task's output reached the node's limit; the rest is dropped"
            );
            self.file
                .write_all(marker(self.name, limit).as_bytes())
                .await?;
            self.full = true;
            self.dropped += (b.len() - keep) as u64;
        }
        Ok(())
    }

    /// Opens the pair for files holding what they hold.
    async fn pair(
        out: tokio::fs::File,
        err: tokio::fs::File,
        limit: Option<u64>,
    ) -> std::io::Result<[Sink; 2]> {
        let (out_len, err_len) = (out.metadata().await?.len(), err.metadata().await?.len());
        Ok([
            Sink::new(out, STDOUT, out_len, limit),
            Sink::new(err, STDERR, err_len, limit),
        ])
    }

    /// Syncs the pair to disk and says what was written since they were opened.
    async fn close(pair: [Sink; 2]) -> std::io::Result<Copied> {
        let copied = Copied {
            stdout: pair[0].len - pair[0].start,
            stderr: pair[1].len - pair[1].start,
            dropped: pair[0].dropped + pair[1].dropped,
        };
        for mut s in pair {
            s.file.flush().await?;
            s.file.sync_all().await?;
        }
        Ok(copied)
    }
}

/// What a copy wrote: bytes kept and dropped per file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub stdout: u64,
    pub stderr: u64,
    pub dropped: u64,
}

/// Copies a container's output stream into the files until the stream ends or `stop`
/// (between two writes, so the files hold whole chunks), each file up to `limit` bytes.
/// An error is a write that failed (the task's output is lost).
pub async fn copy(
    stream: impl Stream<Item = Result<Output, EngineError>> + Unpin,
    out: tokio::fs::File,
    err: tokio::fs::File,
    limit: Option<u64>,
    stop: CancellationToken,
) -> std::io::Result<Copied> {
    let mut sinks = Sink::pair(out, err, limit).await?;
    pump(stream, &mut sinks, [0, 0], &stop).await?;
    Sink::close(sinks).await
}

/// Writes the stream into the sinks, skipping the first `skip` bytes of each stream.
async fn pump(
    mut stream: impl Stream<Item = Result<Output, EngineError>> + Unpin,
    sinks: &mut [Sink; 2],
    mut skip: [u64; 2],
    stop: &CancellationToken,
) -> std::io::Result<()> {
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            item = stream.next() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let (i, b) = match item {
            Ok(Output::Stdout(b)) => (0, b),
            Ok(Output::Stderr(b)) => (1, b),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "output stream ended with an error");
                break;
            }
        };
        let n = skip[i].min(b.len() as u64);
        skip[i] -= n;
        #[allow(clippy::cast_possible_truncation)]
        sinks[i].write(&b[n as usize..]).await?;
        // Both files full: nothing more can be kept, so don't read on.
        if sinks.iter().all(|s| s.full) {
            break;
        }
    }
    Ok(())
}

/// Appends what the whole output, read again from the log store by `open` (given which
/// of `[stdout, stderr]` to read), holds beyond what the files already have. Both reads
/// come from the same store in order, so each file's content is a prefix of its stream.
/// A file already at the limit is not read again (an endless writer's log can be huge).
pub async fn complete<S>(
    open: impl FnOnce([bool; 2]) -> S,
    task_dir: &Path,
    limit: Option<u64>,
    stop: CancellationToken,
) -> std::io::Result<Copied>
where
    S: Stream<Item = Result<Output, EngineError>> + Unpin,
{
    let dir = Beneath::open(task_dir)?;
    let append = |n| -> std::io::Result<_> { Ok(tokio::fs::File::from_std(dir.append(n, None)?)) };
    let (out, err) = (append(STDOUT)?, append(STDERR)?);
    let mut sinks = Sink::pair(out, err, limit).await?;
    let wanted = [!sinks[0].full, !sinks[1].full];
    if wanted != [false, false] {
        let skip = [sinks[0].start, sinks[1].start];
        pump(open(wanted), &mut sinks, skip, &stop).await?;
    }
    Sink::close(sinks).await
}
#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<Output>) -> impl Stream<Item = Result<Output, EngineError>> + Unpin {
        futures_util::stream::iter(items.into_iter().map(Ok))
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[tokio::test]
    async fn complete_appends_only_what_the_files_lack() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "line1\nli").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let full = stream(vec![
            Output::Stdout(b"line1\n".to_vec()),
            Output::Stderr(b"err\n".to_vec()),
            Output::Stdout(b"line2\nline3\n".to_vec()),
        ]);
        let added = complete(|_| full, dir.path(), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((added.stdout, added.stderr, added.dropped), (10, 4, 0));
        assert_eq!(read(dir.path(), STDOUT), "line1\nline2\nline3\n");
        assert_eq!(read(dir.path(), STDERR), "err\n");
    }

    #[tokio::test]
    async fn each_file_stops_at_the_limit_with_one_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = open(dir.path(), None).await.unwrap();
        let s = stream(vec![
            Output::Stdout(b"0123456".to_vec()),
            Output::Stderr(b"ab".to_vec()),
            Output::Stdout(b"789abc".to_vec()),
            Output::Stdout(b"more".to_vec()),
            Output::Stderr(b"cd".to_vec()),
        ]);
        let c = copy(s, out, err, Some(10), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((c.stdout, c.stderr, c.dropped), (10, 4, 7));
        assert_eq!(
            read(dir.path(), STDOUT),
            format!("0123456789{}", marker(STDOUT, 10))
        );
        assert_eq!(
            read(dir.path(), STDERR),
            "abcd",
            "stderr stayed under the limit"
        );
        assert_eq!(truncated(dir.path(), Some(10)), vec![STDOUT.to_string()]);
        assert!(truncated(dir.path(), None).is_empty());

        // Completing after exit (or after an agent restart) adds nothing to a marked file,
        // and stderr only up to the limit, with its own marker.
        let mut asked = None;
        let again = |which: [bool; 2]| {
            asked = Some(which);
            stream(vec![Output::Stderr(b"abcd0123456789".to_vec())])
        };
        let c = complete(again, dir.path(), Some(10), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            asked,
            Some([false, true]),
            "the full stdout is not read again"
        );
        assert_eq!((c.stdout, c.stderr, c.dropped), (0, 6, 4));
        assert_eq!(
            read(dir.path(), STDOUT),
            format!("0123456789{}", marker(STDOUT, 10)),
            "no second marker"
        );
        assert_eq!(
            read(dir.path(), STDERR),
            format!("abcd012345{}", marker(STDERR, 10))
        );
        assert_eq!(truncated(dir.path(), Some(10)).len(), 2);
    }

    #[tokio::test]
    async fn exactly_the_limit_is_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = open(dir.path(), None).await.unwrap();
        let c = copy(
            stream(vec![Output::Stdout(b"12345".to_vec())]),
            out,
            err,
            Some(5),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!((c.stdout, c.dropped), (5, 0));
        assert_eq!(read(dir.path(), STDOUT), "12345");
        assert!(truncated(dir.path(), Some(5)).is_empty());
    }

    #[tokio::test]
    async fn a_failed_write_is_an_error() {
        // /dev/full answers every write with ENOSPC, as a full node root does.
        let full = || async {
            tokio::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .await
                .unwrap()
        };
        let e = copy(
            stream(vec![Output::Stdout(b"x".repeat(1 << 20))]),
            full().await,
            full().await,
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}
