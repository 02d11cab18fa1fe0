//! Every file operation the agent (root) performs inside a directory a task can write: a
//! task's own directory and `wd`, the start task's, a job's preparation and release
//! directories. A task owns those directories, so it can put a link, a FIFO, a device or a
//! hard link to another file where berth expects its own `stdout.txt`, and swap them while
//! berth works. Acting by path there means acting on whatever the task chose, as root.
//!
//! So berth opens a directory it made once ([`Beneath::open`]) and does everything else
//! relative to that handle: names are resolved beneath it without following any link
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or on
//! kernels before 5.6 one component at a time with `O_NOFOLLOW`), owner and mode change
//! through the opened descriptor, a file is checked after it is opened (`fstat`) and
//! before it is truncated or read, and trees are removed without following links. What the
//! task put there is refused with [`BeneathError::Refused`], naming the file and what was
//! found; berth never acts on the target.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// What berth found where it expected a plain file or directory of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Link,
    /// A regular file with this many names: writing it would write the others.
    HardLink(u64),
    Fifo,
    Socket,
    Device,
    Directory,
    NotDirectory,
    /// A name that leaves the directory (`..`, an absolute path).
    Outside,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Link => f.write_str("is a symbolic link"),
            Found::HardLink(n) => write!(f, "is a hard link ({n} names)"),
            Found::Fifo => f.write_str("is a FIFO"),
            Found::Socket => f.write_str("is a socket"),
            Found::Device => f.write_str("is a device"),
            Found::Directory => f.write_str("is a directory"),
            Found::NotDirectory => f.write_str("is not a directory"),
            Found::Outside => f.write_str("leaves its directory"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// What the task left there; berth did not act on it.
    #[error("{}: {found}; berth follows no links and opens no special or multiply linked files in task directories", path.display())]
    Refused { path: PathBuf, found: Found },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BeneathError {
    /// Nothing by that name.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BeneathError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Whether `e` is a [`BeneathError::Refused`] carried in an I/O error: what the task left
/// in its directory, not a fault of the node.
pub fn is_refused(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<BeneathError>())
        .is_some_and(|b| matches!(b, BeneathError::Refused { .. }))
}

impl From<BeneathError> for std::io::Error {
    fn from(e: BeneathError) -> Self {
        let kind = match &e {
            BeneathError::Refused { .. } => std::io::ErrorKind::InvalidData,
            BeneathError::Io { source, .. } => source.kind(),
        };
        std::io::Error::new(kind, e)
    }
}

type Result<T> = std::result::Result<T, BeneathError>;

/// How names are resolved beneath a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// One `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6+).
    Openat2,
    /// One component at a time, each opened with `O_NOFOLLOW` (older kernels).
    Components,
}

/// 0 unknown, 1 openat2 works, 2 it does not (ENOSYS): found out once per process.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

fn default_walk() -> Walk {
    match OPENAT2.load(Ordering::Relaxed) {
        2 => Walk::Components,
        _ => Walk::Openat2,
    }
}

/// An open directory; every operation stays beneath it and follows no link.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    /// For messages only: never opened again by this name.
    path: PathBuf,
    walk: Walk,
}

/// A directory entry, not followed.
#[derive(Debug)]
pub struct Entry {
    pub name: OsString,
    pub stat: Stat,
}

/// The kind of a `stat`.
pub fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn found_in(st: &Stat) -> Option<Found> {
    match kind(st) {
        FileType::RegularFile => None,
        FileType::Directory => Some(Found::Directory),
        FileType::Symlink => Some(Found::Link),
        FileType::Fifo => Some(Found::Fifo),
        FileType::Socket => Some(Found::Socket),
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Unknown => {
            Some(Found::Device)
        }
    }
}

/// `rel` as plain names: no `..`, no `.`, not absolute, not empty, no NUL.
fn names(rel: &Path) -> Option<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) if !n.as_encoded_bytes().contains(&0) => out.push(n),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

impl Beneath {
    /// Opens `dir`, a directory berth made whose parents only root can write (the node
    /// layout: `workitems/<job>/job-1`, the node root). Only its last component is checked:
    /// it must be a directory and not a link.
    pub fn open(dir: &Path) -> Result<Beneath> {
        Beneath::open_with(dir, default_walk())
    }

