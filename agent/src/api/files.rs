//! Task files: list the task directory, read one file. The task can change its directory
//! while berth reads it, so nothing is checked by name and then opened again: a file is
//! opened once beneath the task directory without following any link
//! ([`crate::node::beneath`]), then checked and read through that descriptor; listings walk
//! descriptors the same way. No `..`, no absolute paths, no links.

use super::entity::{base_url, seg};
use super::find_job;
use super::{ApiError, AppState, Pairs};
use crate::node::beneath::{self, Beneath, BeneathError, Found};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use std::path::{Component, PathBuf};

fn task_dir(s: &AppState, job: &str, task: &str) -> Result<PathBuf, ApiError> {
    let j = find_job(s, job)?;
    let t = s.store.task(job, task)?.ok_or_else(|| {
        ApiError::TaskNotFound(format!("The specified task {task:?} does not exist."))
    })?;
    Ok(s.rt.node.layout.task_dir(&j.spec.id, &t.view.spec.id))
}

/// `rel` as a path relative to the task directory, refusing anything that could leave it
/// lexically; links are refused when it is opened.
pub fn relative(rel: &str) -> Result<&std::path::Path, ApiError> {
    let p = std::path::Path::new(rel);
    if rel.is_empty()
        || rel.contains('\0')
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(ApiError::InvalidPropertyValue(format!(
            "file path {rel:?} must be relative and stay inside the task directory"
        )));
    }
    Ok(p)
}

/// The node directories Batch's node files show (`startup`, `shared`, `workitems`,
/// `applications`); berth's own state (`berth/`) and the rest are never served.
const NODE_DIRS: &[&str] = &["startup", "shared", "workitems", "applications"];

/// The node root, when `pool` and `node` name this node.
fn node_root(s: &AppState, pool: &str, node: &str) -> Result<PathBuf, ApiError> {
    let n = &s.rt.node;
    if !pool.eq_ignore_ascii_case(&n.pool_id) || !node.eq_ignore_ascii_case(&n.node_id) {
        return Err(ApiError::NodeNotFound(format!(
            "The specified node {node:?} of pool {pool:?} is not this node."
        )));
    }
    Ok(n.layout.root().to_path_buf())
}

/// A time of `stat`, as seconds and nanoseconds.
fn time(secs: i64, nanos: impl TryInto<u32>) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(secs, nanos.try_into().unwrap_or(0))
}

/// The URL of file `name` (slashes kept) under `files` (the task's or the node's files
/// path).
fn file_url(h: &HeaderMap, files: &str, name: &str) -> String {
    let path: Vec<String> = name.split('/').map(seg).collect();
    format!("{}{files}/{}", base_url(h), path.join("/"))
}

fn task_files(job: &str, task: &str) -> String {
    format!("/jobs/{}/tasks/{}/files", seg(job), seg(task))
}

fn node_files(pool: &str, node: &str) -> String {
    format!("/pools/{}/nodes/{}/files", seg(pool), seg(node))
}

/// `GET .../files[?recursive=true]`: a Batch list (`$filter`, `maxresults`,
/// `odata.nextLink`), by name. `creationTime` is the inode's change time: Linux keeps no
/// creation time that every file system reports.
pub async fn list(
    State(s): State<AppState>,
    Path((job, task)): Path<(String, String)>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dir = task_dir(&s, &job, &task)?;
    page(&dir, None, &task_files(&job, &task), &h, q)
}

/// Batch's node files list: the node directories in [`NODE_DIRS`], as a Batch list.
pub async fn node_list(
    State(s): State<AppState>,
    Path((pool, node)): Path<(String, String)>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dir = node_root(&s, &pool, &node)?;
    page(&dir, Some(NODE_DIRS), &node_files(&pool, &node), &h, q)
}

/// The entries beneath `dir` (all levels with `recursive=true`; at the top only those
/// named in `top`, when given), by name, as one page of a Batch list at `files`.
fn page(
    dir: &std::path::Path,
    top: Option<&[&str]>,
    files: &str,
    h: &HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let recursive = q
        .iter()
        .any(|(k, v)| k == "recursive" && v.eq_ignore_ascii_case("true"));
    let query = super::list::ListQuery::parse(q.0, &berth_proto::odata::FILES)?;
    let mut out = vec![];
    // No directory yet (the task has not started): nothing to list.
    let mut stack: Vec<(Beneath, String)> = Beneath::open(dir)
        .map(|d| vec![(d, String::new())])
        .unwrap_or_default();
    while let Some((d, prefix)) = stack.pop() {
        let Ok(entries) = d.entries() else {
            continue;
        };
        for e in entries {
            let shown = e
                .name
                .to_str()
                .is_some_and(|n| top.is_none_or(|t| t.contains(&n)));
            if prefix.is_empty() && !shown {
                continue;
            }
            let name = format!("{prefix}{}", e.name.to_string_lossy());
            let st = &e.stat;
            let is_dir = beneath::kind(st) == rustix::fs::FileType::Directory;
            out.push(serde_json::json!({
                "name": name,
                "url": file_url(h, files, &name),
                "isDirectory": is_dir,
                "properties": {
                    "creationTime": time(st.st_ctime, st.st_ctime_nsec),
                    "lastModified": time(st.st_mtime, st.st_mtime_nsec),
                    "contentLength": st.st_size,
                    "contentType": "application/octet-stream",
                    "fileMode": format!("{:o}", st.st_mode & 0o7777),
                }
            }));
            if is_dir && recursive {
                if let Ok(sub) = d.dir(&e.name) {
                    stack.push((sub, format!("{name}/")));
                }
            }
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let items = out
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            (i64::try_from(i).unwrap_or(i64::MAX), name, e)
        })
        .collect();
    Ok(Json(query.page(items, h, files, "files")))
}

