//! Which credentials pull an image: the task's `containerSettings.registry` when it serves
//! the image's host, else the pool's `containerRegistries` entry for that host, else the
//! Docker `config.json` of the agent's user (`auths`, `credHelpers`, `credsStore`), else
//! none (anonymous). The first two are pure; the last reads a file and may run a helper.

use crate::engine::Credentials;
use crate::error_chain::Cause;
use berth_proto::{ContainerRegistry, ImageRef, Secret};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A credential helper that hangs must not hold a pull forever.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A Docker config that could not be read or asked. Its causes never hold the file's or
/// a helper's output: they may hold the secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("docker config {path}: cannot read")]
    Read {
        path: String,
        #[source]
        source: Cause,
    },
    /// The file or its credential helper answered with an error.
    #[error("docker config {path}")]
    Lookup {
        path: String,
        #[source]
        source: Cause,
    },
    #[error("docker config {path}: the credential helper did not answer within {secs} s")]
    HelperTimeout { path: String, secs: u64 },
}

/// Docker Hub answers to several names; other hosts compare case-insensitively.
pub fn canonical_host(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let s = s
        .strip_suffix("/v1")
        .or_else(|| s.strip_suffix("/v2"))
        .unwrap_or(s);
    match s.to_ascii_lowercase().as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        other => other.into(),
    }
}

/// The task's registry if it serves the image, else the pool's entry for that host.
pub fn from_batch(
    image: &ImageRef,
    task: Option<&ContainerRegistry>,
    pool: &[ContainerRegistry],
) -> Option<Credentials> {
    let host = canonical_host(&image.domain);
    task.into_iter()
        .chain(pool.iter())
        .find(|r| canonical_host(r.server()) == host && r.username.is_some())
        .map(|r| Credentials {
            server: r.server().to_string(),
            username: r.username.clone().unwrap_or_default(),
            password: r.password.clone().unwrap_or_default(),
            identity_token: None,
        })
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The key Docker writes for a host in `config.json`.
fn config_key(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".into()
    } else {
        host.into()
    }
}

/// Looks `image`'s host up in the Docker config at `path` (blocking: may run a helper).
/// A missing file or an unconfigured host is `Ok(None)`.
pub fn from_docker_config(
    path: &Path,
    image: &ImageRef,
) -> Result<Option<Credentials>, ConfigError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::Read {
                path: shown(),
                source: Cause::new(e),
            })
        }
    };
    let host = canonical_host(&image.domain);
    let key = config_key(&host);
    let c = match docker_credential::get_credential_from_reader(&bytes[..], &key) {
        Ok(c) => c,
        Err(E::NoCredentialConfigured) => return Ok(None),
        // A credential store that knows nothing of this host answers with a failure.
        Err(E::HelperFailure { helper, stderr, .. }) => {
            tracing::debug!(
                host,
                helper,
                stderr = stderr.trim(),
                "credential helper has no entry"
            );
            return Ok(None);
        }
        // Never echo helper output or file content: they may hold the secret. The other
        // errors name the problem only.
        Err(e) => {
            return Err(ConfigError::Lookup {
                path: shown(),
                source: Cause::new(e),
            })
        }
    };
    Ok(Some(match c {
        DockerCredential::IdentityToken(t) => Credentials {
            server: key,
            username: String::new(),
            password: Secret::default(),
            identity_token: Some(Secret::new(t)),
        },
        DockerCredential::UsernamePassword(u, p) => Credentials {
            server: key,
            username: u,
            password: Secret::new(p),
            identity_token: None,
        },
    }))
}

/// A Docker config file, with its answers per registry host kept for `CACHE_FOR`, so that
/// a burst of tasks reads the file (and runs a helper) once, not once per task. Errors are
/// not kept.
pub struct DockerConfig {
    path: PathBuf,
    cache: Mutex<HashMap<String, (Instant, Option<Credentials>)>>,
}

/// Long enough for a burst of tasks, short enough for rotated helper tokens.
const CACHE_FOR: Duration = Duration::from_secs(300);

