//! `resourceFiles` into the task's working directory, before its first attempt: container
//! URLs listed (with `blobPrefix`), every file streamed to disk through one fixed buffer,
//! a bounded number at once, transient errors retried, files and directories given to the
//! task's user with `fileMode`. Nothing is written outside `wd`: paths were checked at
//! validation, blob names are checked here, and every directory and file is made beneath
//! `wd`'s handle without following a link ([`crate::node::beneath`]); mode and owner are
//! set through the opened descriptors.

use super::blob::{backoff, HttpFailure, DOWNLOAD, LIST};
use super::{FileError, Owner, Transfers};
use crate::node::beneath::{self, Beneath, BeneathError};
use berth_proto::common::redact_url;
use berth_proto::{FailureCode, ResourceFile};
use futures_util::{StreamExt, TryStreamExt};
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// One file to fetch: the whole URL (with its SAS), where it goes below `wd`, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub url: String,
    pub dest: String,
    pub mode: u32,
}

/// What a finished download step did, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Downloaded {
    pub files: usize,
    pub bytes: u64,
}

/// One range's memory, whatever the file's size (`block_concurrency` ranges per file).
const WRITE_BUFFER: usize = 256 << 10;

/// Downloads every resource file into `wd`. The first failure stops the others and is
/// returned; cancellation stops them all.
pub async fn download(
    t: &Transfers,
    files: &[ResourceFile],
    wd: &Beneath,
    owner: Option<Owner>,
    cancel: &CancellationToken,
) -> Result<Downloaded, FileError> {
    let work = async {
        let mut list = Vec::new();
        for f in files {
            list.extend(expand(t, f).await?);
        }
        let count = list.len();
        let total = std::sync::atomic::AtomicU64::new(0);
        futures_util::stream::iter(list.into_iter().map(Ok))
            .try_for_each_concurrent(t.limits.file_concurrency.max(1), |d| {
                let total = &total;
                async move {
                    let n = fetch(t, &d, wd, owner).await?;
                    total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            })
            .await?;
        Ok(Downloaded {
            files: count,
            bytes: total.into_inner(),
        })
    };
    tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(FileError::new(
            FailureCode::TaskEnded,
            "stopped while downloading resource files",
        )),
    }
}

/// One resource file as the files it stands for: itself, or every blob the container
/// lists under the prefix.
pub async fn expand(t: &Transfers, f: &ResourceFile) -> Result<Vec<Download>, FileError> {
    let mode = f.mode();
    if let Some(u) = &f.http_url {
        return Ok(vec![Download {
            url: u.expose().to_string(),
            dest: f.file_path.clone().unwrap_or_default(),
            mode,
        }]);
    }
    let Some(c) = &f.storage_container_url else {
        return Ok(Vec::new());
    };
    let names = list_all(t, c.expose(), f.blob_prefix.as_deref()).await?;
    let dir = f
        .file_path
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    let mut out = Vec::new();
    for name in names {
        // Folder markers (hierarchical namespaces) are not files.
        if name.ends_with('/') {
            continue;
        }
        if let Err(e) = berth_proto::files::contained_path(&name) {
            return Err(FileError::new(
                FailureCode::ResourceFileCreateFailed,
                format!("blob name {e} (container {})", redact_url(c.expose())),
            ));
        }
        let dest = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        out.push(Download {
            url: super::blob::blob_url(c.expose(), &name),
            dest,
            mode,
        });
    }
    Ok(out)
}

async fn list_all(
    t: &Transfers,
    container: &str,
    prefix: Option<&str>,
) -> Result<Vec<String>, FileError> {
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = retry(t, || t.http.list_page(container, prefix, marker.as_deref()))
            .await
            .map_err(|f| {
                FileError::new(f.code(&LIST), format!("listing {}", f.describe(container)))
            })?;
        names.extend(page.0);
        match page.1 {
            Some(m) => marker = Some(m),
            None => return Ok(names),
        }
    }
}

