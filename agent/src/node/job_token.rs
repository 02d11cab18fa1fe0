//! Job tokens: `AZ_BATCH_AUTHENTICATION_TOKEN` for a task whose
//! `authenticationTokenSettings.access` holds `job` (Batch REST `AuthenticationTokenSettings`).
//!
//! A token names its job and the job's creation time and is signed with HMAC-SHA256 under a
//! key the agent keeps in its state directory (`job-token.key`, 32 random bytes, mode
//! 0600). Nothing per token is stored: the API checks the signature, then that the job
//! still exists with that creation time and has not ended, so a token expires with its
//! job, and a job deleted and added again under the same id does not revive it. The
//! token is a `Secret`: it is never logged or printed.
//!
//! Shape: `bjt1.<job id, base64url>.<creation time, RFC 3339, base64url>.<HMAC, base64url>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use berth_proto::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;

const PREFIX: &str = "bjt1";
const KEY_LEN: usize = 32;

/// The agent's token key.
pub struct JobTokens {
    key: [u8; KEY_LEN],
}

/// Tokens for tasks, and the API address they are good at: set once the agent's TCP API
/// listens (`tcp_address`); without it no task can be given a token.
pub struct Issuer {
    pub tokens: JobTokens,
    /// `AZ_BATCH_ACCOUNT_URL`: `http://<tcp_address>`.
    pub account_url: String,
}

impl Issuer {
    /// The variables a task that asked for a job token gets (`AZ_BATCH_AUTHENTICATION_TOKEN`,
    /// `AZ_BATCH_ACCOUNT_URL`).
    pub fn env(
        &self,
        job_id: &str,
        created: chrono::DateTime<chrono::Utc>,
    ) -> [(String, Secret); 2] {
        [
            (
                "AZ_BATCH_AUTHENTICATION_TOKEN".into(),
                self.tokens.issue(job_id, created),
            ),
            (
                "AZ_BATCH_ACCOUNT_URL".into(),
                Secret::new(self.account_url.clone()),
            ),
        ]
    }
}

/// What a valid token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaim {
    pub job_id: String,
    pub created: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the job token key {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the job token key {0} is not {KEY_LEN} bytes")]
    Length(String),
}

impl JobTokens {
    /// Loads the key at `path`, creating it (0600, from the OS's random source) if absent.
    pub fn open(path: &Path) -> Result<JobTokens, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                    .map_err(|_| KeyError::Length(path.display().to_string()))?;
                return Ok(JobTokens { key });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut key = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .map_err(io)?;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&key).and_then(|()| f.sync_all()).map_err(io)?;
        Ok(JobTokens { key })
    }

    /// A key for tests.
    pub fn with_key(key: [u8; KEY_LEN]) -> JobTokens {
        JobTokens { key }
    }

    fn mac(&self, job: &str, created: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(job.as_bytes());
        m.update(b"\n");
        m.update(created.as_bytes());
        m
    }

    /// The token for the job `job_id` created at `created`.
    pub fn issue(&self, job_id: &str, created: chrono::DateTime<chrono::Utc>) -> Secret {
        let created = created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let sig = self.mac(job_id, &created).finalize().into_bytes();
        Secret::new(format!(
            "{PREFIX}.{}.{}.{}",
            B64.encode(job_id),
            B64.encode(&created),
            B64.encode(sig)
        ))
    }

    /// What `token` is good for, if it is one of this agent's (signature checked in
    /// constant time). Whether the job still exists is the caller's check.
    pub fn verify(&self, token: &str) -> Option<JobClaim> {
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(job), Some(created), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let job = String::from_utf8(B64.decode(job).ok()?).ok()?;
        let created = String::from_utf8(B64.decode(created).ok()?).ok()?;
        let sig = B64.decode(sig).ok()?;
        self.mac(&job, &created).verify_slice(&sig).ok()?;
        let created = chrono::DateTime::parse_from_rfc3339(&created)
            .ok()?
            .with_timezone(&chrono::Utc);
        Some(JobClaim {
            job_id: job,
            created,
        })
    }
}

/// Whether a job token's holder may make this request: its own job's GET, and its tasks'
/// reads and adds (Batch's job-scoped token allows job and task operations on that job).
pub fn allows(claim: &JobClaim, method: &http::Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/jobs/") else {
        return false;
    };
    let (job, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let job = percent_encoding::percent_decode_str(job).decode_utf8_lossy();
    if !job.eq_ignore_ascii_case(&claim.job_id) {
        return false;
    }
    let read = method == http::Method::GET || method == http::Method::HEAD;
    match rest {
        "" => read,
        "addtaskcollection" => method == http::Method::POST,
        "tasks" => read || method == http::Method::POST,
        r if r.starts_with("tasks/") => read || r.ends_with("/terminate"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_job_and_a_changed_byte_breaks_it() {
        let t = JobTokens::with_key([7; KEY_LEN]);
        let created = chrono::Utc::now();
        let token = t.issue("job:1", created);
        let claim = t.verify(token.expose()).unwrap();
        assert_eq!(claim.job_id, "job:1");
        assert_eq!(claim.created, created);
        // Another key, a changed job, or a truncated token: nothing.
        assert!(JobTokens::with_key([8; KEY_LEN])
            .verify(token.expose())
            .is_none());
        let parts: Vec<&str> = token.expose().split('.').collect();
        let other = format!(
            "{}.{}.{}.{}",
            parts[0],
            B64.encode("job:2"),
            parts[2],
            parts[3]
        );
        assert!(t.verify(&other).is_none());
        assert!(t
            .verify(&token.expose()[..token.expose().len() - 2])
            .is_none());
        assert!(t.verify("bjt1.a.b").is_none());
        // Never printed.
        assert_eq!(format!("{token:?}"), "<redacted>");
    }

    #[test]
    fn a_job_token_reaches_its_own_job_only() {
        let claim = JobClaim {
            job_id: "Mine".into(),
            created: chrono::Utc::now(),
        };
        let get = http::Method::GET;
        let post = http::Method::POST;
        for (m, p, ok) in [
            (&get, "/jobs/mine", true),
            (&post, "/jobs/mine/tasks", true),
            (&post, "/jobs/mine/addtaskcollection", true),
            (&get, "/jobs/mine/tasks/t1", true),
            (&get, "/jobs/mine/tasks/t1/files/stdout.txt", true),
            (&post, "/jobs/mine/tasks/t1/terminate", true),
            (&post, "/jobs/mine/terminate", false),
            (&http::Method::DELETE, "/jobs/mine", false),
            (&get, "/jobs/other/tasks", false),
            (&get, "/jobs", false),
            (&get, "/node", false),
            (&get, "/metrics", false),
        ] {
            assert_eq!(allows(&claim, m, p), ok, "{m} {p}");
        }
    }
}
