//! `outputFiles` to blob containers after the task's last attempt: each pattern whose
//! `uploadCondition` holds is expanded, matched (see [`super::pattern`]) and every file
//! uploaded, small ones with one Put Blob, large ones in blocks sent concurrently and
//! committed with Put Block List. What happens goes to `fileuploadout.txt`, failures to
//! `fileuploaderr.txt`, both in the task directory and only when an upload was attempted.

use super::blob::{blob_url, block_id, block_list_header, block_list_xml, HttpFailure};
use super::pattern;
use super::resources::retry;
use super::{FileError, Transfers};
use crate::node::Beneath;
use berth_proto::common::redact_url;
use berth_proto::{FailureCode, OutputFile};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One file to send.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Relative to the directory [`upload_file`] is given (the task directory).
    pub file: PathBuf,
    /// The blob's URL, SAS included.
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// What the upload step did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Uploaded {
    pub files: usize,
    pub bytes: u64,
}

/// Where the task's files are and what its environment is (for `$VAR` in patterns).
pub struct TaskFiles<'a> {
    pub wd: &'a Path,
    pub task_dir: &'a Path,
    pub env: &'a [(String, String)],
}

/// Headers berth sets itself; the same names in `uploadHeaders` are ignored.
const OWN_HEADERS: &[&str] = &["x-ms-blob-type", "x-ms-version", "content-length"];

/// Uploads the outputs whose condition holds for a task that ended with `success`.
/// Returns `Ok(None)` when no condition held (nothing attempted, no log files).
pub async fn upload(
    t: &Transfers,
    outputs: &[OutputFile],
    task: &TaskFiles<'_>,
    success: bool,
) -> Result<Option<Uploaded>, FileError> {
    let chosen: Vec<&OutputFile> = outputs
        .iter()
        .filter(|o| o.upload_options.upload_condition.holds(success))
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    // Everything below the task directory is the task's: every file is reached through
    // this handle, without following links (`crate::node::beneath`).
    let dir = Beneath::open(task.task_dir)
        .map_err(|e| FileError::beneath(FailureCode::FileUploadMiscError, e))?;
    let mut log = Log::open(&dir)?;
    let mut uploads = Vec::new();
    let mut first_error: Option<FileError> = None;
    for o in chosen {
        match matches(o, task, &dir) {
            Ok(list) if list.is_empty() => log.out(&format!(
                "{}: no file matched; nothing uploaded",
                o.file_pattern
            )),
            Ok(list) => uploads.extend(list),
            Err(e) => {
                log.err(&e.details());
                first_error.get_or_insert(e);
            }
        }
    }
    let results: Vec<(Upload, Result<u64, FileError>)> =
        futures_util::stream::iter(uploads.into_iter().map(|u| {
            let dir = &dir;
            async move {
                let r = upload_file(t, &u, dir).await;
                (u, r)
            }
        }))
        .buffer_unordered(t.limits.file_concurrency.max(1))
        .collect()
        .await;
    let mut done = Uploaded::default();
    for (u, r) in results {
        match r {
            Ok(n) => {
                done.files += 1;
                done.bytes += n;
                log.out(&format!(
                    "uploaded {} ({n} bytes) to {}",
                    u.file.display(),
                    redact_url(&u.url)
                ));
            }
            Err(e) => {
                log.err(&format!("{}: {}", u.file.display(), e.details()));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Some(done)),
    }
}

/// The uploads one output file stands for; `dir` is the task directory.
fn matches(o: &OutputFile, task: &TaskFiles<'_>, dir: &Beneath) -> Result<Vec<Upload>, FileError> {
    let misc = |m: String| FileError::new(FailureCode::FileUploadMiscError, m);
    let Some(dest) = &o.destination.container else {
        return Err(misc(format!(
            "{}: no destination container",
            o.file_pattern
        )));
    };
    let expanded = pattern::expand_env(&o.file_pattern, task.env);
    let resolved = pattern::resolve(&expanded, task.wd, task.task_dir)
        .map_err(|e| misc(format!("filePattern {e}")))?;
    let headers: Vec<(String, String)> = dest
        .upload_headers
        .iter()
        .filter(|h| !OWN_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()))
        .map(|h| (h.name.clone(), h.value.clone().unwrap_or_default()))
        .collect();
    // `resolve` kept the base inside the task directory.
    let base = resolved
        .base
        .strip_prefix(task.task_dir)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let found: Vec<(PathBuf, String)> = match &resolved.glob {
        // One file: a regular one, not followed (the upload checks it again on the
        // descriptor it reads).
        None => {
            let regular = dir.lstat(&base).is_ok_and(|st| {
                crate::node::beneath::kind(&st) == rustix::fs::FileType::RegularFile
            });
            match base.file_name() {
                Some(n) if regular => vec![(base.clone(), n.to_string_lossy().into_owned())],
                _ => vec![],
            }
        }
        Some(g) => {
            // A base that is missing, or a link the task planted (`wd/out -> /etc`), has
            // no files.
            let start = if base.as_os_str().is_empty() {
                dir.dir_again()
            } else {
                dir.dir(&base)
            };
            match start {
                Ok(b) => pattern::find(&b, g)
                    .map_err(misc)?
                    .into_iter()
                    .map(|rel| (base.join(&rel), rel))
                    .collect(),
                Err(_) => vec![],
            }
        }
    };
    let literal = resolved.glob.is_none();
    Ok(found
        .into_iter()
        .map(|(file, rel)| Upload {
            url: blob_url(
                dest.container_url.expose(),
                &pattern::blob_name(dest.path.as_deref(), literal, &rel),
            ),
            file,
            headers: headers.clone(),
        })
        .collect())
}