/// Runs `op` up to `attempts` times while it fails transiently.
pub(crate) async fn retry<T, F, Fut>(t: &Transfers, mut op: F) -> Result<T, HttpFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, HttpFailure>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(f) if f.transient() && attempt + 1 < t.limits.attempts => {
                tracing::warn!(attempt = attempt + 1, "transfer failed, retrying: {f:?}");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Why one try of a download failed.
enum Step {
    /// Worth trying the whole download again when transient.
    Http(HttpFailure),
    /// A range that already had its own tries.
    Final(HttpFailure),
    Create(BeneathError),
    Write(std::io::Error),
}

/// One ranged GET. The first GET asks for the first range; a larger blob's other ranges
/// are fetched `block_concurrency` at once, each written at its offset and retried on its
/// own. One stream per blob is what limits a download from Azure, and on loopback it
/// left berth at 0.78x curl (`--bench transfer`).
const RANGE: u64 = 8 << 20;

async fn fetch(
    t: &Transfers,
    d: &Download,
    wd: &Beneath,
    owner: Option<Owner>,
) -> Result<u64, FileError> {
    let (dir, name) = make_parents(wd, &d.dest, owner)?;
    let dest = dir.path().join(&name);
    let began = std::time::Instant::now();
    let mut attempt = 0;
    let failed = |f: HttpFailure| {
        FileError::new(
            f.code(&DOWNLOAD),
            format!("downloading {} to {}", f.describe(&d.url), d.dest),
        )
    };
    let (n, file) = loop {
        match fetch_once(t, &d.url, &dir, &name).await {
            Ok(done) => break done,
            Err(Step::Http(f)) if f.transient() && attempt + 1 < t.limits.attempts => {
                tracing::warn!(url = %redact_url(&d.url), attempt = attempt + 1, "download failed, retrying: {f:?}");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(Step::Http(f) | Step::Final(f)) => return Err(failed(f)),
            Err(Step::Create(e)) => {
                return Err(beneath_error(FailureCode::ResourceFileCreateFailed, e))
            }
            Err(Step::Write(e)) => {
                return Err(io_error(FailureCode::ResourceFileWriteFailed, &dest, e))
            }
        }
    };
    give(&file, d.mode, owner)
        .map_err(|e| io_error(FailureCode::ResourceFileCreateFailed, &dest, e))?;
    let secs = began.elapsed().as_secs_f64();
    tracing::info!(
        url = %redact_url(&d.url),
        file = %d.dest,
        bytes = n,
        mb_per_s = format!("{:.1}", n as f64 / 1e6 / secs.max(1e-6)),
        "resource file downloaded"
    );
    Ok(n)
}

/// Gives a downloaded file the task's user, then its `fileMode`, through its descriptor.
/// In that order: a mode with set-user-ID (`4755`) set first would make the task's bytes a
/// root-owned set-user-ID program until the chown (which then clears the bit), and another
/// process of the task's user could run it as root in that moment.
fn give(file: &std::fs::File, mode: u32, owner: Option<Owner>) -> std::io::Result<()> {
    Owner::apply(owner, file)?;
    beneath::fchmod(file, mode)
}

/// One try: the file (created or emptied beneath `dir`, never through a link) and its size.
async fn fetch_once(
    t: &Transfers,
    url: &str,
    dir: &Beneath,
    name: &str,
) -> Result<(u64, std::fs::File), Step> {
    let first = match t.http.get_range(url, 0, RANGE, None).await {
        Ok(r) => r,
        // An empty blob has no first byte to ask for.
        Err(HttpFailure::Status { status: 416, .. }) => {
            t.http.get(url).await.map_err(Step::Http)?
        }
        Err(f) => return Err(Step::Http(f)),
    };
    let file = dir.create(name, 0o600).map_err(Step::Create)?;
    if first.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        // The server ignored the range (any web server may): the whole body, in order.
        let n = write_body(first, &file, 0, None).await?;
        return Ok((n, file));
    }
    let Some(total) = super::blob::range_total(&first) else {
        return Err(Step::Http(HttpFailure::Transport(
            "a partial answer without the blob's size (Content-Range)".into(),
        )));
    };
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    file.set_len(total).map_err(Step::Write)?;
    let first = std::sync::Mutex::new(Some(first));
    let ranges = (0..total.div_ceil(RANGE)).map(|i| (i * RANGE, ((i + 1) * RANGE).min(total)));
    futures_util::stream::iter(ranges.map(Ok))
        .try_for_each_concurrent(t.limits.block_concurrency.max(1), |(start, end)| {
            let initial = if start == 0 {
                first.lock().ok().and_then(|mut f| f.take())
            } else {
                None
            };
            fetch_range(t, url, etag.as_deref(), &file, start, end, initial)
        })
        .await?;
    Ok((total, file))
}

/// Bytes `start..end` of the blob into `file`, retried on their own while transient.
async fn fetch_range(
    t: &Transfers,
    url: &str,
    etag: Option<&str>,
    file: &std::fs::File,
    start: u64,
    end: u64,
    mut initial: Option<reqwest::Response>,
) -> Result<(), Step> {
    let mut attempt = 0;
    loop {
        let answer = match initial.take() {
            Some(r) => Ok(r),
            None => t.http.get_range(url, start, end, etag).await,
        };
        let r = match answer {
            Ok(r) => write_body(r, file, start, Some(end - start)).await,
            Err(f) => Err(Step::Http(f)),
        };
        match r {
            Ok(_) => return Ok(()),
            Err(Step::Http(f)) if f.transient() && attempt + 1 < t.limits.attempts => {
                tracing::warn!(url = %redact_url(url), start, attempt = attempt + 1, "range failed, retrying: {f:?}");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(Step::Http(f)) => return Err(Step::Final(f)),
            Err(e) => return Err(e),
        }
    }
}

/// Streams a response body into `file` at `offset` through one fixed buffer; `expect` is
/// the length a range must have.
async fn write_body(
    response: reqwest::Response,
    file: &std::fs::File,
    offset: u64,
    expect: Option<u64>,
) -> Result<u64, Step> {
    use std::os::unix::fs::FileExt;
    // Writes go to the page cache from this task: handing each chunk (tens of KiB) to
    // another thread cost more than the write (`--bench transfer`: 0.72x curl against
    // 0.89x). Only a write that flushes the buffer can block (dirty-page throttling), so
    // that one tells the runtime to move other tasks off this thread.
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    let mut written = offset;
    let mut flush = |buf: &mut Vec<u8>| -> Result<(), Step> {
        let w = || file.write_all_at(buf, written);
        if multi_thread {
            tokio::task::block_in_place(w)
        } else {
            w()
        }
        .map_err(Step::Write)?;
        written += buf.len() as u64;
        buf.clear();
        Ok(())
    };
    let mut body = response.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Step::Http(if e.is_timeout() {
                HttpFailure::Timeout
            } else {
                HttpFailure::Transport(format!("reading the body: {}", e.without_url()))
            })
        })?;
        n += chunk.len() as u64;
        if expect.is_some_and(|x| n > x) {
            return Err(Step::Http(HttpFailure::Transport(format!(
                "the server sent more than the {} bytes asked for",
                expect.unwrap_or_default()
            ))));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= WRITE_BUFFER {
            flush(&mut buf)?;
        }
    }
    flush(&mut buf)?;
    if let Some(x) = expect.filter(|x| n < *x) {
        return Err(Step::Http(HttpFailure::Transport(format!(
            "the answer ended after {n} of {x} bytes"
        ))));
    }
    // No fsync: the task reads the file through the page cache, and a crash before it
    // starts means downloading again anyway.
    Ok(n)
}

