//! [`Fake`]: an [`Engine`] in memory, for unit tests of the logic above the seam and for
//! node simulations. A container "runs" for its [`Script`]'s time on tokio's clock (so a
//! test with paused time takes none), has its output from the moment it starts, and exits
//! with the scripted code. Its log store may hold less or other bytes than it wrote
//! ([`LogStore`]: rotated, rewritten, none), and its own stream may break off. Faults are
//! scripted per operation; every call is recorded (`logs` for each read of the store).
//!
//! It keeps the [`Engine`] contract where berth relies on it: create removes a leftover
//! container holding the name, stop and remove of a stopped or gone container succeed,
//! `wait` answers at once for an exited container, a follow stream ends when the container
//! stops, an attach to an exited container sends nothing and never ends (as dockerd's
//! waits for a start), and an engine taken down fails every call and every wait in flight.

use super::{
    ContainerState, ContainerSummary, Credentials, Engine, EngineError, Output, OutputStream,
    PullEvent, PullLimits,
};
use bollard::models::ContainerCreateBody;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a fake container does once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// How long its process runs before it exits by itself.
    pub run_for: Duration,
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The kernel's OOM killer ended it (exit code 137, `oom_killed` in inspect).
    pub oom_killed: bool,
    /// The exit code on SIGTERM (stop); `None`: it ignores SIGTERM and is killed (137)
    /// once the stop's grace has passed.
    pub on_term: Option<i64>,
    /// What the engine's log store gives back of the output.
    pub log: LogStore,
    /// The live (attach) stream sends this many bytes of stdout, then ends with an engine
    /// error (a cut connection, the engine's error frame); the rest never comes.
    pub live_breaks_after: Option<usize>,
}

/// What a fake container's log store holds (the real one depends on the log driver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogStore {
    /// Every byte as written.
    #[default]
    Whole,
    /// These bytes instead: a rotated store's tail, or text with U+FFFD for bytes that
    /// are not UTF-8 (json-file).
    Holds { stdout: Vec<u8>, stderr: Vec<u8> },
    /// Nothing to read (`--log-driver none`): a read fails.
    Unreadable,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            run_for: Duration::ZERO,
            exit_code: 0,
            stdout: vec![],
            stderr: vec![],
            oom_killed: false,
            on_term: Some(143),
            log: LogStore::Whole,
            live_breaks_after: None,
        }
    }
}

impl Script {
    /// Runs for `run_for`, then exits with `code`.
    pub fn exits(code: i64, run_for: Duration) -> Script {
        Script {
            run_for,
            exit_code: code,
            ..Script::default()
        }
    }

    pub fn with_output(mut self, stdout: &[u8], stderr: &[u8]) -> Script {
        self.stdout = stdout.to_vec();
        self.stderr = stderr.to_vec();
        self
    }
}

/// One call the fake answered: the operation and its target (container id or name,
/// image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: &'static str,
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    /// Started; exits by itself at `until`.
    Running {
        until: Instant,
    },
    Exited {
        code: i64,
    },
}

/// One started container's run as the engine saw it, for simulations' recorders: from
/// its start to its exit (natural, stop, kill, the engine going down, a forced remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub started: Instant,
    /// `None` while it runs.
    pub ended: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    /// The image it was created from (empty for one made outside berth).
    image: String,
    labels: HashMap<String, String>,
    script: Script,
    status: Status,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    oom_killed: bool,
    /// When it started and exited (tokio's clock), for [`Fake::runs`].
    ran: Option<(Instant, Option<Instant>)>,
}

impl Container {
    /// Moves a container whose time is up to `Exited`.
    fn settle(&mut self, now: Instant) {
        if let Status::Running { until } = self.status {
            if now >= until {
                if let Some((_, end)) = &mut self.ran {
                    *end = Some(until);
                }
                self.oom_killed = self.script.oom_killed;
                self.status = Status::Exited {
                    code: if self.script.oom_killed {
                        137
                    } else {
                        self.script.exit_code
                    },
                };
            }
        }
    }