fn upload_error(f: &HttpFailure, url: &str) -> FileError {
    FileError::new(
        f.code(&super::blob::UPLOAD),
        format!("uploading to {}", f.describe(url)),
    )
}

/// Sends one file, `u.file` beneath `dir`: opened once without following links, checked
/// on that descriptor (a regular file with one name) and read from it. Returns its size.
pub async fn upload_file(t: &Transfers, u: &Upload, dir: &Beneath) -> Result<u64, FileError> {
    let local = |e: std::io::Error| {
        FileError::caused(
            FailureCode::FileUploadMiscError,
            format!("reading {}", u.file.display()),
            e,
        )
    };
    let (file, st) = dir
        .read(&u.file)
        .map_err(|e| FileError::beneath(FailureCode::FileUploadMiscError, e))?;
    let file = std::sync::Arc::new(file);
    let size = st.st_size as u64;
    let block = block_size(size, t.limits.block_size as u64);
    if size <= t.limits.block_size as u64 {
        let body = read_at(&file, 0, size as usize).await.map_err(local)?;
        let mut headers = vec![("x-ms-blob-type".to_string(), "BlockBlob".to_string())];
        headers.extend(u.headers.iter().cloned());
        retry(t, || t.http.put(&u.url, &headers, body.clone()))
            .await
            .map_err(|f| upload_error(&f, &u.url))?;
        return Ok(size);
    }
    let count = size.div_ceil(block) as usize;
    let mut sent = futures_util::stream::iter((0..count).map(|i| {
        let file = file.clone();
        async move {
            let offset = i as u64 * block;
            let len = block.min(size - offset) as usize;
            let body = read_at(&file, offset, len).await.map_err(local)?;
            let url = super::blob::with_query(
                &u.url,
                &format!(
                    "comp=block&blockid={}",
                    super::blob::encode_query(&block_id(i))
                ),
            );
            retry(t, || t.http.put(&url, &[], body.clone()))
                .await
                .map_err(|f| upload_error(&f, &u.url))
        }
    }))
    .buffer_unordered(t.limits.block_concurrency.max(1));
    while let Some(r) = sent.next().await {
        r?;
    }
    let mut headers = vec![("content-type".to_string(), "application/xml".to_string())];
    headers.extend(
        u.headers
            .iter()
            .map(|(k, v)| (block_list_header(k), v.clone())),
    );
    let body = Bytes::from(block_list_xml(count));
    let url = super::blob::with_query(&u.url, "comp=blocklist");
    retry(t, || t.http.put(&url, &headers, body.clone()))
        .await
        .map_err(|f| upload_error(&f, &u.url))?;
    Ok(size)
}

/// The block size for a file: the configured one, larger when the file would need more
/// than the service's 50,000 blocks.
pub fn block_size(size: u64, configured: u64) -> u64 {
    const MAX_BLOCKS: u64 = 50_000;
    let needed = size.div_ceil(MAX_BLOCKS).next_multiple_of(1 << 20);
    configured.max(needed).max(1)
}

async fn read_at(
    file: &std::sync::Arc<std::fs::File>,
    offset: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `fileuploadout.txt` and `fileuploaderr.txt`.
struct Log {
    out: std::fs::File,
    err: std::fs::File,
}

impl Log {
    fn open(dir: &Beneath) -> Result<Log, FileError> {
        let open = |name: &str| {
            dir.append(name, Some(0o644))
                .map_err(|e| FileError::beneath(FailureCode::FileUploadMiscError, e))
        };
        Ok(Log {
            out: open("fileuploadout.txt")?,
            err: open("fileuploaderr.txt")?,
        })
    }

    fn line(f: &mut std::fs::File, s: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        // The log is best effort: a full disk must not hide the upload's own result.
        if let Err(e) = writeln!(f, "{now} {s}") {
            tracing::warn!(error = %e, "cannot write the upload log");
        }
    }

    fn out(&mut self, s: &str) {
        Self::line(&mut self.out, s);
    }

    fn err(&mut self, s: &str) {
        Self::line(&mut self.err, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(block_size(10, 4 << 20), 4 << 20);
        assert_eq!(block_size(512 << 20, 4 << 20), 4 << 20);
        // 400 GiB would need 102,400 blocks of 4 MiB.
        let b = block_size(400 << 30, 4 << 20);
        assert!((400u64 << 30).div_ceil(b) <= 50_000);
        assert_eq!(b % (1 << 20), 0);
    }
}
