//! One file out of the tar that the Engine API's archive endpoint
//! (`GET /containers/{id}/archive?path=P`) answers with. Its first entry is `P`'s last
//! component, as `lstat` sees it: a link is sent as a link, which the caller follows by
//! asking again for [`link_target`]. Pure.

use std::io::Read;

/// What the archive holds at the path asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>),
    /// A symbolic link, with its target as written.
    Link(String),
    /// A directory, device, FIFO, ...: no file to read.
    Other,
}

/// Why an archive could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("unreadable archive: {0}")]
    Malformed(String),
}

/// The first entry of `tar`; a file's bytes only up to `limit`.
pub fn first_entry(tar: &[u8], limit: u64) -> Result<Entry, ArchiveError> {
    let bad = |e: std::io::Error| ArchiveError::Malformed(e.to_string());
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(bad)?;
    let Some(entry) = entries.next() else {
        return Err(ArchiveError::Malformed("no entry".into()));
    };
    let mut entry = entry.map_err(bad)?;
    let kind = entry.header().entry_type();
    if kind.is_symlink() {
        let target = entry.link_name().map_err(bad)?.unwrap_or_default();
        return Ok(Entry::Link(target.to_string_lossy().into_owned()));
    }
    if !kind.is_file() {
        return Ok(Entry::Other);
    }
    if entry.size() > limit {
        return Err(ArchiveError::TooLarge(limit));
    }
    let mut bytes = Vec::new();
    entry
        .by_ref()
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(bad)?;
    Ok(Entry::File(bytes))
}

/// The absolute path a link at `path` points to: `target` if absolute, else beside
/// `path`; `.` and `..` folded (`..` stops at `/`, as inside a container's root).
pub fn link_target(path: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        ""
    } else {
        path.rsplit_once('/').map_or("", |(dir, _)| dir)
    };
    let mut parts: Vec<&str> = vec![];
    for c in base.split('/').chain(target.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn a_file_a_link_and_a_directory() {
        let t = tar_of(|b| file(b, "passwd", b"root:x:0:0::/:/bin/sh\n"));
        assert_eq!(
            first_entry(&t, 1 << 20),
            Ok(Entry::File(b"root:x:0:0::/:/bin/sh\n".to_vec()))
        );
        let t = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "passwd", "../usr/lib/passwd")
                .unwrap();
        });
        assert_eq!(
            first_entry(&t, 1 << 20),
            Ok(Entry::Link("../usr/lib/passwd".into()))
        );
        let t = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, "etc", std::io::empty()).unwrap();
            file(b, "etc/passwd", b"x");
        });
        assert_eq!(first_entry(&t, 1 << 20), Ok(Entry::Other));
    }

    #[test]
    fn a_file_past_the_limit_or_garbage_is_an_error() {
        let t = tar_of(|b| file(b, "big", &[b'a'; 100]));
        assert_eq!(first_entry(&t, 99), Err(ArchiveError::TooLarge(99)));
        assert!(matches!(first_entry(&t, 100), Ok(Entry::File(v)) if v.len() == 100));
        assert!(first_entry(b"not a tar", 10).is_err());
        assert!(first_entry(&[], 10).is_err());
    }

    #[test]
    fn link_targets_resolve_inside_the_root() {
        assert_eq!(
            link_target("/etc/passwd", "/usr/lib/passwd"),
            "/usr/lib/passwd"
        );
        assert_eq!(
            link_target("/etc/passwd", "../usr/lib/passwd"),
            "/usr/lib/passwd"
        );
        assert_eq!(
            link_target("/etc/passwd", "passwd.real"),
            "/etc/passwd.real"
        );
        assert_eq!(link_target("/etc/passwd", "./x/../y"), "/etc/y");
        assert_eq!(link_target("/etc/passwd", "../../../../p"), "/p");
    }
}