    /// Ends a running container now with `code` (stop, kill, the engine going down).
    fn end(&mut self, code: i64, now: Instant) {
        self.settle(now);
        if matches!(self.status, Status::Running { .. }) {
            self.status = Status::Exited { code };
            if let Some((_, end)) = &mut self.ran {
                *end = Some(now);
            }
        }
    }

    fn run(&self) -> Option<Run> {
        let (started, ended) = self.ran?;
        Some(Run {
            name: self.name.clone(),
            labels: self.labels.clone(),
            started,
            ended,
        })
    }

    fn status_word(&self) -> &'static str {
        match self.status {
            Status::Created => "created",
            Status::Running { .. } => "running",
            Status::Exited { .. } => "exited",
        }
    }
}

type ScriptFn = Box<dyn Fn(&str, &ContainerCreateBody) -> Script + Send>;
type StartFn = Box<dyn Fn(&str) + Send>;

struct State {
    up: bool,
    /// Image name -> its `Env`.
    images: HashMap<String, Vec<String>>,
    /// (image, absolute path) -> the file's bytes, as containers of that image see it.
    files: HashMap<(String, String), Vec<u8>>,
    /// Whether a pull of an unknown image succeeds (and makes it present).
    pulls_succeed: bool,
    faults: HashMap<&'static str, VecDeque<EngineError>>,
    script: ScriptFn,
    /// Called with a container's name as it starts.
    on_start: StartFn,
    containers: BTreeMap<String, Container>,
    next_id: u64,
    calls: Vec<Call>,
    /// The most containers running at one time.
    peak_running: usize,
    /// The runs of containers removed since.
    gone: Vec<Run>,
}

struct Inner {
    state: Mutex<State>,
    /// Woken on every change a waiter may care about (stop, kill, remove, engine down).
    changed: Notify,
}

/// An engine in memory. Clones share one engine.
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fake")
    }
}

impl Default for Fake {
    fn default() -> Self {
        Fake::new()
    }
}

fn unavailable() -> EngineError {
    EngineError::Unavailable(crate::error_chain::Cause::msg("fake engine is down"))
}

