//! The daemon's configuration: defaults <- `/etc/berth/berth.toml` (or `--config`) <-
//! `BERTH_*` environment variables <- command-line flags. Every key is in the README.

use crate::gpu::ExposureSetting;
use crate::task::policy::Policy;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_FILE: &str = "/etc/berth/berth.toml";

/// The default of `--task-output-limit` and of the daemon's `task_output_limit`.
pub const DEFAULT_OUTPUT_LIMIT: &str = "1G";

/// The default of `--default-pids-limit` and of the daemon's `default_pids_limit`: room
/// for thread-heavy HPC tasks (the limit counts threads) and for builds, yet a fork bomb
/// in one task takes a bounded share of the host's process table (README, "Process limit").
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// AZ_BATCH_NODE_ROOT_DIR.
    pub node_root: PathBuf,
    /// The API's Unix socket.
    pub socket: PathBuf,
    /// Also serve the API on TCP here (`127.0.0.1:8470`); only with `token_file` or
    /// `account_key_files`.
    pub tcp_address: Option<String>,
    /// The bearer token TCP clients must send (one line, at least 16 characters).
    pub token_file: Option<PathBuf>,
    /// Tokens good for reads only (the web view's viewers), one per line; TCP only.
    pub read_only_token_file: Option<PathBuf>,
    /// The Batch account name SharedKey clients sign with (letters and digits).
    pub account_name: Option<String>,
    /// One or two files (two while rotating), each one line of a base64 account key that
    /// SharedKey clients sign with; needs `account_name`.
    pub account_key_files: Vec<PathBuf>,
    /// The TCP API's TLS certificate chain (PEM); with `tls_key_file`, TCP is HTTPS, and
    /// SIGHUP re-reads both. None: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Pool JSON (images, registries, start task, slots); none: a one-slot container pool.
    pub pool: Option<PathBuf>,
    pub node_id: Option<String>,
    /// Docker engine address; none: DOCKER_HOST or the local socket.
    pub engine: Option<String>,
    pub prefetch_concurrency: usize,
    /// On SIGTERM: `stop` running tasks (they end `TaskEnded`), `continue` waiting for them,
    /// or `leave` them running for the next agent process to take over.
    pub on_shutdown: OnShutdown,
    /// Log filter when RUST_LOG is not set (`info`, `debug`, ...).
    pub log_level: String,
    /// How GPUs reach containers: `auto`, `device-requests`, `runtime`, `manual`, `off`.
    #[serde(deserialize_with = "exposure")]
    pub gpu_exposure: ExposureSetting,
    /// Whole GPUs per task slot; none: an equal share (all GPUs with one slot).
    pub gpus_per_slot: Option<u32>,
    /// `containerRunOptions` rules this node refuses (`privileged`, `cap-add`,
    /// `host-namespaces`, `devices`, `binds`, `unconfined`, `pids-limit`, `all`); none by
    /// default.
    #[serde(deserialize_with = "policy")]
    pub forbid_run_options: Policy,
    /// The most bytes kept of each of a container task's stdout.txt and stderr.txt: a
    /// number or a string with a unit (`"512M"`); 0: no limit.
    #[serde(deserialize_with = "size")]
    pub task_output_limit: u64,
    /// The `--pids-limit` of a container whose `containerRunOptions` set none; 0: none.
    pub default_pids_limit: u64,
    /// Pool mode: the service's URLs (`https://host:port`), tried in turn; empty: the
    /// standalone agent.
    pub service: Vec<String>,
    /// Pool mode: the pool this node joins.
    pub pool_id: Option<String>,
    /// Pool mode: the file holding the service's node enrolment secret (one line).
    pub enrolment_secret_file: Option<PathBuf>,
    /// Pool mode: where the service reaches this agent's file API (`host:port` or a URL);
    /// none: `tcp_address`, if set.
    pub file_address: Option<String>,
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => crate::size::parse(&s).map_err(serde::de::Error::custom),
    }
}

fn policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    Policy::from_names(&names).map_err(serde::de::Error::custom)
}

fn exposure<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ExposureSetting, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnShutdown {
    Stop,
    Continue,
    Leave,
}

impl OnShutdown {
    /// What a SIGTERM does to running tasks, for the log line that says it.
    pub fn consequence(self) -> &'static str {
        match self {
            OnShutdown::Stop => {
                "running containers are being stopped and removed (on_shutdown = stop)"
            }
            OnShutdown::Continue => {
                "no task starts; running tasks are waited for (on_shutdown = continue)"
            }
            OnShutdown::Leave => {
                "running tasks are left running for the next agent (on_shutdown = leave)"
            }
        }
    }
}