    pub(crate) fn open_with(dir: &Path, walk: Walk) -> Result<Beneath> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::open(dir, flags, Mode::empty()) {
            Ok(fd) => Ok(Beneath {
                fd,
                path: dir.to_path_buf(),
                walk,
            }),
            // O_DIRECTORY meets a link as ENOTDIR: say which it was.
            Err(e) => Err(match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => BeneathError::Refused {
                    path: dir.to_path_buf(),
                    found: Found::Link,
                },
                _ => Self::refusal(dir, e).unwrap_or_else(|| BeneathError::Io {
                    path: dir.to_path_buf(),
                    source: e.into(),
                }),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor, for `fchown`/`fchmod` and the like.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second handle on this same directory (not reopened by name).
    pub fn dir_again(&self) -> Result<Beneath> {
        let fd = self.fd.try_clone().map_err(|e| BeneathError::Io {
            path: self.path.clone(),
            source: e,
        })?;
        Ok(Beneath {
            fd,
            path: self.path.clone(),
            walk: self.walk,
        })
    }

    fn err(&self, rel: &Path, e: Errno) -> BeneathError {
        let path = self.path.join(rel);
        // Say what is there, looked at without following: a link met as ELOOP or ENOTDIR,
        // a socket met as ENXIO.
        if let Ok(st) = self.lstat(rel) {
            if let Some(found) = found_in(&st).filter(|f| *f != Found::Directory) {
                return BeneathError::Refused { path, found };
            }
        }
        Self::refusal(&path, e).unwrap_or(BeneathError::Io {
            path,
            source: e.into(),
        })
    }

    /// The errors that mean a link or an escape was met.
    fn refusal(path: &Path, e: Errno) -> Option<BeneathError> {
        let found = match e {
            Errno::LOOP => Found::Link,
            Errno::XDEV => Found::Outside,
            Errno::NOTDIR => Found::NotDirectory,
            _ => return None,
        };
        Some(BeneathError::Refused {
            path: path.to_path_buf(),
            found,
        })
    }

    /// Opens `rel` beneath this directory without following any link.
    fn open_fd(&self, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let Some(parts) = names(rel) else {
            return Err(BeneathError::Refused {
                path: self.path.join(rel),
                found: Found::Outside,
            });
        };
        let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY;
        if self.walk == Walk::Openat2 {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename elsewhere raced the lookup; the kernel asks for a retry.
            for _ in 0..8 {
                match rustix::fs::openat2(&self.fd, rel, flags, mode, how) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        OPENAT2.store(2, Ordering::Relaxed);
                        tracing::info!("openat2 is missing (Linux before 5.6): task files are opened one component at a time");
                        break;
                    }
                    Ok(fd) => {
                        OPENAT2.store(1, Ordering::Relaxed);
                        return Ok(fd);
                    }
                    Err(e) => return Err(self.err(rel, e)),
                }
            }
        }
        self.walk_components(rel, &parts, flags, mode)
    }

    fn walk_components(
        &self,
        rel: &Path,
        parts: &[&std::ffi::OsStr],
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd> {
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (last, dirs) = parts.split_last().unwrap_or_else(|| unreachable!());
        let mut cur: Option<OwnedFd> = None;
        for d in dirs {
            let at: BorrowedFd<'_> = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = rustix::fs::openat(at, *d, dir_flags, Mode::empty())
                .map_err(|e| self.err(rel, e))?;
            cur = Some(next);
        }
        let at: BorrowedFd<'_> = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, mode).map_err(|e| self.err(rel, e))
    }

    fn fstat(&self, rel: &Path, fd: &OwnedFd) -> Result<Stat> {
        rustix::fs::fstat(fd).map_err(|e| BeneathError::Io {
            path: self.path.join(rel),
            source: e.into(),
        })
    }

    /// Refuses anything but a regular file with one name.
    fn check_file(&self, rel: &Path, st: &Stat) -> Result<()> {
        let found = found_in(st).or((st.st_nlink != 1).then_some(Found::HardLink(st.st_nlink)));
        match found {
            None => Ok(()),
            Some(found) => Err(BeneathError::Refused {
                path: self.path.join(rel),
                found,
            }),
        }
    }

    /// Opens a file to write and checks it; O_NONBLOCK, so a FIFO cannot hold berth up.
    fn open_file(&self, rel: &Path, flags: OFlags, mode: u32) -> Result<File> {
        let fd = self.open_fd(
            rel,
            flags | OFlags::WRONLY | OFlags::NONBLOCK,
            Mode::from_raw_mode(mode),
        )?;
        let st = self.fstat(rel, &fd)?;
        self.check_file(rel, &st)?;
        // Regular files ignore O_NONBLOCK; it is cleared anyway so the file behaves plainly.
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| self.io(rel, e))?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(|e| self.io(rel, e))?;
        Ok(File::from(fd))
    }

