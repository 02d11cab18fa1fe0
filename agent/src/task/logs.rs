//! Container output -> `stdout.txt` / `stderr.txt` in the task directory.
//!
//! The bytes come from the container's own stream (attached before start, as `docker run`
//! reads it): exactly what the process wrote, whatever the engine's log driver. The
//! engine's log store is read only where that stream could not be (`store`: an agent
//! restart, the engine away, a stream that broke off), and checked against what the files
//! already hold; a file berth cannot know to be whole ends with a line naming the cause
//! ([`Gap`]). Bytes are written as they arrive (constant memory, however long a line),
//! each file up to the node's output limit: past it the rest is dropped and one marker
//! line says so. Both kinds of file are listed in `outputTruncated` ([`truncated`]).
//!
//! A write that fails (a full disk) ends the copy with the error, so the attempt can stop
//! the container instead of running on with its output lost. An error inside the stream
//! ends the copy too ([`Copied::broken`]): the engine's words are never written as output.

mod store;

pub use store::{from_store, gap_line, mark, merge, Gap, Gaps};

use crate::engine::{EngineError, Output};
use crate::node::beneath::{self, Beneath};
use futures_util::{Stream, StreamExt};
use std::io::{Read, Seek};
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

/// Opens the output files as an append does, creating nothing: what the task left in
/// their place (a link, a FIFO, a hard link, nothing) is an error.
pub fn still_output_files(task_dir: &Path) -> std::io::Result<()> {
    let dir = Beneath::open(task_dir)?;
    for n in [STDOUT, STDERR] {
        dir.append(n, None)?;
    }
    Ok(())
}

/// The line written once where a file reached the limit.
pub fn marker(name: &str, limit: u64) -> String {
    format!("\n[berth: {name} reached this node's task output limit of {limit} bytes; the rest was dropped]\n")
}

/// The output files of a task that may not hold every byte its process wrote: those that
/// reached the limit, and those that end with a [`Gap`]'s line. A file longer than the
/// limit holds the limit's marker, and a gap's line is the file's last, so this needs no
/// other record and survives an agent restart.
pub fn truncated(task_dir: &Path, limit: Option<u64>) -> Vec<String> {
    let Ok(dir) = Beneath::open(task_dir) else {
        return vec![];
    };
    [STDOUT, STDERR]
        .into_iter()
        .filter(|n| {
            // Looked at, not followed: a link the task left is no output of its own.
            dir.lstat(n).is_ok_and(|st| {
                beneath::kind(&st) == rustix::fs::FileType::RegularFile
                    && (limit.is_some_and(|l| st.st_size as u64 > l) || ends_with_gap(&dir, n))
            })
        })
        .map(String::from)
        .collect()
}

/// Whether the file's last line is a [`Gap`]'s (see [`store::gap_line`]).
fn ends_with_gap(dir: &Beneath, name: &str) -> bool {
    const TAIL: u64 = 1024;
    let Ok((mut f, st)) = dir.read(name) else {
        return false;
    };
    let len = st.st_size as u64;
    let mut tail = Vec::with_capacity(TAIL as usize);
    if f.seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL)))
        .is_err()
        || f.take(TAIL).read_to_end(&mut tail).is_err()
    {
        return false;
    }
    let Some(body) = tail.strip_suffix(b"]\n") else {
        return false;
    };
    let start = store::gap_start(name);
    body.windows(start.len())
        .rposition(|w| w == start.as_bytes())
        .is_some_and(|at| !body[at + start.len()..].contains(&b'\n'))
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
    /// This sink wrote the marker.
    marked: bool,
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
            marked: false,
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
            self.marked = true;
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
            ..Copied::default()
        };
        for mut s in pair {
            s.file.flush().await?;
            // A file this copy added nothing to has nothing to lose (and a sync of an
            // empty file costs a journal commit for every quiet task).
            if s.len > s.start || s.marked {
                s.file.sync_all().await?;
            }
        }
        Ok(copied)
    }
}

/// What a copy wrote: bytes kept and dropped per file, and how its stream ended.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Copied {
    pub stdout: u64,
    pub stderr: u64,
    pub dropped: u64,
    /// The stream ended with this engine error (what came before it is written): the
    /// files may lack what the process wrote after.
    pub broken: Option<EngineError>,
    /// What reading the log store found, per file ([`from_store`]).
    pub gaps: Gaps,
}

impl Copied {
    /// Adds a later copy into the same files: counts summed, the first error and gaps kept.
    pub fn and(mut self, later: Copied) -> Copied {
        self.stdout += later.stdout;
        self.stderr += later.stderr;
        self.dropped += later.dropped;
        self.broken = self.broken.or(later.broken);
        merge(&mut self.gaps, later.gaps);
        self
    }
}

