//! Making images present. One pull per image at a time, however many tasks want it: the
//! first caller starts a pull (its own tokio task, so a cancelled caller does not cancel
//! the others) and everyone else awaits the same shared result. Transient failures are
//! retried with backoff; permanent ones (unknown image, unauthorized) fail at once with the
//! registry's words. Each attempt has a first-progress and an inactivity limit, and all
//! attempts together a total limit; no generic HTTP timeout applies to pulls.
//!
//! A private image (one berth pulled with credentials) that is already on the node is
//! reused for a task only once the registry has accepted that task's credentials for it.

use super::credentials::{self, fingerprint};
use super::progress::{LogObserver, PullObserver, PullUpdate};
use crate::backoff::Backoff;
use crate::engine::{Credentials, EngineError, PullEvent, PullLimits, SharedEngine};
use crate::error_chain::Cause;
use berth_proto::{ContainerRegistry, FailureCode, ImageRef};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the image is fetched before create (`--pull` in `containerRunOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// Retry and time limits of pulls (defaults after amazon-ecs-agent and Nomad, see README).
#[derive(Debug, Clone, Copy)]
pub struct PullSettings {
    /// Transient failures are retried this many times.
    pub retries: u32,
    /// The first retry waits this long; each next one twice as long (at most a minute).
    pub backoff: Duration,
    pub first_progress: Duration,
    pub inactivity: Duration,
    /// All attempts of one pull together.
    pub total: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            retries: 4,
            backoff: Duration::from_secs(1),
            first_progress: Duration::from_secs(300),
            inactivity: Duration::from_secs(120),
            total: Duration::from_secs(2 * 3600),
        }
    }
}

/// Why an image could not be made present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// The reference does not parse.
    Reference,
    /// The registry refused the credentials (or their absence).
    Auth,
    /// The registry or engine does not know the image.
    NotFound,
    /// A pull limit ran out.
    Timeout,
    /// `--pull never` and the image is absent.
    Absent,
    /// The Docker config could not be read.
    Config,
    /// The Docker engine itself did not answer: nothing is wrong with the image.
    Engine,
    Other,
}

/// A pull that failed. `message` is what failed, or the registry's own words passed on by
/// the engine (data, not a cause); an error of berth's side (the engine not answering,
/// the Docker config) is kept as `source`. Shown to users through `error_chain::chain`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PullError {
    pub image: String,
    pub kind: PullFailure,
    pub message: String,
    #[source]
    pub source: Option<Cause>,
}

impl PullError {
    /// The Batch failure code: registry (credential) problems are `ContainerInvalidRegistry`,
    /// an engine that does not answer `ContainerMiscError` (as at create), everything else
    /// `ContainerInvalidImage`.
    pub fn code(&self) -> FailureCode {
        match self.kind {
            PullFailure::Auth | PullFailure::Config => FailureCode::ContainerInvalidRegistry,
            PullFailure::Engine => FailureCode::ContainerMiscError,
            _ => FailureCode::ContainerInvalidImage,
        }
    }
}

/// Sorts an engine error into a failure kind, and whether retrying could help.
/// The engine classified the error (`engine::docker::classify_pull`); this only maps it.
fn classify(e: &EngineError) -> (PullFailure, bool) {
    match e {
        EngineError::Unavailable(_) => (PullFailure::Engine, true),
        EngineError::RegistryDenied(_) => (PullFailure::Auth, false),
        EngineError::ImageNotFound(_) | EngineError::NotFound(_) => (PullFailure::NotFound, false),
        EngineError::PullStalled { .. } => (PullFailure::Timeout, true),
        other => (PullFailure::Other, other.is_transient()),
    }
}

/// The pull's identity: image, platform and credentials (different credentials may see
/// different outcomes, so they do not share).
type PullKey = (String, Option<String>, u64);
type SharedPull = Shared<BoxFuture<'static, Result<(), PullError>>>;

/// `repo:tag` or `repo@digest`, with the registry host spelled out.
pub fn canonical(r: &ImageRef) -> String {
    match &r.digest {
        Some(d) => format!("{}@{d}", r.repository()),
        None => format!("{}:{}", r.repository(), r.tag_or_digest()),
    }
}

/// Images berth pulled with credentials, kept in a file (no secrets: names only) so that a
/// later `berth run` on the same node still knows them.
struct PrivateImages {
    file: Option<PathBuf>,
    set: Mutex<BTreeSet<String>>,
}

impl PrivateImages {
    fn load(file: Option<PathBuf>) -> Self {
        let set = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        PrivateImages {
            file,
            set: Mutex::new(set),
        }
    }

    fn contains(&self, image: &str) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(image)
    }

    fn insert(&self, image: &str) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(image.to_string()) {
            return;
        }
        let Some(f) = &self.file else { return };
        let body: String = set.iter().map(|s| format!("{s}\n")).collect();
        let tmp = f.with_extension("tmp");
        let r = f
            .parent()
            .map(|d| crate::node::layout::make_agent_dirs(d, 0o755))
            .unwrap_or(Ok(()))
            .and_then(|_| std::fs::write(&tmp, body))
            .and_then(|_| std::fs::rename(&tmp, f));
        if let Err(e) = r {
            tracing::warn!(file = %f.display(), error = %e, "could not record a private image");
        }
    }
}

pub struct ImageStore {
    engine: SharedEngine,
    registries: Vec<ContainerRegistry>,
    docker_config: Option<credentials::DockerConfig>,
    settings: PullSettings,
    observer: Arc<dyn PullObserver>,
    pulls: Mutex<HashMap<PullKey, SharedPull>>,
    private: PrivateImages,
    /// (image, credentials) pairs the registry accepted in this process.
    verified: Mutex<HashSet<(String, u64)>>,
    /// (image, platform) pairs the engine said it has, in this process: not asked again
    /// for every task. An image removed since fails the create, which [`ImageStore::forget`]s
    /// it and ensures it again.
    present: Mutex<HashSet<(String, Option<String>)>>,
}

impl ImageStore {
    pub fn new(engine: SharedEngine, registries: Vec<ContainerRegistry>) -> Self {
        ImageStore {
            engine,
            registries,
            docker_config: credentials::default_config_path().map(credentials::DockerConfig::new),
            settings: PullSettings::default(),
            observer: Arc::new(LogObserver::default()),
            pulls: Mutex::new(HashMap::new()),
            private: PrivateImages::load(None),
            verified: Mutex::new(HashSet::new()),
            present: Mutex::new(HashSet::new()),
        }
    }

    pub fn with_settings(mut self, s: PullSettings) -> Self {
        self.settings = s;
        self
    }

    pub fn with_observer(mut self, o: Arc<dyn PullObserver>) -> Self {
        self.observer = o;
        self
    }

    /// Where the names of private images are kept across runs.
    pub fn with_state_file(mut self, f: PathBuf) -> Self {
        self.private = PrivateImages::load(Some(f));
        self
    }

    pub fn with_docker_config(mut self, f: Option<PathBuf>) -> Self {
        self.docker_config = f.map(credentials::DockerConfig::new);
        self
    }

    pub fn settings(&self) -> &PullSettings {
        &self.settings
    }

    /// Makes `image` present according to `policy`, with the credentials the task (or the
    /// pool, or the Docker config) gives for its registry.
    pub async fn ensure(
        self: &Arc<Self>,
        image: &str,
        task_registry: Option<&ContainerRegistry>,
        policy: PullPolicy,
        platform: Option<&str>,
    ) -> Result<(), PullError> {
        let fail = |kind, message: String, source: Option<Cause>| PullError {
            image: image.to_string(),
            kind,
            message,
            source,
        };
        let r = ImageRef::parse(image).map_err(|m| fail(PullFailure::Reference, m, None))?;
        let name = canonical(&r);
        let creds = credentials::resolve(
            &r,
            task_registry,
            &self.registries,
            self.docker_config.as_ref(),
        )
        .await
        .map_err(|e| {
            fail(
                PullFailure::Config,
                "cannot look up the registry's credentials".into(),
                Some(Cause::new(e)),
            )
        })?;
        let fp = fingerprint(creds.as_ref());
        let key: PullKey = (name.clone(), platform.map(str::to_string), fp);
        if policy != PullPolicy::Always {
            if let Some(p) = self.joinable(&key) {
                return p.await;
            }
            let seen = (name.clone(), key.1.clone());
            if self.lock_present().contains(&seen) {
                return self.check_access(image, &name, creds.as_ref(), fp).await;
            }
            let present = self.engine.image_present(&name).await.map_err(|e| {
                let (kind, what) = if e.is_engine_down() {
                    (PullFailure::Engine, "the Docker engine does not answer")
                } else {
                    (PullFailure::Other, "cannot inspect image")
                };
                fail(kind, what.into(), Some(Cause::new(e)))
            })?;
            if present {
                self.lock_present().insert(seen);
                return self.check_access(image, &name, creds.as_ref(), fp).await;
            }
            if policy == PullPolicy::Never {
                return Err(fail(
                    PullFailure::Absent,
                    format!("No such image: {image} (and --pull never forbids pulling it)"),
                    None,
                ));
            }
        }
        self.shared_pull(key, r, creds).await
    }

    fn lock_present(&self) -> std::sync::MutexGuard<'_, HashSet<(String, Option<String>)>> {
        self.present.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets that `image` (for `platform`) is present, after the engine said it is not
    /// (removed since it was seen or pulled): the next [`ImageStore::ensure`] asks the engine
    /// again and pulls it if need be. Returns whether it was known present.
    pub fn forget(&self, image: &str, platform: Option<&str>) -> bool {
        let Ok(r) = ImageRef::parse(image) else {
            return false;
        };
        let name = canonical(&r);
        let platform = platform.map(str::to_string);
        let seen = self
            .lock_present()
            .remove(&(name.clone(), platform.clone()));
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let before = pulls.len();
        pulls.retain(|(n, p, _), pull| {
            !(n == &name && p == &platform && matches!(pull.peek(), Some(Ok(()))))
        });
        seen || pulls.len() < before
    }

    /// A pull of `key` that is running, or finished well (the image is then present).
    fn joinable(&self, key: &PullKey) -> Option<SharedPull> {
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        pulls
            .get(key)
            .filter(|p| !matches!(p.peek(), Some(Err(_))))
            .cloned()
    }

    fn shared_pull(
        self: &Arc<Self>,
        key: PullKey,
        r: ImageRef,
        creds: Option<Credentials>,
    ) -> SharedPull {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pulls.get(&key).filter(|p| p.peek().is_none()) {
            return p.clone();
        }
        let me = self.clone();
        let k = key.clone();
        let job = tokio::spawn(async move { me.pull(&k, &r, creds.as_ref()).await });
        let image = key.0.clone();
        let fut = async move {
            job.await.unwrap_or_else(|e| {
                Err(PullError {
                    image,
                    kind: PullFailure::Other,
                    message: "the pull stopped".into(),
                    source: Some(Cause::new(e)),
                })
            })
        }
        .boxed()
        .shared();
        pulls.insert(key, fut.clone());
        fut
    }

    /// Pulls with retries and limits; records private images and accepted credentials.
    async fn pull(
        &self,
        key: &PullKey,
        r: &ImageRef,
        creds: Option<&Credentials>,
    ) -> Result<(), PullError> {
        let (name, platform, fp) = (key.0.as_str(), key.1.as_deref(), key.2);
        let s = self.settings;
        let limits = PullLimits {
            first_progress: s.first_progress,
            inactivity: s.inactivity,
        };
        let fail = |kind, message: String| {
            self.observer.update(&PullUpdate::Failed {
                image: name,
                error: &message,
            });
            Err(PullError {
                image: name.to_string(),
                kind,
                message,
                source: None,
            })
        };
        let started = tokio::time::Instant::now();
        let deadline = started + s.total;
        let mut delay = Backoff::new(s.backoff, Duration::from_secs(60));
        let (repo, tag) = (r.repository(), r.tag_or_digest());
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.observer.update(&PullUpdate::Started {
                image: name,
                attempt,
            });
            let mut progress = |ev: PullEvent| {
                if let Some(status) = ev.status.as_deref() {
                    self.observer.update(&PullUpdate::Layer {
                        image: name,
                        layer: ev.layer.as_deref().unwrap_or(""),
                        status,
                        current: ev.current,
                        total: ev.total,
                    });
                }
            };
            let pull = self
                .engine
                .pull(&repo, &tag, platform, creds, limits, &mut progress);
            let e = match tokio::time::timeout_at(deadline, pull).await {
                Err(_) => {
                    return fail(
                        PullFailure::Timeout,
                        format!(
                            "the pull did not finish within its total limit of {} s",
                            s.total.as_secs()
                        ),
                    )
                }
                Ok(Ok(())) => {
                    self.observer.update(&PullUpdate::Done {
                        image: name,
                        secs: started.elapsed().as_secs_f64(),
                    });
                    if creds.is_some() {
                        self.private.insert(name);
                    }
                    self.verified
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((name.to_string(), fp));
                    return Ok(());
                }
                Ok(Err(e)) => e,
            };
            let (kind, transient) = classify(&e);
            let wait = jitter(delay.next_delay());
            if !transient || attempt > s.retries || tokio::time::Instant::now() + wait >= deadline {
                let tries = if attempt > 1 {
                    format!(" (after {attempt} attempts)")
                } else {
                    String::new()
                };
                return fail(kind, format!("{}{tries}", e.message()));
            }
            self.observer.update(&PullUpdate::Retrying {
                image: name,
                attempt,
                error: &e.message(),
                delay: wait,
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// A present image may be used: public ones always, private ones once the registry has
    /// accepted these credentials for it.
    async fn check_access(
        &self,
        image: &str,
        name: &str,
        creds: Option<&Credentials>,
        fp: u64,
    ) -> Result<(), PullError> {
        if !self.private.contains(name) {
            return Ok(());
        }
        let key = (name.to_string(), fp);
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        match self.engine.registry_check(name, creds).await {
            Ok(digest) => {
                tracing::debug!(
                    image,
                    digest,
                    "registry accepted the task's credentials for a private image on the node"
                );
                self.verified
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                Ok(())
            }
            Err(e) => {
                let (kind, _) = classify(&e);
                Err(PullError {
                    image: image.to_string(),
                    kind: if kind == PullFailure::NotFound { kind } else { PullFailure::Auth },
                    message: format!(
                        "{image} is on this node from a private registry, and the registry did not accept this task's credentials for it: {}",
                        e.message()
                    ),
                    source: None,
                })
            }
        }
    }
}

/// ±20% so that many nodes retrying the same registry spread out.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let f = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted() {
        // The engine seam reads the registry's words (classify_pull); this maps its class.
        let classify = |e: &EngineError| super::classify(&crate::engine::classify_pull(e.clone()));
        let refused = |status, m: &str| EngineError::Refused {
            status,
            message: m.into(),
        };
        assert_eq!(
            classify(&EngineError::NotFound("x".into())),
            (PullFailure::NotFound, false)
        );
        assert_eq!(
            classify(&refused(
                500,
                "Head \"http://r/v2/a/manifests/1\": unauthorized: authentication required"
            )),
            (PullFailure::Auth, false)
        );
        assert_eq!(
            classify(&refused(
                404,
                "manifest for r/a:1 not found: manifest unknown"
            ))
            .0,
            PullFailure::NotFound
        );
        assert_eq!(
            classify(&refused(
                500,
                "Get \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused"
            )),
            (PullFailure::Other, true)
        );
        assert_eq!(
            classify(&refused(503, "server busy")),
            (PullFailure::Other, true)
        );
        assert_eq!(
            classify(&EngineError::Stream("toomanyrequests: slow down".into())),
            (PullFailure::Other, true)
        );
        assert_eq!(
            classify(&EngineError::PullStalled {
                limit: "inactivity",
                secs: 1.0
            }),
            (PullFailure::Timeout, true)
        );
        assert_eq!(
            classify(&refused(400, "invalid reference format")),
            (PullFailure::Other, false)
        );
        assert_eq!(
            super::classify(&EngineError::RegistryDenied("x".into())),
            (PullFailure::Auth, false)
        );
        assert_eq!(
            super::classify(&EngineError::ImageNotFound("x".into())),
            (PullFailure::NotFound, false)
        );
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            canonical(&ImageRef::parse("busybox").unwrap()),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canonical(&ImageRef::parse("127.0.0.1:5000/a/b:2").unwrap()),
            "127.0.0.1:5000/a/b:2"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            canonical(&ImageRef::parse(&format!("x.io/a:1@{d}")).unwrap()),
            format!("x.io/a@{d}")
        );
    }

    #[test]
    fn codes() {
        let e = |kind| PullError {
            image: "i".into(),
            kind,
            message: "m".into(),
            source: None,
        };
        assert_eq!(
            e(PullFailure::Auth).code(),
            FailureCode::ContainerInvalidRegistry
        );
        assert_eq!(
            e(PullFailure::NotFound).code(),
            FailureCode::ContainerInvalidImage
        );
        assert_eq!(
            e(PullFailure::Timeout).code(),
            FailureCode::ContainerInvalidImage
        );
        assert_eq!(
            e(PullFailure::Engine).code(),
            FailureCode::ContainerMiscError,
            "the image is not at fault"
        );
        let away = EngineError::Unavailable(Cause::msg("client error (Connect)"));
        assert_eq!(classify(&away), (PullFailure::Engine, true));
    }

    /// A stopped dockerd (its socket file left, nothing listening) fails the task as the
    /// engine's fault, not the image's.
    #[tokio::test]
    async fn an_engine_that_does_not_answer_is_not_the_images_fault() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let host = format!("unix://{}", sock.display());
        let engine = crate::engine::Docker::open(Some(&host), Duration::from_secs(5)).unwrap();
        let store = Arc::new(ImageStore::new(Arc::new(engine), vec![]));
        let e = store
            .ensure("busybox:latest", None, PullPolicy::Missing, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), FailureCode::ContainerMiscError, "{e}");
        assert!(e.message.contains("does not answer"), "{e}");
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let j = jitter(Duration::from_secs(10));
        assert!(
            j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
            "{j:?}"
        );
    }

    #[test]
    fn private_images_survive_in_their_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("state").join("private-images");
        let p = PrivateImages::load(Some(f.clone()));
        p.insert("r/a:1");
        p.insert("r/a:1");
        let again = PrivateImages::load(Some(f.clone()));
        assert!(again.contains("r/a:1") && !again.contains("r/b:1"));
        assert_eq!(std::fs::read_to_string(f).unwrap(), "r/a:1\n");
    }
}
