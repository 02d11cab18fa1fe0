//! Making images present: one pull per image at a time (waiters share the result),
//! credentials from the task's or the pool's registry entries, and retries with backoff for
//! transient failures only. Pull progress goes to the log.

use crate::engine::{Credentials, Engine, EngineError};
use crate::task::run_options::PullPolicy;
use berth_proto::{ContainerRegistry, ImageRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PullError {
    pub image: String,
    pub message: String,
}

/// Docker Hub answers to several names.
fn same_registry(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let s = s
            .strip_suffix("/v1")
            .or_else(|| s.strip_suffix("/v2"))
            .unwrap_or(s);
        match s {
            "docker.io"
            | "index.docker.io"
            | "registry-1.docker.io"
            | "registry.hub.docker.com" => "docker.io".to_string(),
            other => other.to_ascii_lowercase(),
        }
    };
    norm(a) == norm(b)
}

/// The credentials for `image`: the task's registry if it serves the image, else the
/// pool's entry for that server, else none (anonymous).
pub fn credentials_for(
    image: &ImageRef,
    task: Option<&ContainerRegistry>,
    pool: &[ContainerRegistry],
) -> Option<Credentials> {
    task.into_iter()
        .chain(pool.iter())
        .find(|r| same_registry(r.server(), &image.domain) && r.username.is_some())
        .map(|r| Credentials {
            server: r.server().to_string(),
            username: r.username.clone().unwrap_or_default(),
            password: r.password.clone().unwrap_or_default(),
        })
}

fn is_permanent(e: &EngineError) -> bool {
    let m = e.message().to_ascii_lowercase();
    let permanent_words = [
        "unauthorized",
        "denied",
        "not found",
        "manifest unknown",
        "no such",
        "invalid reference",
        "authentication required",
        "does not exist",
        "invalid",
    ];
    matches!(e, EngineError::NotFound(_))
        || permanent_words.iter().any(|w| m.contains(w))
        || !e.is_transient() && !matches!(e, EngineError::Stream(_))
}

pub struct ImageStore {
    engine: Engine,
    registries: Vec<ContainerRegistry>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Transient failures are retried this many times.
    pub retries: u32,
}

impl ImageStore {
    pub fn new(engine: Engine, registries: Vec<ContainerRegistry>) -> Self {
        ImageStore {
            engine,
            registries,
            locks: Mutex::new(HashMap::new()),
            retries: 3,
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }

    /// Makes `image` present according to `policy`.
    pub async fn ensure(
        &self,
        image: &str,
        task_registry: Option<&ContainerRegistry>,
        policy: PullPolicy,
        platform: Option<&str>,
    ) -> Result<(), PullError> {
        let fail = |message: String| PullError {
            image: image.to_string(),
            message,
        };
        let r = ImageRef::parse(image).map_err(fail)?;
        let present = |e: EngineError| fail(format!("cannot inspect image: {e}"));
        if policy == PullPolicy::Never {
            return if self.engine.image_present(image).await.map_err(present)? {
                Ok(())
            } else {
                Err(fail(format!(
                    "No such image: {image} (and --pull never forbids pulling it)"
                )))
            };
        }
        let lock = self.lock_for(&r.to_string());
        let _held = lock.lock().await;
        if policy == PullPolicy::Missing
            && self.engine.image_present(image).await.map_err(present)?
        {
            return Ok(());
        }
        let creds = credentials_for(&r, task_registry, &self.registries);
        let mut delay = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::info!(image, attempt, "pulling image");
            let started = tokio::time::Instant::now();
            let mut layers: HashMap<String, String> = HashMap::new();
            let res = self
                .engine
                .pull(
                    &r.repository(),
                    &r.tag_or_digest(),
                    platform,
                    creds.as_ref(),
                    |ev| {
                        if let (Some(layer), Some(status)) = (ev.layer, ev.status) {
                            if layers.get(&layer) != Some(&status) {
                                tracing::debug!(
                                    image,
                                    layer,
                                    status,
                                    current = ev.current,
                                    total = ev.total,
                                    "pull progress"
                                );
                                layers.insert(layer, status);
                            }
                        }
                    },
                )
                .await;
            match res {
                Ok(()) => {
                    tracing::info!(
                        image,
                        secs = started.elapsed().as_secs_f64(),
                        "pulled image"
                    );
                    return Ok(());
                }
                Err(e) if attempt <= self.retries && !is_permanent(&e) => {
                    tracing::warn!(image, attempt, error = %e.message(), "pull failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(fail(e.message())),
            }
        }
    }
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

    #[test]
    fn credentials_follow_the_image_host() {
        let pool = vec![reg("127.0.0.1:5000"), reg("index.docker.io")];
        let c =
            credentials_for(&ImageRef::parse("127.0.0.1:5000/a:1").unwrap(), None, &pool).unwrap();
        assert_eq!(c.server, "127.0.0.1:5000");
        let c = credentials_for(&ImageRef::parse("org/private").unwrap(), None, &pool).unwrap();
        assert_eq!(c.server, "index.docker.io", "Docker Hub's aliases match");
        assert!(credentials_for(&ImageRef::parse("other.io/x").unwrap(), None, &pool).is_none());
        let task = reg("other.io");
        assert_eq!(
            credentials_for(&ImageRef::parse("other.io/x").unwrap(), Some(&task), &pool)
                .unwrap()
                .server,
            "other.io"
        );
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn permanence() {
        assert!(is_permanent(&EngineError::NotFound("x".into())));
        assert!(is_permanent(&EngineError::Refused {
            status: 500,
            message: "unauthorized: authentication required".into()
        }));
        assert!(!is_permanent(&EngineError::Refused {
            status: 503,
            message: "server busy".into()
        }));
        assert!(!is_permanent(&EngineError::Unavailable(
            "connection refused".into()
        )));
    }
}