/// Copies a container's output stream into the files until the stream ends or `stop`
/// (between two writes, so the files hold whole chunks), each file up to `limit` bytes,
/// only the streams `keep` chooses (`[stdout, stderr]`; the other's bytes are dropped).
/// An error is a write that failed (the task's output is lost); a stream that broke off
/// is [`Copied::broken`].
pub async fn copy(
    mut stream: impl Stream<Item = Result<Output, EngineError>> + Unpin,
    (out, err): (tokio::fs::File, tokio::fs::File),
    limit: Option<u64>,
    keep: [bool; 2],
    stop: CancellationToken,
) -> std::io::Result<Copied> {
    let mut sinks = Sink::pair(out, err, limit).await?;
    let broken = loop {
        match next(&mut stream, &stop).await {
            Next::Chunk(i, b) if keep[i] => sinks[i].write(&b).await?,
            Next::Chunk(..) => {}
            Next::Done => break None,
            Next::Broken(e) => break Some(e),
        }
        // Nothing more can be kept: don't read on.
        if (0..2).all(|i| sinks[i].full || !keep[i]) {
            break None;
        }
    };
    Ok(Copied {
        broken,
        ..Sink::close(sinks).await?
    })
}

/// One step of reading an output stream.
enum Next {
    /// A chunk of stdout (`0`) or stderr (`1`).
    Chunk(usize, Vec<u8>),
    /// The stream ended, or `stop` was cancelled.
    Done,
    /// The stream ended with an engine error.
    Broken(EngineError),
}

/// The stream's next chunk, unless `stop` comes first (checked between chunks).
async fn next(
    stream: &mut (impl Stream<Item = Result<Output, EngineError>> + Unpin),
    stop: &CancellationToken,
) -> Next {
    let item = tokio::select! {
        biased;
        _ = stop.cancelled() => return Next::Done,
        item = stream.next() => item,
    };
    match item {
        Some(Ok(Output::Stdout(b))) => Next::Chunk(0, b),
        Some(Ok(Output::Stderr(b))) => Next::Chunk(1, b),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "output stream ended with an error");
            Next::Broken(e)
        }
        None => Next::Done,
    }
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
    async fn each_file_stops_at_the_limit_with_one_marker() {
        let dir = tempfile::tempdir().unwrap();
        let files = open(dir.path(), None).await.unwrap();
        let s = stream(vec![
            Output::Stdout(b"0123456".to_vec()),
            Output::Stderr(b"ab".to_vec()),
            Output::Stdout(b"789abc".to_vec()),
            Output::Stdout(b"more".to_vec()),
            Output::Stderr(b"cd".to_vec()),
        ]);
        let c = copy(s, files, Some(10), [true, true], CancellationToken::new())
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
    }

    #[tokio::test]
    async fn exactly_the_limit_is_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let files = open(dir.path(), None).await.unwrap();
        let c = copy(
            stream(vec![Output::Stdout(b"12345".to_vec())]),
            files,
            Some(5),
            [true, true],
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!((c.stdout, c.dropped), (5, 0));
        assert_eq!(read(dir.path(), STDOUT), "12345");
        assert!(truncated(dir.path(), Some(5)).is_empty());
    }

    /// An engine error inside the stream ends the copy as an error: the bytes before it
    /// are kept, its words are never written.
    #[tokio::test]
    async fn a_stream_error_ends_the_copy_and_is_not_output() {
        let dir = tempfile::tempdir().unwrap();
        let files = open(dir.path(), None).await.unwrap();
        let s = futures_util::stream::iter(vec![
            Ok(Output::Stdout(b"\xff\x00kept".to_vec())),
            Err(EngineError::Stream(
                "Error grabbing logs: unexpected EOF".into(),
            )),
            Ok(Output::Stdout(b"never".to_vec())),
        ]);
        let c = copy(s, files, None, [true, true], CancellationToken::new())
            .await
            .unwrap();
        assert!(matches!(c.broken, Some(EngineError::Stream(_))));
        assert_eq!(
            std::fs::read(dir.path().join(STDOUT)).unwrap(),
            b"\xff\x00kept"
        );
        assert_eq!(read(dir.path(), STDERR), "");
    }

    #[tokio::test]
    async fn only_the_kept_streams_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "old ").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let s = stream(vec![
            Output::Stdout(b"new".to_vec()),
            Output::Stderr(b"not this".to_vec()),
        ]);
        let files = open_append(dir.path()).await.unwrap();
        let c = copy(s, files, None, [true, false], CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((c.stdout, c.stderr), (3, 0));
        assert_eq!(read(dir.path(), STDOUT), "old new");
        assert_eq!(read(dir.path(), STDERR), "");
    }

    /// A gap's line counts only as the file's last line.
    #[test]
    fn a_gap_is_listed_only_where_its_line_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let line = gap_line(STDOUT, Gap::Differs);
        std::fs::write(dir.path().join(STDOUT), format!("out{line}")).unwrap();
        std::fs::write(dir.path().join(STDERR), format!("err{line}more\n")).unwrap();
        assert_eq!(truncated(dir.path(), None), vec![STDOUT.to_string()]);
        let long = "x".repeat(5000);
        std::fs::write(dir.path().join(STDOUT), format!("{long}{line}")).unwrap();
        assert_eq!(
            truncated(dir.path(), Some(1 << 20)),
            vec![STDOUT.to_string()]
        );
        let other = gap_line(STDERR, Gap::Differs);
        std::fs::write(dir.path().join(STDOUT), format!("{long}{other}")).unwrap();
        assert!(
            truncated(dir.path(), None).is_empty(),
            "another file's line"
        );
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
            (full().await, full().await),
            None,
            [true, true],
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}