/// `A[,B...]` (URLs, file names) as a list, blanks dropped.
pub fn split_urls(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_root: "/var/lib/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            tcp_address: None,
            token_file: None,
            read_only_token_file: None,
            account_name: None,
            account_key_files: vec![],
            tls_cert_file: None,
            tls_key_file: None,
            pool: None,
            node_id: None,
            engine: None,
            prefetch_concurrency: 4,
            on_shutdown: OnShutdown::Stop,
            log_level: "info".into(),
            gpu_exposure: ExposureSetting::Auto,
            gpus_per_slot: None,
            forbid_run_options: Policy::default(),
            task_output_limit: 1 << 30,
            default_pids_limit: DEFAULT_PIDS_LIMIT,
            service: vec![],
            pool_id: None,
            enrolment_secret_file: None,
            file_address: None,
        }
    }
}

impl AgentConfig {
    /// Reads `file` (a missing default file is fine; a missing given file is not), then
    /// applies `BERTH_<KEY>` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let (path, required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        let mut c = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                AgentConfig::default()
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        c.apply_env(|k| std::env::var(k).ok())?;
        Ok(c)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = get("BERTH_NODE_ROOT") {
            self.node_root = v.into();
        }
        if let Some(v) = get("BERTH_SOCKET") {
            self.socket = v.into();
        }
        if let Some(v) = get("BERTH_TCP_ADDRESS") {
            self.tcp_address = Some(v);
        }
        if let Some(v) = get("BERTH_TOKEN_FILE") {
            self.token_file = Some(v.into());
        }
        if let Some(v) = get("BERTH_READ_ONLY_TOKEN_FILE") {
            self.read_only_token_file = Some(v.into());
        }
        if let Some(v) = get("BERTH_ACCOUNT_NAME") {
            self.account_name = Some(v);
        }
        if let Some(v) = get("BERTH_ACCOUNT_KEY_FILES") {
            self.account_key_files = split_urls(&v).into_iter().map(PathBuf::from).collect();
        }
        if let Some(v) = get("BERTH_TLS_CERT_FILE") {
            self.tls_cert_file = Some(v.into());
        }
        if let Some(v) = get("BERTH_TLS_KEY_FILE") {
            self.tls_key_file = Some(v.into());
        }
        if let Some(v) = get("BERTH_POOL") {
            self.pool = Some(v.into());
        }
        if let Some(v) = get("BERTH_SERVICE") {
            self.service = split_urls(&v);
        }
        if let Some(v) = get("BERTH_POOL_ID") {
            self.pool_id = Some(v);
        }
        if let Some(v) = get("BERTH_ENROLMENT_SECRET_FILE") {
            self.enrolment_secret_file = Some(v.into());
        }
        if let Some(v) = get("BERTH_FILE_ADDRESS") {
            self.file_address = Some(v);
        }
        if let Some(v) = get("BERTH_NODE_ID") {
            self.node_id = Some(v);
        }
        if let Some(v) = get("BERTH_ENGINE") {
            self.engine = Some(v);
        }
        if let Some(v) = get("BERTH_PREFETCH_CONCURRENCY") {
            self.prefetch_concurrency = v
                .parse()
                .map_err(|_| format!("BERTH_PREFETCH_CONCURRENCY={v:?} is not a number"))?;
        }
        if let Some(v) = get("BERTH_ON_SHUTDOWN") {
            self.on_shutdown = match v.as_str() {
                "stop" => OnShutdown::Stop,
                "continue" => OnShutdown::Continue,
                "leave" => OnShutdown::Leave,
                _ => {
                    return Err(format!(
                        "BERTH_ON_SHUTDOWN={v:?}: use stop, continue or leave"
                    ))
                }
            };
        }
        if let Some(v) = get("BERTH_LOG_LEVEL") {
            self.log_level = v;
        }
        if let Some(v) = get("BERTH_GPU_EXPOSURE") {
            self.gpu_exposure = v.parse().map_err(|e| format!("BERTH_GPU_EXPOSURE: {e}"))?;
        }
        if let Some(v) = get("BERTH_FORBID_RUN_OPTIONS") {
            let names: Vec<&str> = v.split(',').filter(|s| !s.trim().is_empty()).collect();
            self.forbid_run_options =
                Policy::from_names(&names).map_err(|e| format!("BERTH_FORBID_RUN_OPTIONS: {e}"))?;
        }
        if let Some(v) = get("BERTH_TASK_OUTPUT_LIMIT") {
            self.task_output_limit =
                crate::size::parse(&v).map_err(|e| format!("BERTH_TASK_OUTPUT_LIMIT: {e}"))?;
        }
        if let Some(v) = get("BERTH_DEFAULT_PIDS_LIMIT") {
            self.default_pids_limit = v.parse().map_err(|_| {
                format!(
                    "BERTH_DEFAULT_PIDS_LIMIT={v:?}: use a number of processes, or 0 for no limit"
                )
            })?;
        }
        if let Some(v) = get("BERTH_GPUS_PER_SLOT") {
            self.gpus_per_slot = Some(
                v.parse()
                    .map_err(|_| format!("BERTH_GPUS_PER_SLOT={v:?} is not a number"))?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("berth.toml");
        std::fs::write(&f, "node_root = \"/srv/b\"\non_shutdown = \"continue\"\n").unwrap();
        let mut c: AgentConfig = toml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(c.node_root, PathBuf::from("/srv/b"));
        assert_eq!(c.on_shutdown, OnShutdown::Continue);
        assert_eq!(
            c.socket,
            PathBuf::from("/run/berth/berth.sock"),
            "defaults fill the rest"
        );
        c.apply_env(|k| (k == "BERTH_SOCKET").then(|| "/tmp/s.sock".to_string()))
            .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert!(c
            .apply_env(|k| (k == "BERTH_ON_SHUTDOWN").then(|| "later".to_string()))
            .unwrap_err()
            .contains("stop, continue or leave"));
        std::fs::write(&f, "nod_root = 1\n").unwrap();
        let e = AgentConfig::load(Some(&f)).unwrap_err();
        assert!(e.contains("nod_root"), "{e}");
        assert!(AgentConfig::load(Some(&d.path().join("missing.toml"))).is_err());
        std::fs::write(&f, "gpu_exposure = \"manual\"\ngpus_per_slot = 2\n").unwrap();
        let c = AgentConfig::load(Some(&f)).unwrap();
        assert_eq!(
            c.gpu_exposure,
            ExposureSetting::Fixed(crate::gpu::Exposure::Manual)
        );
        assert_eq!(c.gpus_per_slot, Some(2));
        std::fs::write(&f, "forbid_run_options = [\"privileged\", \"binds\"]\n").unwrap();
        let c = AgentConfig::load(Some(&f)).unwrap();
        assert_eq!(
            c.forbid_run_options.rules(),
            &[
                crate::task::policy::Rule::Privileged,
                crate::task::policy::Rule::Binds
            ]
        );
        std::fs::write(&f, "forbid_run_options = [\"sudo\"]\n").unwrap();
        let e = AgentConfig::load(Some(&f)).unwrap_err();
        assert!(e.contains("\"sudo\" is not a run-options rule"), "{e}");
        // Pool mode's keys.
        std::fs::write(
            &f,
            "service = [\"https://a:1\"]\npool_id = \"p1\"\nenrolment_secret_file = \"/s\"\n",
        )
        .unwrap();
        let mut c = AgentConfig::load(Some(&f)).unwrap();
        assert_eq!(
            (c.service.clone(), c.pool_id.as_deref()),
            (vec!["https://a:1".to_string()], Some("p1"))
        );
        c.apply_env(|k| (k == "BERTH_SERVICE").then(|| "https://a:1, https://b:2,".to_string()))
            .unwrap();
        assert_eq!(c.service, ["https://a:1", "https://b:2"]);
        std::fs::write(&f, "task_output_limit = \"64M\"\n").unwrap();
        assert_eq!(
            AgentConfig::load(Some(&f)).unwrap().task_output_limit,
            64 << 20
        );
        std::fs::write(&f, "task_output_limit = 0\n").unwrap();
        assert_eq!(AgentConfig::load(Some(&f)).unwrap().task_output_limit, 0);
        std::fs::write(&f, "task_output_limit = \"lots\"\n").unwrap();
        let e = AgentConfig::load(Some(&f)).unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        assert_eq!(
            AgentConfig::default().task_output_limit,
            crate::size::parse(DEFAULT_OUTPUT_LIMIT).unwrap()
        );
        assert_eq!(AgentConfig::default().default_pids_limit, 4096);
        std::fs::write(&f, "default_pids_limit = 512\n").unwrap();
        assert_eq!(AgentConfig::load(Some(&f)).unwrap().default_pids_limit, 512);
        std::fs::write(&f, "default_pids_limit = -1\n").unwrap();
        let e = AgentConfig::load(Some(&f)).unwrap_err();
        assert!(e.contains("default_pids_limit"), "{e}");
        let mut c = AgentConfig::default();
        c.apply_env(|k| (k == "BERTH_DEFAULT_PIDS_LIMIT").then(|| "0".to_string()))
            .unwrap();
        assert_eq!(c.default_pids_limit, 0);
        let e = c
            .apply_env(|k| (k == "BERTH_DEFAULT_PIDS_LIMIT").then(|| "many".to_string()))
            .unwrap_err();
        assert!(e.contains("BERTH_DEFAULT_PIDS_LIMIT=\"many\""), "{e}");
        std::fs::write(&f, "gpu_exposure = \"cuda\"\n").unwrap();
        let e = AgentConfig::load(Some(&f)).unwrap_err();
        assert!(e.contains("not a GPU exposure"), "{e}");
    }
}