fn io_error(code: FailureCode, p: &Path, e: std::io::Error) -> FileError {
    // A full disk has its own code, whatever step hit it.
    let code = if e.raw_os_error() == Some(libc::ENOSPC) {
        FailureCode::DiskFull
    } else {
        code
    };
    FileError::caused(code, p.display().to_string(), e)
}

/// A filesystem failure as a task failure: a full disk has its own code; what the task
/// planted (a link, a FIFO) is named as found and is the task's fault (`TaskFileRefused`).
pub fn beneath_error(code: FailureCode, e: BeneathError) -> FileError {
    match e {
        BeneathError::Io { path, source } => io_error(code, &path, source),
        refused => FileError::new(FailureCode::TaskFileRefused, refused.to_string()),
    }
}

/// Makes the directories between `wd` and `rel`'s file, owned by the task's user, and
/// returns the last one with the file's name. An existing link on the way is refused,
/// never followed.
pub fn make_parents(
    wd: &Beneath,
    rel: &str,
    owner: Option<Owner>,
) -> Result<(Beneath, String), FileError> {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Err(FileError::new(
            FailureCode::ResourceFileCreateFailed,
            format!("{rel:?} names no file"),
        ));
    };
    let failed = |e| beneath_error(FailureCode::ResourceDirectoryCreateFailed, e);
    let mut cur: Option<Beneath> = None;
    for d in dirs {
        let at = cur.as_ref().unwrap_or(wd);
        let (next, made) = at.make_dir(d, 0o775).map_err(failed)?;
        if made {
            next.chmod(0o775).map_err(failed)?;
            Owner::apply(owner, next.fd()).map_err(|e| {
                io_error(FailureCode::ResourceDirectoryCreateFailed, next.path(), e)
            })?;
        }
        cur = Some(next);
    }
    let dir = match cur {
        Some(d) => d,
        None => wd.dir_again().map_err(failed)?,
    };
    Ok((dir, file.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_made_and_links_refused() {
        let d = tempfile::tempdir().unwrap();
        let wd = Beneath::open(d.path()).unwrap();
        let (dir, name) = make_parents(&wd, "a/./b/c.txt", None).unwrap();
        assert_eq!(
            (dir.path(), name.as_str()),
            (d.path().join("a/b").as_path(), "c.txt")
        );
        assert!(d.path().join("a/b").is_dir());
        std::os::unix::fs::symlink("/etc", d.path().join("evil")).unwrap();
        let e = make_parents(&wd, "evil/x", None).unwrap_err();
        // What the task planted is its own fault (a user error), not the node's.
        assert_eq!(e.code, FailureCode::TaskFileRefused);
        assert!(e.message.contains("symbolic link"), "{}", e.message);
        std::fs::write(d.path().join("plain"), "").unwrap();
        assert!(make_parents(&wd, "plain/x", None).is_err());
        assert!(make_parents(&wd, "", None).is_err());
    }

    /// A `fileMode` with set-user-ID (`4755`) never makes a root-owned set-user-ID file of
    /// the task's bytes, not even for a moment: the file is the task's user's before its
    /// mode is set, so the bit is set on the user's own file and kept.
    #[test]
    fn a_setuid_file_mode_is_set_on_the_users_file() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let wd = Beneath::open(d.path()).unwrap();
        let f = wd.create("tool", 0o600).unwrap();
        let owner = Owner {
            uid: 65534,
            gid: 65534,
        };
        give(&f, 0o4755, Some(owner)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(d.path().join("tool")).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534));
        // chown clears set-user-ID: kept only when it came after the chown.
        assert_eq!(md.mode() & 0o7777, 0o4755, "mode {:o}", md.mode() & 0o7777);
    }

    #[test]
    fn full_disk_has_its_own_code() {
        let e = io_error(
            FailureCode::ResourceFileWriteFailed,
            Path::new("/x"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.code, FailureCode::DiskFull);
    }
}
