//! A `--user` of `containerRunOptions` -> the uid:gid the container's process will run as,
//! resolved the way the engine resolves it, so that berth gives the task's directories to
//! that uid:gid before the container starts (a user given by name would otherwise find
//! its `wd` closed to it).
//!
//! The rules are moby's (`moby/sys` `user.GetExecUser`, which dockerd runs on the
//! container's `/etc/passwd` and `/etc/group` with default uid 0, gid 0):
//! * `USER[:GROUP]`, cut at the first `:`; an empty part is "not given".
//! * A part that parses as a decimal number is an id (matched by number only, never as a
//!   name); outside 0..=2^31-1 it is an error. Anything else is a name.
//! * The user: the first passwd line matching (by uid or by name) gives uid and primary
//!   gid. A name with no line fails; a uid with none stands alone with gid 0. No user part
//!   matches uid 0.
//! * The group, when given: the first group line matching (by gid or by name) gives the
//!   gid, replacing the primary one. A name with no line fails; a gid with none stands.
//! * A missing file is an empty one (numbers stand, names fail). Lines are trimmed, blank
//!   lines skipped, `#` lines skipped in group only, missing fields empty, unreadable
//!   numbers 0.
//!
//! Pure: [`UserSpec::resolve`] takes the files' bytes; reading them is the caller's
//! ([`super::run`] reads them from the created container).

use berth_proto::FailureCode;

/// Where the engine reads users and groups, inside the container.
pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
/// The most bytes of either file read, as moby's own cap (10 MiB).
pub const FILE_LIMIT: u64 = 10 << 20;

/// The largest uid or gid the engine accepts (moby keeps them within a 32-bit int).
const MAX_ID: i64 = (1 << 31) - 1;

/// One part of a `--user`: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Num(u32),
    Name(String),
}

/// A parsed `--user` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    user: Option<Id>,
    group: Option<Id>,
}

/// Why a `--user` cannot be resolved: the task fails before its container starts. The
/// words say what is wrong with the value; [`UserError::message`] names the option too.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("{value:?} is out of range: uids and gids must be in 0-{max}", max = MAX_ID)]
    Range { value: String },
    #[error("the image has no user {name:?} ({})", place(*.file_missing, PASSWD))]
    NoUser { name: String, file_missing: bool },
    #[error("the image has no group {name:?} ({})", place(*.file_missing, GROUP))]
    NoGroup { name: String, file_missing: bool },
    /// The container's file could not be read (the engine's error, in words).
    #[error("cannot read the image's {path}: {message}")]
    Read {
        path: &'static str,
        message: String,
        /// The engine itself was away or too slow: not the task's fault.
        engine_down: bool,
    },
}

/// Where the name was looked for.
fn place(file_missing: bool, file: &str) -> String {
    if file_missing {
        format!("it has no {file}")
    } else {
        format!("not in its {file}")
    }
}

impl UserError {
    /// The failure's message, naming the option and its value: `containerRunOptions:
    /// --user appuser: the image has no user "appuser" (not in its /etc/passwd)`.
    pub fn message(&self, spec: &str) -> String {
        format!("containerRunOptions: --user {spec}: {self}")
    }

    /// Batch's failure code: the task's settings, unless the engine was away.
    pub fn code(&self) -> FailureCode {
        match self {
            UserError::Read {
                engine_down: true, ..
            } => FailureCode::ContainerMiscError,
            _ => FailureCode::ContainerInvalidSettings,
        }
    }
}

/// A number as moby's `parseNumeric` reads it: `Some(Ok(id))`, `Some(Err(()))` for a number
/// out of range, `None` for a name.
fn number(s: &str) -> Option<Result<u32, ()>> {
    // Go's Atoi: optional sign, then ASCII digits; too many digits is a range error.
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<i64>()
            .ok()
            .filter(|n| (0..=MAX_ID).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(()),
    )
}

/// Parses a `--user` value (`name`, `uid`, `name:group`, `uid:gid`, `name:gid`,
/// `uid:group`). Errors: an id out of range ([`UserError::Range`]).
pub fn parse(spec: &str) -> Result<UserSpec, UserError> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let part = |p: &str| -> Result<Option<Id>, UserError> {
        match number(p) {
            _ if p.is_empty() => Ok(None),
            Some(Ok(n)) => Ok(Some(Id::Num(n))),
            Some(Err(())) => Err(UserError::Range {
                value: p.to_string(),
            }),
            None => Ok(Some(Id::Name(p.to_string()))),
        }
    };
    Ok(UserSpec {
        user: part(user)?,
        group: part(group)?,
    })
}