/// Batch's `ocp-range: bytes=START-[END]` (END inclusive): where to begin and how much.
fn range(h: &HeaderMap, len: u64) -> Result<(u64, u64), ApiError> {
    let Some(v) = h.get("ocp-range") else {
        return Ok((0, len));
    };
    let bad = || {
        ApiError::InvalidHeaderValue(format!(
            "ocp-range {v:?}: use bytes=START- or bytes=START-END"
        ))
    };
    let spec = v.to_str().map_err(|_| bad())?.trim();
    let (a, b) = spec
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = match b.trim() {
        "" => len,
        e => e
            .parse::<u64>()
            .map_err(|_| bad())?
            .saturating_add(1)
            .min(len),
    };
    let start = start.min(len);
    Ok((start, end.saturating_sub(start)))
}

pub async fn get(
    State(s): State<AppState>,
    Path((job, task, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = task_dir(&s, &job, &task)?;
    serve(&dir, &path, &headers, &task_files(&job, &task)).await
}

/// Batch's node file read, beneath one of [`NODE_DIRS`].
pub async fn node_get(
    State(s): State<AppState>,
    Path((pool, node, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = node_root(&s, &pool, &node)?;
    let top = path.split('/').next().unwrap_or("");
    if !NODE_DIRS.contains(&top) {
        return Err(ApiError::FileNotFound(format!(
            "The specified file {path:?} does not exist."
        )));
    }
    serve(&dir, &path, &headers, &node_files(&pool, &node)).await
}

/// Reads `path` beneath `dir` from the `ocp-range` asked for, with Batch's file
/// properties as headers (`files`: the list path its URL is under).
async fn serve(
    dir: &std::path::Path,
    path: &str,
    headers: &HeaderMap,
    files: &str,
) -> Result<Response, ApiError> {
    let rel = relative(path)?;
    let not_found =
        || ApiError::FileNotFound(format!("The specified file {path:?} does not exist."));
    let opened = match Beneath::open(dir) {
        Ok(d) => d.read(rel),
        Err(e) => Err(e),
    };
    let (f, st) = match opened {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Err(not_found()),
        Err(BeneathError::Refused {
            found: Found::Directory,
            ..
        }) => {
            return Err(ApiError::InvalidPropertyValue(format!("{path:?} is a directory"),
            ))
        }
        Err(BeneathError::Refused { found, .. }) => {
            return Err(ApiError::InvalidPropertyValue(format!("{path:?} {found}: only regular files with one name are served from a task directory"),
            ))
        }
        Err(e @ BeneathError::Io { .. }) => return Err(ApiError::internal(e)),
    };
    let f = tokio::fs::File::from_std(f);
    let md_len = u64::try_from(st.st_size).unwrap_or(0);
    let (start, len) = range(headers, md_len)?;
    let mut f = f;
    if start > 0 {
        use tokio::io::AsyncSeekExt;
        f.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(ApiError::internal)?;
    }
    use tokio::io::AsyncReadExt;
    // The length is fixed when asked: a file still being written may grow meanwhile.
    let stream = tokio_util::io::ReaderStream::new(f.take(len));
    let http_date = |t: Option<chrono::DateTime<chrono::Utc>>| {
        httpdate::fmt_http_date(std::time::SystemTime::from(t.unwrap_or_default()))
    };
    // Batch's file properties, as the SDKs read them (the HEAD of a file is its
    // properties alone).
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::LAST_MODIFIED,
            http_date(time(st.st_mtime, st.st_mtime_nsec)),
        )
        .header(
            "ocp-creation-time",
            http_date(time(st.st_ctime, st.st_ctime_nsec)),
        )
        .header("ocp-batch-file-isdirectory", "false")
        .header("ocp-batch-file-url", file_url(headers, files, path))
        .header("ocp-batch-file-mode", format!("{:o}", st.st_mode & 0o7777))
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("ocp-range", v.parse().unwrap());
            m
        };
        assert_eq!(range(&HeaderMap::new(), 10).unwrap(), (0, 10));
        assert_eq!(range(&h("bytes=4-"), 10).unwrap(), (4, 6));
        assert_eq!(range(&h("bytes=2-5"), 10).unwrap(), (2, 4));
        assert_eq!(range(&h("bytes=12-"), 10).unwrap(), (10, 0));
        assert_eq!(range(&h("bytes=0-99"), 10).unwrap(), (0, 10));
        assert!(range(&h("lines=1-"), 10).is_err());
        assert!(range(&h("bytes=x-"), 10).is_err());
    }

    #[test]
    fn paths_stay_inside() {
        assert!(relative("stdout.txt").is_ok());
        assert!(relative("wd/new.txt").is_ok());
        for bad in ["../x", "/etc/passwd", "wd/../../x", "", "a\0b", "./x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
