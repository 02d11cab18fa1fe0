//! The engine's log store as a second source of a task's output, for the parts berth could
//! not read from the container's own stream: after an agent restart, while the engine was
//! away, or when that stream broke off. The store is what the log driver made of the
//! output: json-file writes bytes that are not UTF-8 as U+FFFD, rotation drops the oldest
//! part, `none` keeps nothing. So [`from_store`] lines it up with what the files already
//! hold, byte for byte, before it appends anything, and says what it could not vouch for
//! ([`Gap`]); [`mark`] ends such a file with a line naming the cause.

use super::{next, Beneath, Copied, Next, Sink, STDERR, STDOUT};
use crate::engine::{EngineError, Output};
use futures_util::Stream;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Why a file may lack bytes its process wrote: berth could not read part of the
/// container's own stream, and the engine's log, the only other copy, could not make up
/// for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The container keeps no log (`--log-driver none`).
    NoStore,
    /// Reading the log failed.
    Unreadable,
    /// The log no longer starts with what the file holds: rotated, or rewritten.
    Differs,
    /// What the log gave back holds U+FFFD, which json-file writes in place of bytes that
    /// are not UTF-8.
    Rewritten,
}

impl Gap {
    fn cause(self) -> &'static str {
        match self {
            Gap::NoStore => "does not exist (--log-driver none)",
            Gap::Unreadable => "could not be read",
            Gap::Differs => "no longer holds the output from its first byte (rotated or rewritten)",
            Gap::Rewritten => {
                "gave back U+FFFD, which a json-file log writes for bytes that are not UTF-8"
            }
        }
    }
}

/// Per file (`[stdout, stderr]`), the first gap found.
pub type Gaps = [Option<Gap>; 2];

/// Adds `more` to `gaps`, keeping the first gap of each file.
pub fn merge(gaps: &mut Gaps, more: Gaps) {
    for (g, m) in gaps.iter_mut().zip(more) {
        *g = g.or(m);
    }
}

/// How a gap's line starts (see [`gap_line`]).
pub(super) fn gap_start(name: &str) -> String {
    format!("\n[berth: {name} may be incomplete: ")
}

/// The line that ends a file with a gap.
pub fn gap_line(name: &str, gap: Gap) -> String {
    format!(
        "{}berth could not read all of the container's own stream, and the engine's log, the only other copy, {}]\n",
        gap_start(name),
        gap.cause()
    )
}

/// Ends each file that has a gap with its line (once the attempt's output is complete:
/// a later read of the store lines up with the file's bytes, which the line is not).
pub fn mark(task_dir: &Path, gaps: &Gaps) {
    for (name, gap) in [STDOUT, STDERR].into_iter().zip(gaps) {
        let Some(gap) = gap else { continue };
        tracing::warn!(file = name, ?gap, "the task's output may be incomplete");
        let written = Beneath::open(task_dir)
            .and_then(|d| d.append(name, None))
            .map_err(std::io::Error::from)
            .and_then(|mut f| std::io::Write::write_all(&mut f, gap_line(name, *gap).as_bytes()));
        if let Err(e) = written {
            tracing::error!(file = name, error = %e, "cannot mark the output file as incomplete");
        }
    }
}

/// One stream of the store being lined up with its file: the file's bytes are compared
/// first, then what follows is appended.
struct Lineup {
    /// The file as it was, read alongside the store; `held` bytes not compared yet.
    file: Option<tokio::fs::File>,
    held: u64,
    /// The last bytes appended, for a U+FFFD split between two chunks.
    tail: Vec<u8>,
    gap: Option<Gap>,
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

impl Lineup {
    /// What of chunk `b` is new to the file (empty while comparing, or once it differs).
    async fn take<'b>(&mut self, b: &'b [u8], buf: &mut Vec<u8>) -> std::io::Result<&'b [u8]> {
        if self.gap == Some(Gap::Differs) {
            return Ok(&[]);
        }
        #[allow(clippy::cast_possible_truncation)]
        let n = self.held.min(b.len() as u64) as usize;
        if n > 0 {
            buf.resize(n, 0);
            let same = match self.file.as_mut() {
                Some(f) => match f.read_exact(buf).await {
                    Ok(_) => buf[..] == b[..n],
                    // The file is shorter than it was: not the bytes the store is held to.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
                    Err(e) => return Err(e),
                },
                None => false,
            };
            if !same {
                self.gap = Some(Gap::Differs);
                self.file = None;
                return Ok(&[]);
            }
            self.held -= n as u64;
        }
        let new = &b[n..];
        if !new.is_empty() {
            let w = REPLACEMENT.len();
            let edge: Vec<u8> = self
                .tail
                .iter()
                .chain(&new[..new.len().min(w - 1)])
                .copied()
                .collect();
            if [&edge[..], new]
                .iter()
                .any(|b| b.windows(w).any(|x| x == REPLACEMENT))
            {
                self.gap = self.gap.or(Some(Gap::Rewritten));
            }
            self.tail
                .extend_from_slice(&new[new.len().saturating_sub(w - 1)..]);
            let extra = self.tail.len().saturating_sub(w - 1);
            self.tail.drain(..extra);
        }
        Ok(new)
    }
}