/// The fields of one passwd or group line, as moby's `parseLine` reads them.
struct Line<'a> {
    name: &'a [u8],
    id: u32,
    /// passwd only: the primary gid.
    gid: u32,
}

/// A numeric field: unreadable is 0; wider values wrap as Go's `uint32(int)` does.
fn field_id(f: Option<&[u8]>) -> u32 {
    let n = f
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse::<i64>().ok())
        .unwrap_or(0);
    n as u32
}

/// The lines of a passwd (`name:pass:uid:gid:...`) or group (`name:pass:gid:...`) file.
fn lines(file: &[u8], group: bool) -> impl Iterator<Item = Line<'_>> {
    file.split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        // Blank lines go; `#` comments only in group (moby's passwd parser keeps them).
        .filter(move |l| !(l.is_empty() || group && l.starts_with(b"#")))
        .map(move |l| {
            let mut f = l.split(|b| *b == b':');
            let name = f.next().unwrap_or_default();
            let id = field_id(f.nth(1));
            let gid = if group { 0 } else { field_id(f.next()) };
            Line { name, id, gid }
        })
}

fn matches(want: &Id, line: &Line<'_>) -> bool {
    match want {
        Id::Num(n) => line.id == *n,
        Id::Name(s) => line.name == s.as_bytes(),
    }
}

impl UserSpec {
    /// uid:gid when both are numbers: known without the image's files.
    pub fn numeric(&self) -> Option<(u32, u32)> {
        match (&self.user, &self.group) {
            (Some(Id::Num(u)), Some(Id::Num(g))) => Some((*u, *g)),
            _ => None,
        }
    }

    /// Whether resolving reads `/etc/passwd`: for a name, or for the primary gid of a
    /// user given without a group.
    pub fn needs_passwd(&self) -> bool {
        matches!(self.user, Some(Id::Name(_))) || self.group.is_none()
    }

    /// Whether resolving reads `/etc/group`: for a group given by name.
    pub fn needs_group(&self) -> bool {
        matches!(self.group, Some(Id::Name(_)))
    }

