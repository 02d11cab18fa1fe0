//! Task files: list the task directory, read one file. Paths are resolved inside the task
//! directory and may not leave it (no `..`, no absolute paths, no symlink out).

use super::jobs::find as find_job;
use super::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use std::collections::HashMap;
use std::path::{Component, PathBuf};

fn task_dir(s: &AppState, job: &str, task: &str) -> Result<PathBuf, ApiError> {
    let j = find_job(s, job)?;
    let t = s.store.task(job, task)?.ok_or_else(|| {
        ApiError::not_found(
            "TaskNotFound",
            format!("The specified task {task:?} does not exist."),
        )
    })?;
    Ok(s.rt.node.layout.task_dir(&j.spec.id, &t.view.spec.id))
}

/// `rel` inside `dir`, refusing anything that could leave it.
pub fn inside(dir: &std::path::Path, rel: &str) -> Result<PathBuf, ApiError> {
    let bad = || {
        ApiError::bad(
            "InvalidPropertyValue",
            format!("file path {rel:?} must be relative and stay inside the task directory"),
        )
    };
    let p = std::path::Path::new(rel);
    if rel.is_empty()
        || rel.contains('\0')
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(bad());
    }
    let full = dir.join(p);
    // A symlink inside the task directory must not lead out of it.
    if let (Ok(real), Ok(root)) = (full.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(bad());
        }
    }
    Ok(full)
}

pub async fn list(
    State(s): State<AppState>,
    Path((job, task)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dir = task_dir(&s, &job, &task)?;
    let recursive = q.get("recursive").is_some_and(|v| v == "true");
    let mut out = vec![];
    let mut stack = vec![(dir.clone(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            use std::os::unix::fs::PermissionsExt;
            let modified: Option<chrono::DateTime<chrono::Utc>> =
                md.modified().ok().map(Into::into);
            out.push(serde_json::json!({
                "name": name,
                "isDirectory": md.is_dir(),
                "properties": {
                    "lastModified": modified,
                    "contentLength": md.len(),
                    "contentType": "application/octet-stream",
                    "fileMode": format!("{:o}", md.permissions().mode() & 0o7777),
                }
            }));
            if md.is_dir() && recursive {
                stack.push((e.path(), format!("{name}/")));
            }
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(serde_json::json!({"value": out})))
}

/// Batch's `ocp-range: bytes=START-[END]` (END inclusive): where to begin and how much.
fn range(h: &HeaderMap, len: u64) -> Result<(u64, u64), ApiError> {
    let Some(v) = h.get("ocp-range") else {
        return Ok((0, len));
    };
    let bad = || {
        ApiError::bad(
            "InvalidHeaderValue",
            format!("ocp-range {v:?}: use bytes=START- or bytes=START-END"),
        )
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
    let full = inside(&dir, &path)?;
    let f = tokio::fs::File::open(&full).await.map_err(|_| {
        ApiError::not_found(
            "FileNotFound",
            format!("The specified file {path:?} does not exist."),
        )
    })?;
    let md = f.metadata().await.map_err(ApiError::internal)?;
    if md.is_dir() {
        return Err(ApiError::bad(
            "InvalidPropertyValue",
            format!("{path:?} is a directory"),
        ));
    }
    let (start, len) = range(&headers, md.len())?;
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
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header("ocp-batch-file-isdirectory", "false")
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
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stdout.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        assert!(inside(d.path(), "stdout.txt").is_ok());
        assert!(inside(d.path(), "wd/new.txt").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "wd/../../x",
            "",
            "out/passwd",
            "a\0b",
            "./x",
        ] {
            assert!(inside(d.path(), bad).is_err(), "{bad}");
        }
    }
}