    fn io(&self, rel: &Path, e: Errno) -> BeneathError {
        BeneathError::Io {
            path: self.path.join(rel),
            source: e.into(),
        }
    }

    /// `rel`, created with `mode` if missing, emptied: berth's own file (`stdout.txt`).
    /// Never truncated before it was checked.
    pub fn create(&self, rel: impl AsRef<Path>, mode: u32) -> Result<File> {
        let rel = rel.as_ref();
        let f = self.open_file(rel, OFlags::CREATE, mode)?;
        f.set_len(0).map_err(|e| BeneathError::Io {
            path: self.path.join(rel),
            source: e,
        })?;
        Ok(f)
    }

    /// `rel` opened to append to, created (with `mode`) when `create` says so.
    pub fn append(&self, rel: impl AsRef<Path>, create: Option<u32>) -> Result<File> {
        let flags = OFlags::APPEND | create.map_or(OFlags::empty(), |_| OFlags::CREATE);
        self.open_file(rel.as_ref(), flags, create.unwrap_or(0))
    }

    /// `rel` opened to read, with its `fstat`: a regular file with one name, or refused.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<(File, Stat)> {
        let rel = rel.as_ref();
        let fd = self.open_fd(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let st = self.fstat(rel, &fd)?;
        self.check_file(rel, &st)?;
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| self.io(rel, e))?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(|e| self.io(rel, e))?;
        Ok((File::from(fd), st))
    }

    /// The directory `rel` beneath this one.
    pub fn dir(&self, rel: impl AsRef<Path>) -> Result<Beneath> {
        let rel = rel.as_ref();
        let fd = self.open_fd(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Beneath {
            fd,
            path: self.path.join(rel),
            walk: self.walk,
        })
    }

    /// The directory `name` (one component), made with `mode` if missing. Returns it and
    /// whether it was made now.
    pub fn make_dir(&self, name: &str, mode: u32) -> Result<(Beneath, bool)> {
        let rel = Path::new(name);
        if names(rel).is_none_or(|n| n.len() != 1) {
            return Err(BeneathError::Refused {
                path: self.path.join(rel),
                found: Found::Outside,
            });
        }
        // mkdirat does not follow a link in the last component: it fails with EEXIST,
        // and the open below refuses the link.
        let made = match rustix::fs::mkdirat(&self.fd, rel, Mode::from_raw_mode(mode)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(self.err(rel, e)),
        };
        Ok((self.dir(rel)?, made))
    }

    /// `rel` as it is, not followed (a link is reported as a link).
    pub fn lstat(&self, rel: impl AsRef<Path>) -> Result<Stat> {
        let rel = rel.as_ref();
        let parts = names(rel).ok_or_else(|| BeneathError::Refused {
            path: self.path.join(rel),
            found: Found::Outside,
        })?;
        let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => Some(self.dir(p)?),
            None => None,
        };
        let at = parent.as_ref().map_or(self.fd.as_fd(), |d| d.fd.as_fd());
        let name = parts.last().copied().unwrap_or_default();
        rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| self.io(rel, e))
    }

    /// This directory's entries, each `lstat`ed (links are listed, not followed).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let io = |e: Errno| BeneathError::Io {
            path: self.path.clone(),
            source: e.into(),
        };
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.fd).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            // Gone between the listing and the stat: skip it.
            let Ok(stat) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            out.push(Entry {
                name: OsString::from_vec(name.to_bytes().to_vec()),
                stat,
            });
        }
        Ok(out)
    }

    /// Removes `name` (one component) and, if it is a directory, everything in it, without
    /// following a link anywhere. Returns false when there was nothing by that name.
    pub fn remove_tree(&self, name: &str) -> Result<bool> {
        let st = match self.lstat(name) {
            Ok(st) => st,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        if names(Path::new(name)).is_none_or(|n| n.len() != 1) {
            return Err(BeneathError::Refused {
                path: self.path.join(name),
                found: Found::Outside,
            });
        }
        if kind(&st) != FileType::Directory {
            rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
                .map_err(|e| self.io(Path::new(name), e))?;
            return Ok(true);
        }
        // Depth first with one open directory per level (no recursion on the agent's
        // stack, however deep the task made its tree); each directory is listed once.
        struct Level {
            dir: Beneath,
            name: OsString,
            subdirs: Vec<OsString>,
        }
        let level = |dir: Beneath, name: OsString| -> Result<Level> {
            let mut subdirs = Vec::new();
            for e in dir.entries()? {
                if kind(&e.stat) == FileType::Directory {
                    subdirs.push(e.name);
                    continue;
                }
                match rustix::fs::unlinkat(&dir.fd, e.name.as_os_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(err) => return Err(dir.io(Path::new(&e.name), err)),
                }
            }
            Ok(Level { dir, name, subdirs })
        };
        let mut stack = vec![level(self.dir(name)?, name.into())?];
        while let Some(top) = stack.last_mut() {
            match top.subdirs.pop() {
                Some(sub) => {
                    let d = top.dir.dir(&sub)?;
                    let next = level(d, sub)?;
                    stack.push(next);
                }
                None => {
                    let Level { dir, name, .. } = stack.pop().unwrap_or_else(|| unreachable!());
                    drop(dir);
                    let parent = stack.last().map_or(self, |l| &l.dir);
                    rustix::fs::unlinkat(&parent.fd, name.as_os_str(), AtFlags::REMOVEDIR)
                        .map_err(|e| parent.io(Path::new(&name), e))?;
                }
            }
        }
        Ok(true)
    }

    /// Gives this directory to `uid:gid`, through its descriptor.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        fchown(&self.fd, uid, gid).map_err(|e| BeneathError::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Sets this directory's mode, through its descriptor.
    pub fn chmod(&self, mode: u32) -> Result<()> {
        fchmod(&self.fd, mode).map_err(|e| BeneathError::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// Removes `path` and everything below it without following a link; its parent must be
/// the agent's, as for [`Beneath::open`] (`workitems/<job>/job-1`, `workitems`). False
/// when nothing was there.
pub fn remove_all(path: &Path) -> Result<bool> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(BeneathError::Refused {
            path: path.to_path_buf(),
            found: Found::Outside,
        });
    };
    match Beneath::open(parent) {
        Ok(p) => p.remove_tree(name),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// `fchown` on an opened file or directory.
pub fn fchown(fd: impl AsFd, uid: u32, gid: u32) -> std::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(Into::into)
}

/// `fchmod` on an opened file or directory.
pub fn fchmod(fd: impl AsFd, mode: u32) -> std::io::Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A temp dir holding `file` ("mine"), `sub/inner`, a link to a file outside, a link to
    /// a directory outside, a link inside, a FIFO, a hard link to an outside file.
    fn planted() -> (tempfile::TempDir, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        std::fs::write(o.join("secret"), "secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("file"), "mine").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/inner"), "inner").unwrap();
        std::os::unix::fs::symlink(o.join("secret"), p.join("link")).unwrap();
        std::os::unix::fs::symlink(o, p.join("linkdir")).unwrap();
        std::os::unix::fs::symlink("file", p.join("innerlink")).unwrap();
        nix::unistd::mkfifo(
            &p.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::hard_link(o.join("secret"), p.join("hard")).unwrap();
        (d, outside)
    }

    fn refused(r: Result<impl std::fmt::Debug>) -> Found {
        match r {
            Err(BeneathError::Refused { found, .. }) => found,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn each_walk(f: impl Fn(Walk)) {
        for w in [Walk::Openat2, Walk::Components] {
            f(w);
        }
    }

    #[test]
    fn reads_refuse_links_special_files_and_escapes() {
        each_walk(|w| {
            let (d, outside) = planted();
            let b = Beneath::open_with(d.path(), w).unwrap();
            let mut s = String::new();
            b.read("sub/inner")
                .unwrap()
                .0
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "inner", "{w:?}");
            assert_eq!(refused(b.read("link")), Found::Link, "{w:?}");
            assert_eq!(refused(b.read("innerlink")), Found::Link, "{w:?}");
            // A link on the way: ELOOP (openat2) or ENOTDIR/ELOOP (O_NOFOLLOW|O_DIRECTORY).
            assert!(
                matches!(
                    refused(b.read("linkdir/secret")),
                    Found::Link | Found::NotDirectory
                ),
                "{w:?}"
            );
            assert_eq!(refused(b.read("fifo")), Found::Fifo, "{w:?}");
            assert_eq!(refused(b.read("hard")), Found::HardLink(2), "{w:?}");
            assert_eq!(refused(b.read("sub")), Found::Directory, "{w:?}");
            for bad in ["../x", "/etc/passwd", "sub/../file", "", "./file"] {
                assert_eq!(refused(b.read(bad)), Found::Outside, "{w:?} {bad}");
            }
            assert!(b.read("missing").unwrap_err().is_not_found());
            assert_eq!(
                std::fs::read_to_string(outside.path().join("secret")).unwrap(),
                "secret"
            );
        });
    }

    #[test]
    fn writes_never_touch_what_a_link_or_hard_link_names() {
        each_walk(|w| {
            let (d, outside) = planted();
            let b = Beneath::open_with(d.path(), w).unwrap();
            for name in ["link", "hard", "fifo", "sub", "linkdir/new"] {
                assert!(b.create(name, 0o644).is_err(), "{w:?} {name}");
                assert!(b.append(name, Some(0o644)).is_err(), "{w:?} {name}");
            }
            // A dangling link is not created through either.
            std::os::unix::fs::symlink(outside.path().join("new"), d.path().join("dangling"))
                .unwrap();
            assert_eq!(refused(b.create("dangling", 0o644)), Found::Link);
            assert!(!outside.path().join("new").exists());
            assert_eq!(
                std::fs::read_to_string(outside.path().join("secret")).unwrap(),
                "secret"
            );
            // Berth's own files: created, emptied, appended to.
            let mut f = b.create("file", 0o644).unwrap();
            f.write_all(b"new").unwrap();
            b.append("file", None).unwrap().write_all(b"+more").unwrap();
            b.append("sub/log", Some(0o640))
                .unwrap()
                .write_all(b"x")
                .unwrap();
            assert_eq!(
                std::fs::read_to_string(d.path().join("file")).unwrap(),
                "new+more"
            );
            assert_eq!(
                std::fs::read_to_string(d.path().join("sub/log")).unwrap(),
                "x"
            );
            assert!(b.append("nothing", None).unwrap_err().is_not_found());
        });
    }

    #[test]
    fn directories_are_made_and_opened_without_following() {
        each_walk(|w| {
            let (d, _outside) = planted();
            let b = Beneath::open_with(d.path(), w).unwrap();
            let (wd, made) = b.make_dir("wd", 0o770).unwrap();
            assert!(made);
            wd.chmod(0o750).unwrap();
            assert!(!b.make_dir("wd", 0o770).unwrap().1);
            assert_eq!(refused(b.make_dir("linkdir", 0o770)), Found::Link);
            assert_eq!(refused(b.make_dir("file", 0o770)), Found::NotDirectory);
            assert_eq!(refused(b.make_dir("a/b", 0o770)), Found::Outside);
            assert_eq!(refused(b.dir("linkdir")), Found::Link);
            let names: Vec<_> = {
                let mut v: Vec<_> = b.entries().unwrap().into_iter().map(|e| e.name).collect();
                v.sort();
                v
            };
            assert_eq!(
                names,
                [
                    "fifo",
                    "file",
                    "hard",
                    "innerlink",
                    "link",
                    "linkdir",
                    "sub",
                    "wd"
                ]
                .map(OsString::from)
            );
            assert_eq!(kind(&b.lstat("link").unwrap()), FileType::Symlink);
            // The top directory itself must not be a link.
            assert_eq!(
                refused(Beneath::open_with(&d.path().join("linkdir"), w)),
                Found::Link
            );
        });
    }

    #[test]
    fn trees_go_without_following_links() {
        each_walk(|w| {
            let (d, outside) = planted();
            for sub in ["t/a/b/c", "t/x/y", "t/x/z", "t/e"] {
                std::fs::create_dir_all(d.path().join(sub)).unwrap();
            }
            std::fs::write(d.path().join("t/x/y/f"), "").unwrap();
            std::fs::write(d.path().join("t/a/b/c/f"), "").unwrap();
            std::os::unix::fs::symlink(outside.path(), d.path().join("t/a/out")).unwrap();
            let b = Beneath::open_with(d.path(), w).unwrap();
            assert!(b.remove_tree("t").unwrap());
            assert!(!d.path().join("t").exists());
            assert!(
                b.remove_tree("linkdir").unwrap(),
                "a link goes, not its target"
            );
            assert!(!b.remove_tree("t").unwrap());
            assert!(outside.path().join("secret").exists());
        });
    }
}
