//! Batch's output-file patterns, pure but for the directory walk: `$VAR` expansion, the
//! pattern made absolute and kept inside the task directory, glob matching with the
//! hidden-file rule, and the blob name each match gets.

use std::path::{Component, Path, PathBuf};

/// `$NAME` and `${NAME}` replaced from the task's environment; unknown names stay as
/// written, so a literal `$` in a file name still matches.
pub fn expand_env(s: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(end) => (&b[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match lookup(name).filter(|_| !name.is_empty()) {
            Some(v) => {
                out.push_str(v);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A pattern resolved against the task: the directory to search and what to match below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The longest leading part without wildcards.
    pub base: PathBuf,
    /// The glob for paths relative to `base`; `None` when the pattern names one file (`base`).
    pub glob: Option<String>,
}

/// Makes `pattern` absolute (relative ones start at `wd`), folds `.` and `..`, and checks
/// that it stays inside `task_dir`: a task's outputs are its own files.
pub fn resolve(pattern: &str, wd: &Path, task_dir: &Path) -> Result<Resolved, String> {
    let joined = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        wd.join(pattern)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("{pattern:?} climbs above /"));
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    let fixed = parts
        .iter()
        .take_while(|p| !berth_proto::files::has_wildcards(p))
        .count();
    let base: PathBuf = std::iter::once("/".to_string())
        .chain(parts[..fixed].iter().cloned())
        .collect();
    if !base.starts_with(task_dir) {
        return Err(format!(
            "{pattern:?} points outside the task directory {}",
            task_dir.display()
        ));
    }
    if fixed == parts.len() {
        return Ok(Resolved { base, glob: None });
    }
    Ok(Resolved {
        base,
        glob: Some(parts[fixed..].join("/")),
    })
}

/// Batch's matching: `*` and `?` stay within one path segment, `**` spans directories,
/// and a leading dot must be written out.
pub const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// The regular files under `base` (symbolic links are neither followed nor uploaded)
/// whose path relative to `base` matches `glob`, with those relative paths, sorted.
/// Nothing is found when `base` leads out of `task_dir` through a link.
pub fn find(base: &Path, glob: &str, task_dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let pattern = glob::Pattern::new(glob).map_err(|e| format!("{glob:?}: {}", e.msg))?;
    // A directory on the way may be a link the task planted (`wd/out -> /etc`).
    if !inside(base, task_dir) {
        return Ok(Vec::new());
    }
    let deep = glob.contains("**");
    let depth = glob.split('/').count();
    let mut out = Vec::new();
    let mut stack = vec![(base.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && (deep || level + 1 < depth) {
                stack.push((path, rel, level + 1));
            } else if t.is_file() && pattern.matches_with(&rel, MATCH) {
                out.push((path, rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Whether `p`, with every link resolved, is inside `task_dir`; false when it does not exist.
pub fn inside(p: &Path, task_dir: &Path) -> bool {
    match (p.canonicalize(), task_dir.canonicalize()) {
        (Ok(p), Ok(t)) => p.starts_with(t),
        _ => false,
    }
}

/// The blob name of a matched file: a literal pattern's `path` is the name itself, a
/// wildcard pattern's `path` is a prefix before the file's path relative to the fixed part.
pub fn blob_name(path: Option<&str>, literal: bool, rel: &str) -> String {
    match path
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) if literal => p.to_string(),
        Some(p) => format!("{p}/{rel}"),
        None => rel.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![
            ("OUT".into(), "results".into()),
            ("AZ_BATCH_TASK_DIR".into(), "/n/t".into()),
        ]
    }

    #[test]
    fn env_expansion() {
        assert_eq!(expand_env("$OUT/*.txt", &env()), "results/*.txt");
        assert_eq!(expand_env("${OUT}x", &env()), "resultsx");
        assert_eq!(expand_env("$AZ_BATCH_TASK_DIR/std*", &env()), "/n/t/std*");
        assert_eq!(expand_env("a$NOPE/b$", &env()), "a$NOPE/b$");
        assert_eq!(expand_env("${OUT", &env()), "${OUT");
    }

    #[test]
    fn resolving() {
        let wd = Path::new("/n/t/wd");
        let td = Path::new("/n/t");
        assert_eq!(
            resolve("../std*.txt", wd, td).unwrap(),
            Resolved {
                base: "/n/t".into(),
                glob: Some("std*.txt".into())
            }
        );
        assert_eq!(
            resolve("out/**/*.csv", wd, td).unwrap(),
            Resolved {
                base: "/n/t/wd/out".into(),
                glob: Some("**/*.csv".into())
            }
        );
        assert_eq!(
            resolve("./a/./b.txt", wd, td).unwrap(),
            Resolved {
                base: "/n/t/wd/a/b.txt".into(),
                glob: None
            }
        );
        assert_eq!(
            resolve("/n/t/wd/x.bin", wd, td).unwrap().base,
            PathBuf::from("/n/t/wd/x.bin")
        );
        for bad in [
            "../../other/x",
            "/etc/passwd",
            "../../*",
            "/*/x",
            "../../../../../..",
        ] {
            assert!(resolve(bad, wd, td).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_names() {
        assert_eq!(
            blob_name(Some("exact/name.txt"), true, "r.txt"),
            "exact/name.txt"
        );
        assert_eq!(blob_name(None, true, "r.txt"), "r.txt");
        assert_eq!(blob_name(Some("pre/"), false, "a/b.txt"), "pre/a/b.txt");
        assert_eq!(blob_name(None, false, "a/b.txt"), "a/b.txt");
    }

    #[test]
    fn matching_follows_batch_rules() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        for f in [
            "a.txt",
            ".hid.txt",
            "sub/b.txt",
            "sub/.h/c.txt",
            ".dot/d.txt",
            "sub/deep/e.txt",
            "x.gif",
            ".a.gif",
        ] {
            let p = t.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", t.join("link.txt")).unwrap();
        let names = |g: &str| -> Vec<String> {
            find(t, g, t).unwrap().into_iter().map(|(_, r)| r).collect()
        };
        assert_eq!(names("*.txt"), ["a.txt"]);
        assert_eq!(names("**/*.txt"), ["a.txt", "sub/b.txt", "sub/deep/e.txt"]);
        assert_eq!(names(".*.txt"), [".hid.txt"]);
        assert_eq!(names("*.gif"), ["x.gif"]);
        assert_eq!(names(".*.gif"), [".a.gif"]);
        assert_eq!(names("sub/*"), ["sub/b.txt"]);
        assert_eq!(names(".dot/*"), [".dot/d.txt"]);
        assert_eq!(names("[ax].*"), ["a.txt", "x.gif"]);
        assert_eq!(names("?.txt"), ["a.txt"]);
    }
}