    /// The uid:gid, given the container's `/etc/passwd` and `/etc/group` (None: the file
    /// does not exist). Errors: a user or group name the files do not have.
    pub fn resolve(
        &self,
        passwd: Option<&[u8]>,
        group: Option<&[u8]>,
    ) -> Result<(u32, u32), UserError> {
        // No user part: the engine's default, uid 0.
        let want = self.user.clone().unwrap_or(Id::Num(0));
        let (uid, mut gid) =
            match lines(passwd.unwrap_or_default(), false).find(|l| matches(&want, l)) {
                Some(l) => (l.id, l.gid),
                None => match want {
                    // A uid with no line: the default gid, 0.
                    Id::Num(n) => (n, 0),
                    Id::Name(name) => {
                        return Err(UserError::NoUser {
                            name,
                            file_missing: passwd.is_none(),
                        })
                    }
                },
            };
        if let Some(want) = &self.group {
            gid = match lines(group.unwrap_or_default(), true).find(|l| matches(want, l)) {
                Some(l) => l.id,
                None => match want {
                    Id::Num(n) => *n,
                    Id::Name(name) => {
                        return Err(UserError::NoGroup {
                            name: name.clone(),
                            file_missing: group.is_none(),
                        })
                    }
                },
            };
        }
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_FILE: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        appuser:x:2100:2200::/home/app:/bin/sh\n\
        \n\
        \x20 spaced:x:2300:2301::/:/bin/sh  \r\n\
        dup:x:2400:2401::/:/bin/sh\n\
        dup:x:2500:2501::/:/bin/sh\n\
        short:x\n\
        1337:x:2600:2601::/:/bin/sh\n\
        twin:x:2100:9999::/:/bin/sh\n";
    const GROUP_FILE: &[u8] = b"root:x:0:\n\
        # comment:x:7:\n\
        appgroup:x:2200:appuser\n\
        other:x:2700:\n\
        other:x:2800:\n\
        4242:x:2900:\n";

    fn resolve(spec: &str) -> Result<(u32, u32), UserError> {
        parse(spec)?.resolve(Some(PASSWD_FILE), Some(GROUP_FILE))
    }

    /// Every form docker accepts, with moby's results on the same files.
    #[test]
    fn every_form_resolves_as_the_engine_does() {
        let cases: &[(&str, (u32, u32))] = &[
            // name: uid and primary gid from passwd.
            ("appuser", (2100, 2200)),
            // name:group, name:gid (a gid not in group stands).
            ("appuser:appgroup", (2100, 2200)),
            ("appuser:other", (2100, 2700)),
            ("appuser:31", (2100, 31)),
            // uid:group, uid:gid.
            ("2000:appgroup", (2000, 2200)),
            ("2000:2001", (2000, 2001)),
            // uid alone: its passwd line's gid (first match), else 0.
            ("2100", (2100, 2200)),
            ("2000", (2000, 0)),
            ("0", (0, 0)),
            // First match wins; lines are trimmed; a name that looks like a number is an
            // id, never a name.
            ("dup", (2400, 2401)),
            ("spaced", (2300, 2301)),
            ("1337", (1337, 0)),
            ("appuser:4242", (2100, 4242)),
            // "user:" is "user"; ":group" is uid 0 (root's line) with that group.
            ("appuser:", (2100, 2200)),
            (":appgroup", (0, 2200)),
            // Atoi's forms: a sign, leading zeros.
            ("+02100", (2100, 2200)),
            ("2000:-0", (2000, 0)),
        ];
        for (spec, want) in cases {
            assert_eq!(resolve(spec), Ok(*want), "--user {spec}");
        }
    }

    #[test]
    fn a_missing_name_or_group_is_an_error_naming_it() {
        let e = resolve("ghost").unwrap_err();
        assert!(matches!(&e, UserError::NoUser { name, .. } if name == "ghost"));
        assert_eq!(
            e.message("ghost"),
            "containerRunOptions: --user ghost: the image has no user \"ghost\" (not in its /etc/passwd)"
        );
        assert_eq!(e.code(), FailureCode::ContainerInvalidSettings);
        let e = resolve("appuser:ghosts").unwrap_err();
        assert!(matches!(&e, UserError::NoGroup { name, .. } if name == "ghosts"));
        assert!(e.to_string().contains("no group \"ghosts\""), "{e}");
        // A comment is not a group; a group name is not matched in passwd.
        assert!(resolve("appuser:# comment").is_err());
        assert!(resolve("2000:appuser").is_err());
        // Extra colons belong to the group name, which no line can hold.
        assert!(resolve("appuser:appgroup:x").is_err());
    }

    #[test]
    fn without_the_files_numbers_stand_and_names_fail() {
        let s = parse("2000").unwrap();
        assert_eq!(s.resolve(None, None), Ok((2000, 0)));
        let e = parse("appuser").unwrap().resolve(None, None).unwrap_err();
        assert!(e.to_string().ends_with("(it has no /etc/passwd)"), "{e}");
        let e = parse("2000:appgroup")
            .unwrap()
            .resolve(Some(PASSWD_FILE), None)
            .unwrap_err();
        assert!(matches!(e, UserError::NoGroup { .. }));
    }

    #[test]
    fn ids_out_of_range_are_refused() {
        for spec in ["2147483648", "1:99999999999999999999", "-1", "1:-5"] {
            assert!(
                matches!(parse(spec), Err(UserError::Range { .. })),
                "{spec}"
            );
        }
        assert_eq!(
            parse("2147483647").unwrap().numeric(),
            None,
            "no group: passwd decides the gid"
        );
        assert_eq!(
            parse("2147483647:0").unwrap().numeric(),
            Some((2147483647, 0))
        );
    }

    /// Which files a spec needs: none when both parts are numbers.
    #[test]
    fn only_what_the_spec_names_is_read() {
        let needs = |s: &str| {
            let s = parse(s).unwrap();
            (s.needs_passwd(), s.needs_group(), s.numeric())
        };
        assert_eq!(needs("1:2"), (false, false, Some((1, 2))));
        assert_eq!(needs("1"), (true, false, None));
        assert_eq!(needs("a"), (true, false, None));
        assert_eq!(needs("a:2"), (true, false, None));
        assert_eq!(needs("1:g"), (false, true, None));
        assert_eq!(needs("a:g"), (true, true, None));
    }
}