/// Reads the output again from the engine's log store (`open`, given which of `[stdout,
/// stderr]` to read) for the files `streams` chooses, and appends what it holds beyond
/// them, after checking that the store starts with exactly the bytes each file holds.
/// Returns what was appended and, in [`Copied::gaps`], per file what the store could not
/// vouch for: a stream that does not line up gets nothing more ([`Gap::Differs`]), a read
/// that fails is [`Gap::Unreadable`], U+FFFD in the appended bytes [`Gap::Rewritten`].
/// With `end_at_differ`, the first stream that does not line up ends the read, so that
/// the caller can take that stream from elsewhere. A file already at the limit is not
/// read again (an endless writer's log can be huge). Memory stays flat: the files are
/// compared chunk by chunk.
pub async fn from_store<S>(
    open: impl FnOnce([bool; 2]) -> S,
    task_dir: &Path,
    limit: Option<u64>,
    streams: [bool; 2],
    end_at_differ: bool,
    stop: CancellationToken,
) -> std::io::Result<Copied>
where
    S: Stream<Item = Result<Output, EngineError>> + Unpin,
{
    let dir = Beneath::open(task_dir)?;
    let append = |n| -> std::io::Result<_> { Ok(tokio::fs::File::from_std(dir.append(n, None)?)) };
    let (out, err) = (append(STDOUT)?, append(STDERR)?);
    let mut sinks = Sink::pair(out, err, limit).await?;
    let wanted = [0, 1].map(|i| streams[i] && !sinks[i].full);
    let mut lineups = Vec::with_capacity(2);
    for (i, name) in [STDOUT, STDERR].into_iter().enumerate() {
        let file = match wanted[i] && sinks[i].start > 0 {
            true => Some(tokio::fs::File::from_std(dir.read(name)?.0)),
            false => None,
        };
        lineups.push(Lineup {
            file,
            held: sinks[i].start,
            tail: vec![],
            gap: None,
        });
    }
    let mut broken = None;
    if wanted != [false, false] {
        let mut stream = open(wanted);
        let mut buf = vec![];
        let stopped = loop {
            match next(&mut stream, &stop).await {
                Next::Chunk(i, _) if !wanted[i] => {}
                Next::Chunk(i, b) => {
                    let new = lineups[i].take(&b, &mut buf).await?;
                    sinks[i].write(new).await?;
                }
                Next::Done => break stop.is_cancelled(),
                Next::Broken(e) => {
                    broken = Some(e);
                    break false;
                }
            }
            let differs = |i: usize| lineups[i].gap == Some(Gap::Differs);
            if end_at_differ && (0..2).any(|i| wanted[i] && differs(i)) {
                break true;
            }
            // Nothing more can be kept: don't read on.
            if (0..2).all(|i| !wanted[i] || sinks[i].full || differs(i)) {
                break true;
            }
        };
        for (i, l) in lineups.iter_mut().enumerate() {
            if !wanted[i] || l.gap.is_some() {
                continue;
            }
            if broken.is_some() {
                l.gap = Some(Gap::Unreadable);
            } else if l.held > 0 && !stopped {
                // The store ended before the bytes the file already holds.
                l.gap = Some(Gap::Differs);
            }
        }
    }
    Ok(Copied {
        broken,
        gaps: [lineups[0].gap, lineups[1].gap],
        ..Sink::close(sinks).await?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<Output>) -> impl Stream<Item = Result<Output, EngineError>> + Unpin {
        futures_util::stream::iter(items.into_iter().map(Ok))
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    async fn complete(
        dir: &Path,
        items: Vec<Output>,
        limit: Option<u64>,
    ) -> (Copied, Option<[bool; 2]>) {
        let mut asked = None;
        let open = |which| {
            asked = Some(which);
            stream(items)
        };
        let c = from_store(
            open,
            dir,
            limit,
            [true, true],
            false,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        (c, asked)
    }

    #[tokio::test]
    async fn appends_only_what_the_files_lack_once_the_store_lines_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "line1\nli").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let (added, _) = complete(
            dir.path(),
            vec![
                Output::Stdout(b"line1\n".to_vec()),
                Output::Stderr(b"err\n".to_vec()),
                Output::Stdout(b"line2\nline3\n".to_vec()),
            ],
            None,
        )
        .await;
        assert_eq!((added.stdout, added.stderr, added.dropped), (10, 4, 0));
        assert_eq!(added.gaps, [None, None]);
        assert_eq!(read(dir.path(), STDOUT), b"line1\nline2\nline3\n");
        assert_eq!(read(dir.path(), STDERR), b"err\n");
    }

    /// A rotated store (its start gone) and a rewritten one (U+FFFD for a byte that is
    /// not UTF-8) do not line up: nothing is appended, and the file has a gap.
    #[tokio::test]
    async fn a_store_that_does_not_start_with_the_files_bytes_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), b"caf\xe9\n").unwrap();
        std::fs::write(dir.path().join(STDERR), "one\ntwo\n").unwrap();
        let (added, _) = complete(
            dir.path(),
            vec![
                Output::Stdout("caf\u{FFFD}\nmore\n".into()),
                Output::Stderr(b"two\nthree\n".to_vec()),
            ],
            None,
        )
        .await;
        assert_eq!(added.gaps, [Some(Gap::Differs), Some(Gap::Differs)]);
        assert_eq!((added.stdout, added.stderr), (0, 0));
        assert_eq!(read(dir.path(), STDOUT), b"caf\xe9\n");
        assert_eq!(read(dir.path(), STDERR), b"one\ntwo\n");

        // A store shorter than the file lost its start too.
        let (added, _) = complete(dir.path(), vec![Output::Stderr(b"one\n".to_vec())], None).await;
        assert_eq!(added.gaps[1], Some(Gap::Differs));
    }

    #[tokio::test]
    async fn what_the_store_adds_with_u_fffd_may_be_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "a").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        // Split between two chunks, as a store's records may split it.
        let r = "\u{FFFD}".as_bytes();
        let (added, _) = complete(
            dir.path(),
            vec![
                Output::Stdout([b"ab", &r[..1]].concat()),
                Output::Stdout([&r[1..], b"c"].concat()),
                Output::Stderr(b"fine".to_vec()),
            ],
            None,
        )
        .await;
        assert_eq!(added.gaps, [Some(Gap::Rewritten), None]);
        assert_eq!(
            read(dir.path(), STDOUT),
            [b"ab", r, b"c"].concat(),
            "kept as read"
        );
    }

    #[tokio::test]
    async fn a_store_that_fails_leaves_a_gap_and_no_engine_words() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "x").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let s = futures_util::stream::iter(vec![
            Ok(Output::Stdout(b"xy".to_vec())),
            Err(EngineError::Stream("Error grabbing logs: EOF".into())),
        ]);
        let c = from_store(
            |_| s,
            dir.path(),
            None,
            [true, true],
            false,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(c.broken.is_some());
        assert_eq!(c.gaps, [Some(Gap::Unreadable), Some(Gap::Unreadable)]);
        mark(dir.path(), &c.gaps);
        let out = String::from_utf8(read(dir.path(), STDOUT)).unwrap();
        assert_eq!(out, format!("xy{}", gap_line(STDOUT, Gap::Unreadable)));
        assert!(!out.contains("grabbing"));
        assert_eq!(
            super::super::truncated(dir.path(), None),
            vec![STDOUT.to_string(), STDERR.to_string()]
        );
    }

    /// The limit holds as for the live stream; a file at it is not read again.
    #[tokio::test]
    async fn each_file_stops_at_the_limit_and_a_full_one_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let full = format!("0123456789{}", super::super::marker(STDOUT, 10));
        std::fs::write(dir.path().join(STDOUT), &full).unwrap();
        std::fs::write(dir.path().join(STDERR), "abcd").unwrap();
        let (c, asked) = complete(
            dir.path(),
            vec![Output::Stderr(b"abcd0123456789".to_vec())],
            Some(10),
        )
        .await;
        assert_eq!(
            asked,
            Some([false, true]),
            "the full stdout is not read again"
        );
        assert_eq!((c.stdout, c.stderr, c.dropped), (0, 6, 4));
        assert_eq!(
            read(dir.path(), STDOUT),
            full.as_bytes(),
            "no second marker"
        );
        assert_eq!(
            read(dir.path(), STDERR),
            format!("abcd012345{}", super::super::marker(STDERR, 10)).as_bytes()
        );
        assert_eq!(c.gaps, [None, None]);
    }

    #[tokio::test]
    async fn end_at_differ_hands_the_stream_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STDOUT), "old").unwrap();
        std::fs::write(dir.path().join(STDERR), "").unwrap();
        let s = stream(vec![
            Output::Stdout(b"new".to_vec()),
            Output::Stderr(b"never read".to_vec()),
        ]);
        let c = from_store(
            |_| s,
            dir.path(),
            None,
            [true, true],
            true,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(c.gaps, [Some(Gap::Differs), None]);
        assert_eq!(
            read(dir.path(), STDERR),
            b"",
            "the read ended at the difference"
        );
    }
}