impl Fake {
    /// An engine that is up, has no images, pulls any image, and whose containers exit 0
    /// at once.
    pub fn new() -> Fake {
        Fake {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    up: true,
                    images: HashMap::new(),
                    files: HashMap::new(),
                    pulls_succeed: true,
                    faults: HashMap::new(),
                    script: Box::new(|_, _| Script::default()),
                    on_start: Box::new(|_| {}),
                    containers: BTreeMap::new(),
                    next_id: 1,
                    calls: vec![],
                    peak_running: 0,
                    gone: vec![],
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the call; fails it if the engine is down or a fault is scripted for `op`.
    fn enter(&self, op: &'static str, target: &str) -> Result<MutexGuard<'_, State>, EngineError> {
        let mut s = self.lock();
        s.calls.push(Call {
            op,
            target: target.to_string(),
        });
        if !s.up {
            return Err(unavailable());
        }
        if let Some(e) = s.faults.get_mut(op).and_then(VecDeque::pop_front) {
            return Err(e);
        }
        let now = Instant::now();
        for c in s.containers.values_mut() {
            c.settle(now);
        }
        Ok(s)
    }

    /// Makes `image` present, with this `Env`.
    pub fn add_image(&self, image: &str, env: &[&str]) -> &Self {
        self.lock().images.insert(
            image.to_string(),
            env.iter().map(|s| s.to_string()).collect(),
        );
        self
    }

    /// Puts a file at `path` in the containers of `image` (`/etc/passwd`, ...).
    pub fn add_file(&self, image: &str, path: &str, bytes: &[u8]) -> &Self {
        self.lock()
            .files
            .insert((image.to_string(), path.to_string()), bytes.to_vec());
        self
    }

    /// Removes `image` (as `docker rmi` or a prune would).
    pub fn remove_image(&self, image: &str) -> &Self {
        self.lock().images.remove(image);
        self
    }

    /// Whether pulls of images that are not present succeed (default) or fail as not
    /// found in the registry.
    pub fn pulls_succeed(&self, yes: bool) -> &Self {
        self.lock().pulls_succeed = yes;
        self
    }

    /// What each container created from now on does, chosen from its name and body.
    pub fn script(
        &self,
        f: impl Fn(&str, &ContainerCreateBody) -> Script + Send + 'static,
    ) -> &Self {
        self.lock().script = Box::new(f);
        self
    }

    /// Calls `f` with each container's name as it starts, before its process runs (to see
    /// what the container would find then).
    pub fn on_start(&self, f: impl Fn(&str) + Send + 'static) -> &Self {
        self.lock().on_start = Box::new(f);
        self
    }

    /// The next call of `op` (`"create"`, `"start"`, `"wait"`, `"pull"`, ...) fails with `e`.
    /// Faults queue up per operation.
    pub fn fail_next(&self, op: &'static str, e: EngineError) -> &Self {
        self.lock().faults.entry(op).or_default().push_back(e);
        self
    }

    /// Takes the engine away (`up = false`: every call and every wait in flight fails
    /// `Unavailable`; running containers die with 137 unless `live_restore`) or brings it
    /// back.
    pub fn set_up(&self, up: bool, live_restore: bool) {
        let mut s = self.lock();
        s.up = up;
        if !up && !live_restore {
            let now = Instant::now();
            for c in s.containers.values_mut() {
                c.end(137, now);
            }
        }
        drop(s);
        self.inner.changed.notify_waiters();
    }

    /// Every call answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// The most containers that ran at one time so far.
    pub fn peak_running(&self) -> usize {
        self.lock().peak_running
    }

    /// Every container run so far, removed containers' too, in no particular order.
    pub fn runs(&self) -> Vec<Run> {
        let mut s = self.lock();
        let now = Instant::now();
        let mut v = s.gone.clone();
        for c in s.containers.values_mut() {
            c.settle(now);
            v.extend(c.run());
        }
        v
    }

    /// The ids of the containers that exist now.
    pub fn containers(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    /// Creates a container outside berth and never starts it (an earlier agent process
    /// died before its start); returns its id.
    pub fn left_created(&self, name: &str, labels: &[(&str, &str)], script: Script) -> String {
        let id = self.run_detached(name, labels, script);
        if let Some(c) = self.lock().containers.get_mut(&id) {
            c.status = Status::Created;
            c.started_at = None;
        }
        id
    }

    /// Creates and starts a container outside berth (as an earlier agent process would
    /// have), running `script`; returns its id.
    pub fn run_detached(&self, name: &str, labels: &[(&str, &str)], script: Script) -> String {
        let mut s = self.lock();
        let id = format!("fake{:012}", s.next_id);
        s.next_id += 1;
        let now = Instant::now();
        s.containers.insert(
            id.clone(),
            Container {
                name: name.to_string(),
                image: String::new(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                status: Status::Running {
                    until: now + script.run_for,
                },
                script,
                started_at: Some(chrono::Utc::now()),
                oom_killed: false,
                ran: Some((now, None)),
            },
        );
        id
    }

    fn find<'s>(s: &'s mut State, id: &str) -> Option<&'s mut Container> {
        if s.containers.contains_key(id) {
            return s.containers.get_mut(id);
        }
        s.containers.values_mut().find(|c| c.name == id)
    }

    fn id_of(s: &State, id: &str) -> Option<String> {
        if s.containers.contains_key(id) {
            return Some(id.to_string());
        }
        s.containers
            .iter()
            .find(|(_, c)| c.name == id)
            .map(|(k, _)| k.clone())
    }

    /// Removes a container (a forced remove kills a running one), keeping its run.
    fn forget(s: &mut State, key: &str) {
        if let Some(mut c) = s.containers.remove(key) {
            c.end(137, Instant::now());
            s.gone.extend(c.run());
        }
    }

    fn no_such(id: &str) -> EngineError {
        EngineError::NotFound(format!("No such container: {id}"))
    }

    /// The exit code once the container stops, or why it cannot be known.
    async fn wait_exit(self, id: String) -> Result<i64, EngineError> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let until = {
                let mut s = self.lock();
                if !s.up {
                    return Err(unavailable());
                }
                let now = Instant::now();
                let Some(c) = Self::find(&mut s, &id) else {
                    return Err(Self::no_such(&id));
                };
                c.settle(now);
                match c.status {
                    Status::Exited { code } => return Ok(code),
                    Status::Running { until } => Some(until),
                    Status::Created => None,
                }
            };
            match until {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// The output of a started container, in one chunk per stream: from its own stream
    /// (`live`) or from its log store.
    fn output_of(
        c: &Container,
        [out, err]: [bool; 2],
        live: bool,
    ) -> Vec<Result<Output, EngineError>> {
        let mut v = vec![];
        if matches!(c.status, Status::Created) {
            return v;
        }
        let s = &c.script;
        let (stdout, stderr) = match (&s.log, live) {
            (_, true) | (LogStore::Whole, false) => (&s.stdout, &s.stderr),
            (LogStore::Holds { stdout, stderr }, false) => (stdout, stderr),
            (LogStore::Unreadable, false) => {
                return vec![Err(EngineError::Refused {
                    status: 501,
                    message: "configured logging driver does not support reading".into(),
                })]
            }
        };
        if let (Some(k), true) = (s.live_breaks_after, live) {
            let k = k.min(stdout.len());
            if k > 0 {
                v.push(Ok(Output::Stdout(stdout[..k].to_vec())));
            }
            v.push(Err(EngineError::Stream(
                "Error grabbing logs: unexpected EOF".into(),
            )));
            return v;
        }
        if out && !stdout.is_empty() {
            v.push(Ok(Output::Stdout(stdout.clone())));
        }
        if err && !stderr.is_empty() {
            v.push(Ok(Output::Stderr(stderr.clone())));
        }
        v
    }

    /// A stream of the container's output that, when `follow`, ends only once it stops:
    /// its own stream (`live`, what attach gives: everything at its exit) or its log store
    /// (everything at once, as a store read finds it written already).
    fn output_stream(&self, id: &str, follow: bool, which: [bool; 2], live: bool) -> OutputStream {
        use futures_util::StreamExt;
        let (me, id) = (self.clone(), id.to_string());
        let waited = {
            let (me, id) = (self.clone(), id.clone());
            async move {
                if follow {
                    // Ends with the container (or the engine).
                    me.wait_exit(id).await.err()
                } else {
                    None
                }
            }
        };
        let read = move || {
            let mut s = me.lock();
            if !s.up {
                return vec![Err(unavailable())];
            }
            match Self::find(&mut s, &id) {
                Some(c) => Self::output_of(c, which, live),
                None => vec![Err(Self::no_such(&id))],
            }
        };
        if live {
            return Box::pin(async_stream(async move {
                match waited.await {
                    Some(e) => vec![Err(e)],
                    None => read(),
                }
            }));
        }
        let now = read();
        Box::pin(
            futures_util::stream::iter(now).chain(async_stream(async move {
                waited.await.map(Err).into_iter().collect()
            })),
        )
    }
}

/// A stream of the items one future yields.
fn async_stream(
    f: impl std::future::Future<Output = Vec<Result<Output, EngineError>>> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Output, EngineError>> + Send {
    use futures_util::StreamExt;
    futures_util::stream::once(f).flat_map(futures_util::stream::iter)
}

impl Engine for Fake {
    fn host(&self) -> &str {
        "fake://"
    }

    fn negotiate(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.enter("negotiate", "").map(drop) })
    }

    fn listening(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.lock().up })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.enter("probe", "").map(drop) })
    }

    fn runtimes(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        Box::pin(async move { self.enter("runtimes", "").map(|_| vec!["runc".to_string()]) })
    }

    fn image_env<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            let s = self.enter("image_env", image)?;
            s.images
                .get(image)
                .cloned()
                .ok_or_else(|| EngineError::ImageNotFound(format!("No such image: {image}")))
        })
    }

    fn image_present<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(async move {
            Ok(self
                .enter("image_present", image)?
                .images
                .contains_key(image))
        })
    }

    fn pull<'a>(
        &'a self,
        repository: &'a str,
        tag_or_digest: &'a str,
        _platform: Option<&'a str>,
        _creds: Option<&'a Credentials>,
        _limits: PullLimits,
        progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let sep = if tag_or_digest.starts_with("sha256:") {
                '@'
            } else {
                ':'
            };
            let image = format!("{repository}{sep}{tag_or_digest}");
            {
                let mut s = self.enter("pull", &image)?;
                if !s.pulls_succeed && !s.images.contains_key(&image) {
                    return Err(EngineError::ImageNotFound(format!(
                        "manifest for {image} not found: manifest unknown"
                    )));
                }
                s.images.entry(image.clone()).or_default();
            }
            progress(PullEvent {
                layer: Some("fake".into()),
                status: Some("Pull complete".into()),
                current: None,
                total: None,
            });
            Ok(())
        })
    }

    fn registry_check<'a>(
        &'a self,
        image: &'a str,
        _creds: Option<&'a Credentials>,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move {
            self.enter("registry_check", image).map(drop)?;
            Ok("sha256:fake".to_string())
        })
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
        _platform: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("create", name)?;
            let image = body.image.clone().unwrap_or_default();
            if !s.images.contains_key(&image) {
                return Err(EngineError::ImageNotFound(format!(
                    "No such image: {image}"
                )));
            }
            // A leftover holding the name goes first, as the real engine's create does.
            if let Some(old) = Self::id_of(&s, name) {
                Self::forget(&mut s, &old);
            }
            let script = (s.script)(name, &body);
            let id = format!("fake{:012}", s.next_id);
            s.next_id += 1;
            s.containers.insert(
                id.clone(),
                Container {
                    name: name.to_string(),
                    image,
                    labels: body.labels.clone().unwrap_or_default(),
                    script,
                    status: Status::Created,
                    started_at: None,
                    oom_killed: false,
                    ran: None,
                },
            );
            Ok(id)
        })
    }

    fn logs_of(&self, id: &str, follow: bool, which: [bool; 2]) -> OutputStream {
        self.lock().calls.push(Call {
            op: "logs",
            target: id.to_string(),
        });
        self.output_stream(id, follow, which, false)
    }

    fn attach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<OutputStream, EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("attach", id)?;
            match Self::find(&mut s, id) {
                None => return Err(Self::no_such(id)),
                Some(c) if matches!(c.status, Status::Exited { .. }) => {
                    return Ok(Box::pin(futures_util::stream::pending()) as OutputStream)
                }
                Some(_) => {}
            }
            drop(s);
            Ok(self.output_stream(id, true, [true, true], true))
        })
    }

    fn wait(&self, id: &str) -> BoxFuture<'static, Result<i64, EngineError>> {
        let entered = self.enter("wait", id).map(drop);
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            entered?;
            me.wait_exit(id).await
        })
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("start", id)?;
            let c = Self::find(&mut s, id).ok_or_else(|| Self::no_such(id))?;
            if c.status == Status::Created {
                let name = c.name.clone();
                (s.on_start)(&name);
                let c = Self::find(&mut s, id).ok_or_else(|| Self::no_such(id))?;
                let now = Instant::now();
                c.status = Status::Running {
                    until: now + c.script.run_for,
                };
                c.ran = Some((now, None));
                c.started_at = Some(chrono::Utc::now());
                c.settle(now);
            }
            let running = s
                .containers
                .values()
                .filter(|c| matches!(c.status, Status::Running { .. }))
                .count();
            s.peak_running = s.peak_running.max(running);
            Ok(())
        })
    }

    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ContainerState, EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("inspect", id)?;
            let key = Self::id_of(&s, id).ok_or_else(|| Self::no_such(id))?;
            let c = Self::find(&mut s, &key).ok_or_else(|| Self::no_such(id))?;
            Ok(ContainerState {
                id: key,
                status: Some(c.status_word().to_string()),
                exit_code: match c.status {
                    Status::Exited { code } => Some(code),
                    _ => Some(0),
                },
                oom_killed: c.oom_killed,
                error: None,
                // No process on this host: the OOM probe has nothing to read.
                pid: None,
                started_at: c.started_at,
            })
        })
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let on_term = {
                let mut s = self.enter("stop", id)?;
                let c = Self::find(&mut s, id).ok_or_else(|| Self::no_such(id))?;
                if !matches!(c.status, Status::Running { .. }) {
                    return Ok(());
                }
                c.script.on_term
            };
            let code = match on_term {
                Some(code) => code,
                None => {
                    tokio::time::sleep(grace).await;
                    137
                }
            };
            let mut s = self.lock();
            if let Some(c) = Self::find(&mut s, id) {
                c.end(code, Instant::now());
            }
            drop(s);
            self.inner.changed.notify_waiters();
            Ok(())
        })
    }

    fn kill<'a>(&'a self, id: &'a str, _signal: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("kill", id)?;
            let c = Self::find(&mut s, id).ok_or_else(|| Self::no_such(id))?;
            if !matches!(c.status, Status::Running { .. }) {
                return Err(EngineError::Conflict(format!(
                    "Container {id} is not running"
                )));
            }
            c.end(137, Instant::now());
            drop(s);
            self.inner.changed.notify_waiters();
            Ok(())
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("remove", id)?;
            if let Some(key) = Self::id_of(&s, id) {
                Self::forget(&mut s, &key);
            }
            drop(s);
            self.inner.changed.notify_waiters();
            Ok(())
        })
    }

    fn list_labelled<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        Box::pin(async move {
            let s = self.enter("list", "")?;
            Ok(s.containers
                .iter()
                .filter(|(_, c)| {
                    labels
                        .iter()
                        .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|(id, c)| ContainerSummary {
                    id: id.clone(),
                    names: vec![format!("/{}", c.name)],
                    state: Some(c.status_word().to_string()),
                    labels: c.labels.clone(),
                })
                .collect())
        })
    }

    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>> {
        Box::pin(async move {
            let mut s = self.enter("read_file", id)?;
            let image = Self::find(&mut s, id)
                .ok_or_else(|| Self::no_such(id))?
                .image
                .clone();
            let bytes = s
                .files
                .get(&(image, path.to_string()))
                .ok_or_else(|| EngineError::NoSuchFile(format!("{path} in container {id}")))?;
            if bytes.len() as u64 > limit {
                return Err(EngineError::FileTooLarge {
                    path: path.to_string(),
                    limit,
                });
            }
            Ok(bytes.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn body(image: &str) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_runs_for_its_time_then_exits_with_its_code() {
        let f = Fake::new();
        f.add_image("img", &[]).script(|_, _| {
            Script::exits(3, Duration::from_secs(60)).with_output(b"out\n", b"err\n")
        });
        let id = f.create("c1", body("img"), None).await.unwrap();
        assert_eq!(
            f.inspect(&id).await.unwrap().status.as_deref(),
            Some("created")
        );
        f.start(&id).await.unwrap();
        let t = Instant::now();
        assert_eq!(f.wait(&id).await.unwrap(), 3);
        assert_eq!(t.elapsed(), Duration::from_secs(60));
        let out: Vec<_> = f.logs(&id, false).collect().await;
        assert_eq!(
            out,
            vec![
                Ok(Output::Stdout(b"out\n".to_vec())),
                Ok(Output::Stderr(b"err\n".to_vec()))
            ]
        );
        // An exited container answers wait at once; stop is a no-op.
        assert_eq!(f.wait(&id).await.unwrap(), 3);
        f.stop(&id, Duration::from_secs(10)).await.unwrap();
        f.remove(&id).await.unwrap();
        f.remove(&id).await.unwrap();
        assert!(matches!(
            f.inspect(&id).await,
            Err(EngineError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_and_kill_end_a_running_container() {
        let f = Fake::new();
        f.add_image("img", &[])
            .script(|_, _| Script::exits(0, Duration::from_secs(3600)));
        let a = f.create("a", body("img"), None).await.unwrap();
        f.start(&a).await.unwrap();
        let w = tokio::spawn(f.wait(&a));
        f.stop(&a, Duration::from_secs(5)).await.unwrap();
        assert_eq!(w.await.unwrap().unwrap(), 143);

        f.script(|_, _| Script {
            on_term: None,
            ..Script::exits(0, Duration::from_secs(3600))
        });
        let b = f.create("b", body("img"), None).await.unwrap();
        f.start(&b).await.unwrap();
        let t = Instant::now();
        f.stop(&b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            t.elapsed(),
            Duration::from_secs(5),
            "killed after the grace"
        );
        assert_eq!(f.wait(&b).await.unwrap(), 137);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_keep_each_start_and_exit_removed_containers_too() {
        let f = Fake::new();
        f.add_image("img", &[])
            .script(|n, _| Script::exits(0, Duration::from_secs(if n == "a" { 2 } else { 60 })));
        let t0 = Instant::now();
        let (a, b, c) = (
            f.create("a", body("img"), None).await.unwrap(),
            f.create("b", body("img"), None).await.unwrap(),
            f.create("c", body("img"), None).await.unwrap(),
        );
        for id in [&a, &b, &c] {
            f.start(id).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        f.kill(&b, "KILL").await.unwrap();
        f.remove(&a).await.unwrap();
        let runs = f.runs();
        let of = |n: &str| runs.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            of("a").ended,
            Some(t0 + Duration::from_secs(2)),
            "its own end, removed since"
        );
        assert_eq!(of("b").ended, Some(t0 + Duration::from_secs(5)), "killed");
        assert_eq!(of("c").ended, None, "still running");
        f.set_up(false, false);
        assert_eq!(f.runs().len(), 3);
        assert!(
            f.runs().iter().all(|r| r.ended.is_some()),
            "the engine's loss ends them"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn create_needs_the_image_and_replaces_a_leftover_of_the_same_name() {
        let f = Fake::new();
        let e = f.create("c", body("missing"), None).await.unwrap_err();
        assert!(matches!(e, EngineError::ImageNotFound(_)), "{e}");
        f.add_image("img", &[]);
        let first = f.create("c", body("img"), None).await.unwrap();
        let second = f.create("c", body("img"), None).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(f.containers(), vec![second]);
    }

    #[tokio::test(start_paused = true)]
    async fn faults_are_scripted_per_operation_and_calls_recorded() {
        let f = Fake::new();
        f.add_image("img", &[]).fail_next(
            "start",
            EngineError::Timeout {
                op: "start",
                secs: 1,
            },
        );
        let id = f.create("c", body("img"), None).await.unwrap();
        assert!(f.start(&id).await.unwrap_err().is_engine_down());
        f.start(&id).await.unwrap();
        assert_eq!(f.count("start"), 2);
        assert_eq!(
            f.calls().iter().map(|c| c.op).collect::<Vec<_>>(),
            vec!["create", "start", "start"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_that_goes_away_fails_waits_and_kills_containers_unless_live_restore() {
        let f = Fake::new();
        f.add_image("img", &[])
            .script(|_, _| Script::exits(0, Duration::from_secs(3600)));
        let id = f.create("c", body("img"), None).await.unwrap();
        f.start(&id).await.unwrap();
        let w = tokio::spawn(f.wait(&id));
        tokio::task::yield_now().await;
        f.set_up(false, true);
        assert!(matches!(w.await.unwrap(), Err(EngineError::Unavailable(_))));
        assert!(!f.listening().await);
        f.set_up(true, true);
        assert_eq!(
            f.inspect(&id).await.unwrap().status.as_deref(),
            Some("running")
        );
        f.set_up(false, false);
        f.set_up(true, false);
        assert_eq!(f.inspect(&id).await.unwrap().exit_code, Some(137));
    }

    #[tokio::test(start_paused = true)]
    async fn list_filters_by_every_label() {
        let f = Fake::new();
        f.run_detached(
            "a",
            &[("berth.node", "n1"), ("berth.kind", "task")],
            Script::default(),
        );
        f.run_detached(
            "b",
            &[("berth.node", "n2"), ("berth.kind", "task")],
            Script::default(),
        );
        let l = f
            .list_labelled(&[("berth.node", "n1"), ("berth.kind", "task")])
            .await
            .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].names, vec!["/a".to_string()]);
        assert_eq!(l[0].label("berth.node"), "n1");
    }
}
