//! Batch's output-file patterns, pure but for the directory walk: `$VAR` expansion, the
//! pattern made absolute and kept inside the task directory, glob matching with the
//! hidden-file rule, and the blob name each match gets.

use crate::node::beneath::{self, Beneath};
use rustix::fs::FileType;
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

/// The regular files under `base` (a directory opened beneath the task directory; links
/// are neither followed nor uploaded) whose path relative to `base` matches `glob`, as
/// those relative paths, sorted. The walk goes from descriptor to descriptor: a directory
/// the task swaps for a link meanwhile is refused, not entered.
pub fn find(base: &Beneath, glob: &str) -> Result<Vec<String>, String> {
    let pattern = glob::Pattern::new(glob).map_err(|e| format!("{glob:?}: {}", e.msg))?;
    let deep = glob.contains("**");
    let depth = glob.split('/').count();
    let mut out = Vec::new();
    let mut stack: Vec<(Option<Beneath>, String, usize)> = vec![(None, String::new(), 0)];
    while let Some((dir, rel, level)) = stack.pop() {
        let Ok(entries) = dir.as_ref().unwrap_or(base).entries() else {
            continue;
        };
        for e in entries {
            let name = e.name.to_string_lossy().into_owned();
            let sub = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            match beneath::kind(&e.stat) {
                FileType::Directory if deep || level + 1 < depth => {
                    if let Ok(d) = dir.as_ref().unwrap_or(base).dir(&e.name) {
                        stack.push((Some(d), sub, level + 1));
                    }
                }
                FileType::RegularFile if pattern.matches_with(&sub, MATCH) => out.push(sub),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
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
        std::fs::create_dir(d.path().join("realdir")).unwrap();
        std::fs::write(d.path().join("realdir/r.txt"), "").unwrap();
        std::os::unix::fs::symlink(t.join("realdir"), t.join("linkdir")).unwrap();
        let base = Beneath::open(t).unwrap();
        let names = |g: &str| -> Vec<String> { find(&base, g).unwrap() };
        assert_eq!(names("*.txt"), ["a.txt"]);
        assert_eq!(
            names("**/*.txt"),
            ["a.txt", "realdir/r.txt", "sub/b.txt", "sub/deep/e.txt"],
            "neither link.txt nor linkdir/ is followed"
        );
        assert_eq!(names(".*.txt"), [".hid.txt"]);
        assert_eq!(names("*.gif"), ["x.gif"]);
        assert_eq!(names(".*.gif"), [".a.gif"]);
        assert_eq!(names("sub/*"), ["sub/b.txt"]);
        assert_eq!(names(".dot/*"), [".dot/d.txt"]);
        assert_eq!(names("[ax].*"), ["a.txt", "x.gif"]);
        assert_eq!(names("?.txt"), ["a.txt"]);
    }
}