impl DockerConfig {
    pub fn new(path: PathBuf) -> Self {
        DockerConfig {
            path,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn lookup(&self, image: &ImageRef) -> Result<Option<Credentials>, ConfigError> {
        let host = canonical_host(&image.domain);
        if let Some((at, c)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
        {
            if at.elapsed() < CACHE_FOR {
                return Ok(c.clone());
            }
        }
        let (path, img) = (self.path.clone(), image.clone());
        let shown = path.display().to_string();
        let job = tokio::task::spawn_blocking(move || from_docker_config(&path, &img));
        let found = match tokio::time::timeout(HELPER_TIMEOUT, job).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => {
                return Err(ConfigError::Lookup {
                    path: shown,
                    source: Cause::new(e),
                })
            }
            Err(_) => {
                return Err(ConfigError::HelperTimeout {
                    path: shown,
                    secs: HELPER_TIMEOUT.as_secs(),
                })
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host, (Instant::now(), found.clone()));
        Ok(found)
    }
}

/// The credentials berth uses for `image`, in the order the module doc gives.
pub async fn resolve(
    image: &ImageRef,
    task: Option<&ContainerRegistry>,
    pool: &[ContainerRegistry],
    docker_config: Option<&DockerConfig>,
) -> Result<Option<Credentials>, ConfigError> {
    match from_batch(image, task, pool) {
        Some(c) => Ok(Some(c)),
        None => match docker_config {
            Some(d) => d.lookup(image).await,
            None => Ok(None),
        },
    }
}

/// A stable, non-reversible name for a set of credentials (which pulls may share).
pub fn fingerprint(c: Option<&Credentials>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(server: &str) -> ContainerRegistry {
        serde_json::from_value(
            serde_json::json!({"registryServer": server, "username": "u", "password": "p"}),
        )
        .unwrap()
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn batch_credentials_follow_the_image_host() {
        let pool = vec![reg("127.0.0.1:5000"), reg("index.docker.io")];
        let c = from_batch(&img("127.0.0.1:5000/a:1"), None, &pool).unwrap();
        assert_eq!(c.server, "127.0.0.1:5000");
        let c = from_batch(&img("org/private"), None, &pool).unwrap();
        assert_eq!(c.server, "index.docker.io", "Docker Hub's aliases match");
        assert!(from_batch(&img("other.io/x"), None, &pool).is_none());
        assert!(from_batch(&img("other.io/x"), Some(&reg("https://Other.IO/")), &pool).is_some());
        let task = reg("127.0.0.1:5000");
        let mut t = task.clone();
        t.username = Some("taskuser".into());
        assert_eq!(
            from_batch(&img("127.0.0.1:5000/a"), Some(&t), &pool)
                .unwrap()
                .username,
            "taskuser",
            "the task's registry wins over the pool's"
        );
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn docker_config_auths_helpers_and_store() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config.json");
        assert!(
            from_docker_config(&cfg, &img("x.io/a")).unwrap().is_none(),
            "no file, no credentials"
        );
        // base64("cu:abc>>>def?/+")
        let auth = "Y3U6YWJjPj4+ZGVmPy8r";
        std::fs::write(
            &cfg,
            format!(r#"{{"auths": {{"x.io": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        let c = from_docker_config(&cfg, &img("x.io/a")).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("cu", "abc>>>def?/+")
        );
        let hub = from_docker_config(&cfg, &img("library/busybox"))
            .unwrap()
            .unwrap();
        assert_eq!(hub.server, "https://index.docker.io/v1/");
        assert!(from_docker_config(&cfg, &img("y.io/a")).unwrap().is_none());
        // A helper that is not installed is an error that names the file, not the secret.
        std::fs::write(&cfg, r#"{"credHelpers": {"x.io": "berth-test-none"}}"#).unwrap();
        let e = from_docker_config(&cfg, &img("x.io/a")).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        std::fs::write(&cfg, "{not json").unwrap();
        assert!(from_docker_config(&cfg, &img("x.io/a")).is_err());
    }

    #[test]
    fn fingerprints_differ_by_secret() {
        let a = from_batch(&img("h.io/a"), Some(&reg("h.io")), &[]);
        let mut b = a.clone();
        b.as_mut().unwrap().password = Secret::new("other");
        assert_ne!(fingerprint(a.as_ref()), fingerprint(b.as_ref()));
        assert_eq!(fingerprint(a.as_ref()), fingerprint(a.clone().as_ref()));
        assert_ne!(fingerprint(None), fingerprint(a.as_ref()));
    }
}
