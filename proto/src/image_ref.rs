//! Image references as `docker pull` reads them: `[host[:port]/]path[:tag][@digest]`.
//! No tag means `latest` (never "all tags", which is what the Engine API does with an
//! empty tag).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host, `docker.io` when the reference names none.
    pub domain: String,
    /// Repository path; Docker Hub's official images get `library/`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The longest name docker accepts (`NameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// `[a-z0-9]+` runs joined by one separator (`.`, `_`, `__`, or any number of `-`).
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]`: dot-separated labels of letters (any case), digits and inner `-`, or a
/// bracketed IPv6 address; the port is digits.
fn domain_ok(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match after {
            "" => return true,
            a => ("", a.strip_prefix(':').unwrap_or("x")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, p),
            None => (d, "0"),
        }
    };
    let port_ok = !port.is_empty() && port.bytes().all(|x| x.is_ascii_digit());
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    port_ok && (d.starts_with('[') || host.split('.').all(label_ok))
}

/// `algorithm:hex`: letters-and-digits components joined by `+ . - _`, then at least 32
/// hex digits.
fn digest_ok(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else {
        return false;
    };
    let comp_ok = |c: &str| {
        c.starts_with(|x: char| x.is_ascii_alphabetic())
            && c.chars().all(|x| x.is_ascii_alphanumeric())
    };
    algo.split(['+', '.', '-', '_']).all(comp_ok)
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// `[\w][\w.-]{0,127}`.
fn tag_ok(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    t.len() <= 128 && t.starts_with(word) && t.chars().all(|c| word(c) || c == '.' || c == '-')
}

impl ImageRef {
    /// Parses a reference with docker's grammar and normalisation (distribution's
    /// `ParseNormalizedNamed`): the first component is a registry host when it holds `.` or
    /// `:`, is `localhost`, or has an upper-case letter; hosts keep their case (docker
    /// accepts `Registry.Example:5000/app`), repository paths must be lower case;
    /// `index.docker.io` is `docker.io`, whose one-component names get `library/`. Accepts
    /// what docker accepts and refuses what it refuses, saying why.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("image reference {s:?} is invalid: {why}"));
        if s.is_empty() {
            return bad("it is empty");
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return bad("it contains whitespace");
        }
        if s.len() == 64
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return bad("a 64-digit hexadecimal string is an image id, not a name");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !digest_ok(d) {
                    return bad("a digest looks like sha256:<64 hex digits>");
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !tag_ok(t) {
                    return bad("a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'");
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if !domain_ok(&domain) {
            return bad("a registry host is letters, digits, '-' and '.', with an optional :port");
        }
        if path.is_empty() {
            return bad("the repository name is empty");
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return bad("the repository name must be lower case (only the registry host may have upper-case letters)");
        }
        if !path.split('/').all(path_component_ok) {
            return bad(
                "repository names are lower-case letters and digits joined by '.', '_', '__' or '-'",
            );
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return bad("the name is longer than 255 characters");
        }
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `fromImage` for the Engine API's pull.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `tag` for the Engine API's pull: the digest, the tag, or `latest`.
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.repository().as_str(), r.tag_or_digest().as_str()),
            ("docker.io/library/busybox", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("1.2"))
        );
        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.domain, "localhost");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("myreg.azurecr.io/x@{d}")).unwrap();
        assert_eq!(r.tag_or_digest(), d);
        let r = ImageRef::parse("org/app:v1").unwrap();
        assert_eq!(r.repository(), "docker.io/org/app");
    }

    /// docker's reference grammar, case by case (distribution/reference's own tests and
    /// the engine's behaviour): what it accepts, normalised, and what it refuses.
    #[test]
    fn docker_grammar_table() {
        let hex = "a".repeat(64);
        let accepted = [
            ("busybox", "docker.io", "library/busybox", None),
            ("busybox:1.36", "docker.io", "library/busybox", Some("1.36")),
            ("docker.io/busybox", "docker.io", "library/busybox", None),
            (
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                None,
            ),
            (
                "index.docker.io/org/app:v1",
                "docker.io",
                "org/app",
                Some("v1"),
            ),
            (
                "Registry.Example:5000/team/app:1",
                "Registry.Example:5000",
                "team/app",
                Some("1"),
            ),
            (
                "MCR.microsoft.com/dotnet/runtime:8.0",
                "MCR.microsoft.com",
                "dotnet/runtime",
                Some("8.0"),
            ),
            ("Team/app", "Team", "app", None),
            ("localhost/app", "localhost", "app", None),
            (
                "localhost:5000/app:latest",
                "localhost:5000",
                "app",
                Some("latest"),
            ),
            ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", None),
            ("[::1]:5000/app:1", "[::1]:5000", "app", Some("1")),
            ("[2001:db8::1]/app", "[2001:db8::1]", "app", None),
            (
                "my-reg.example.com/a__b/c.d/e-f/g---h",
                "my-reg.example.com",
                "a__b/c.d/e-f/g---h",
                None,
            ),
            ("a_b:_tag", "docker.io", "library/a_b", Some("_tag")),
            ("x.io/app:V1.2-rc_3", "x.io", "app", Some("V1.2-rc_3")),
        ];
        for (s, domain, path, tag) in accepted {
            let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
                (domain, path, tag),
                "{s}"
            );
        }
        let r = ImageRef::parse(&format!("x.io/app:1@sha256:{hex}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.tag_or_digest()),
            (Some("1"), format!("sha256:{hex}"))
        );
        assert!(ImageRef::parse(&format!("app@sha512+b64.x:{}", "0".repeat(32))).is_ok());
        let refused = [
            ("", "empty"),
            ("a b", "whitespace"),
            ("MyImage", "lower case"),
            ("registry.example.com/Team/app", "lower case"),
            ("a..b", "joined"),
            ("a___b", "joined"),
            ("-a", "joined"),
            ("a-", "joined"),
            ("a/", "joined"),
            ("a//b", "joined"),
            ("a:", "tag"),
            ("a:.x", "tag"),
            ("a:-x", "tag"),
            ("host:abc/app", "registry host"),
            ("-host.io/app", "registry host"),
            ("host-.io/app", "registry host"),
            ("a@sha256:zz", "digest"),
            ("a@sha256:abc", "digest"),
            ("a@1sha:0123456789abcdef0123456789abcdef", "digest"),
        ];
        for (s, why) in refused {
            let e = ImageRef::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        assert!(ImageRef::parse(&hex).unwrap_err().contains("image id"));
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129)))
            .unwrap_err()
            .contains("tag"));
        assert!(ImageRef::parse(&format!("x.io/{}", "a".repeat(260)))
            .unwrap_err()
            .contains("255"));
    }

    #[test]
    fn bad_references_say_why() {
        // docker accepts a registry host with upper-case letters; only the path must be
        // lower case.
        assert_eq!(
            ImageRef::parse("mcr.Microsoft.com/x").unwrap().domain,
            "mcr.Microsoft.com"
        );
        assert!(ImageRef::parse("MyImage")
            .unwrap_err()
            .contains("lower case"));
        assert!(ImageRef::parse("a:").unwrap_err().contains("tag"));
        assert!(ImageRef::parse("a@sha256:zz")
            .unwrap_err()
            .contains("digest"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }
}
