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

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("image reference {s:?} is invalid: {why}"));
        if s.is_empty() {
            return bad("it is empty");
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return bad("it contains whitespace");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let Some((algo, hex)) = d.split_once(':') else {
                    return bad("a digest looks like sha256:<64 hex digits>");
                };
                if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit())
                {
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
                let ok = !t.is_empty()
                    && t.len() <= 128
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                    && !t.starts_with(['.', '-']);
                if !ok {
                    return bad("a tag is 1-128 of letters, digits, '_', '.', '-'");
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if domain.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "image reference {s:?} is invalid: registry host {domain:?} has upper-case letters; write it as {:?}",
                domain.to_ascii_lowercase()
            ));
        }
        if path.is_empty() {
            return bad("the repository name is empty");
        }
        for comp in path.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && comp.starts_with(|c: char| c.is_ascii_alphanumeric())
                && comp.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return bad(
                    "repository names are lower-case letters, digits and single '.', '_' or '-' separators",
                );
            }
        }
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

    #[test]
    fn bad_references_say_why() {
        assert!(ImageRef::parse("mcr.Microsoft.com/x")
            .unwrap_err()
            .contains("\"mcr.microsoft.com\""));
        assert!(ImageRef::parse("MyImage")
            .unwrap_err()
            .contains("lower-case"));
        assert!(ImageRef::parse("a:").unwrap_err().contains("tag"));
        assert!(ImageRef::parse("a@sha256:zz")
            .unwrap_err()
            .contains("digest"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }
}
