//! `containerRunOptions` -> [`RunOptions`]: the user's `docker create` flags, parsed.
//!
//! The string is split like a POSIX shell (shell-words), then parsed with the same grammar
//! as the docker CLI's pflag set: `--flag value`, `--flag=value`, `-e X`, `-eX`, bool clusters
//! (`-it`), bool values only through `=` (`--init=false`), last-wins scalars, repeatable
//! lists, and values that start with `-` (`--memory-swap -1`). Pure: no I/O.

use bollard::models::{
    DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions,
    ResourcesUlimits,
};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::HashMap;
use std::fmt;

/// A problem with one flag of `containerRunOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptionsError {
    /// The flag as the user wrote it, or the offending word.
    pub flag: String,
    pub message: String,
}

impl fmt::Display for RunOptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerRunOptions: {}: {}", self.flag, self.message)
    }
}

impl std::error::Error for RunOptionsError {}

fn err(flag: &str, message: impl Into<String>) -> RunOptionsError {
    RunOptionsError {
        flag: flag.to_string(),
        message: message.into(),
    }
}

/// A `-v` bind or volume: `[src:]dst[:opts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    /// `-v /host:/ctr[:opts]` or `-v name:/ctr[:opts]`, passed to HostConfig.Binds.
    Bind { spec: String, target: String },
    /// `-v /ctr`: an anonymous volume.
    Anonymous { target: String },
}

pub use crate::image::store::PullPolicy;

/// The user's flags. Fields the agent also sets are kept apart so `create` can apply
/// berth's precedence rules; everything else goes straight into `host`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub env: Vec<String>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<Mount>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `Some("")` resets the image's ENTRYPOINT, as `--entrypoint ""` does.
    pub entrypoint: Option<String>,
    pub labels: Vec<(String, String)>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub platform: Option<String>,
    pub pull: Option<PullPolicy>,
    pub host: HostConfig,
    /// Flags accepted but without effect (e.g. `--rm`: berth always removes).
    pub notes: Vec<String>,
}

mod flags;

pub use flags::{find as flag, Flag, Kind, Role, FLAGS};

fn command() -> Command {
    let mut cmd = Command::new("containerRunOptions")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_override_self(true);
    for f in FLAGS {
        let mut a = Arg::new(f.long).long(f.long);
        if let Some(s) = f.short {
            a = a.short(s);
        }
        for &alias in f.aliases {
            a = a.alias(alias);
        }
        a = match f.kind {
            Kind::Bool => a
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .action(ArgAction::Set),
            Kind::One => a
                .num_args(1)
                .allow_hyphen_values(true)
                .action(ArgAction::Set),
            Kind::Many => a
                .num_args(1)
                .allow_hyphen_values(true)
                .action(ArgAction::Append),
        };
        cmd = cmd.arg(a);
    }
    cmd.arg(
        Arg::new("positional")
            .num_args(0..)
            .action(ArgAction::Append)
            .hide(true),
    )
}

/// Parses a `containerRunOptions` string.
pub fn parse(options: &str) -> Result<RunOptions, RunOptionsError> {
    let words = shell_words::split(options).map_err(|e| {
        err(
            options,
            format!("cannot be split into words like a shell would: {e}"),
        )
    })?;
    parse_words(&words)
}

fn clap_error(e: clap::Error) -> RunOptionsError {
    let ctx = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let flag = ctx(ContextKind::InvalidArg).unwrap_or_default();
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let tip = ctx(ContextKind::SuggestedArg)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            err(&flag, format!("unknown flag; berth accepts the `docker create` flags listed in the README{tip}"))
        }
        ErrorKind::InvalidValue if flag.starts_with("--") && e.to_string().contains("equal") => {
            err(
                &flag,
                "takes no separate value; write it as --flag=true or --flag=false",
            )
        }
        _ => {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            let flag = if flag.is_empty() { first.clone() } else { flag };
            err(&flag, first)
        }
    }
}

fn parse_words(words: &[String]) -> Result<RunOptions, RunOptionsError> {
    let m = command().try_get_matches_from(words).map_err(clap_error)?;
    if let Some(mut pos) = m.get_many::<String>("positional") {
        let first = pos.next().cloned().unwrap_or_default();
        return Err(err(
            &first,
            "unexpected word; containerRunOptions takes only flags (the image comes from imageName and the command from commandLine; a bool flag takes a value only as --flag=false)",
        ));
    }
    let mut o = RunOptions::default();
    for f in FLAGS {
        let long = f.long;
        if m.value_source(long) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let flag = format!("--{long}");
        match f.role {
            Role::AgentOwned(why) => return Err(err(&flag, format!("is not accepted: {why}"))),
            Role::Unsupported => {
                return Err(err(&flag, "is a docker flag that berth does not support"))
            }
            Role::Mapped | Role::NoEffect => {}
        }
        match f.kind {
            Kind::Bool => apply_bool(&mut o, long, &flag, &m)?,
            Kind::One => {
                let v = m.get_one::<String>(long).cloned().unwrap_or_default();
                apply_one(&mut o, long, &flag, v)?;
            }
            Kind::Many => {
                let vs: Vec<String> = m
                    .get_many::<String>(long)
                    .map(|i| i.cloned().collect())
                    .unwrap_or_default();
                apply_many(&mut o, long, &flag, vs)?;
            }
        }
    }
    Ok(o)
}

fn bool_value(flag: &str, v: &str) -> Result<bool, RunOptionsError> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(err(
            flag,
            format!("{v:?} is not a boolean; use true or false"),
        )),
    }
}

fn apply_bool(
    o: &mut RunOptions,
    long: &str,
    flag: &str,
    m: &ArgMatches,
) -> Result<(), RunOptionsError> {
    let v = bool_value(
        flag,
        m.get_one::<String>(long)
            .map(String::as_str)
            .unwrap_or("true"),
    )?;
    let h = &mut o.host;
    match long {
        "rm" => o.notes.push(if v {
            "--rm: berth always removes the container once its exit code and output are saved"
                .into()
        } else {
            "--rm=false: ignored; berth always removes finished containers".into()
        }),
        "privileged" => h.privileged = Some(v),
        "read-only" => h.readonly_rootfs = Some(v),
        "init" => h.init = Some(v),
        "oom-kill-disable" => h.oom_kill_disable = Some(v),
        "quiet" => {}
        _ => return Err(err(flag, "is not supported")),
    }
    Ok(())
}

fn int(flag: &str, v: &str) -> Result<i64, RunOptionsError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| err(flag, format!("{v:?} is not an integer")))
}

fn size(flag: &str, v: &str) -> Result<i64, RunOptionsError> {
    crate::size::parse(v)
        .and_then(|b| i64::try_from(b).map_err(|_| format!("{v:?} is too large")))
        .map_err(|m| err(flag, m))
}

fn apply_one(o: &mut RunOptions, long: &str, flag: &str, v: String) -> Result<(), RunOptionsError> {
    let h = &mut o.host;
    match long {
        "workdir" => {
            if !v.starts_with('/') {
                return Err(err(
                    flag,
                    format!("{v:?} must be an absolute path inside the container"),
                ));
            }
            o.workdir = Some(v);
        }
        "user" => {
            if v.is_empty() {
                return Err(err(flag, "must not be empty; use name|uid[:group|gid]"));
            }
            // Names are resolved in the container (`container_user`); ids are checked here.
            if let Err(e) = super::container_user::parse(&v) {
                return Err(err(flag, e.to_string()));
            }
            o.user = Some(v);
        }
        "entrypoint" => o.entrypoint = Some(v),
        "shm-size" => h.shm_size = Some(size(flag, &v)?),
        "ipc" => h.ipc_mode = Some(v),
        "network" => h.network_mode = Some(v),
        "runtime" => h.runtime = Some(v),
        "memory" => h.memory = Some(size(flag, &v)?),
        "memory-swap" => {
            h.memory_swap = Some(if v.trim() == "-1" {
                -1
            } else {
                size(flag, &v)?
            })
        }
        "memory-reservation" => h.memory_reservation = Some(size(flag, &v)?),
        "memory-swappiness" => {
            let n = int(flag, &v)?;
            if !(-1..=100).contains(&n) {
                return Err(err(
                    flag,
                    format!("{n} is out of range; accepted: 0 to 100"),
                ));
            }
            h.memory_swappiness = Some(n);
        }
        "cpus" => h.nano_cpus = Some(nano_cpus(flag, &v)?),
        "cpuset-cpus" => h.cpuset_cpus = Some(v),
        "cpuset-mems" => h.cpuset_mems = Some(v),
        "cpu-shares" => h.cpu_shares = Some(int(flag, &v)?),
        "cpu-period" => h.cpu_period = Some(int(flag, &v)?),
        "cpu-quota" => h.cpu_quota = Some(int(flag, &v)?),
        "blkio-weight" => {
            let n = int(flag, &v)?;
            if !(10..=1000).contains(&n) && n != 0 {
                return Err(err(
                    flag,
                    format!("{n} is out of range; accepted: 10 to 1000"),
                ));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let w = n as u16;
            h.blkio_weight = Some(w);
        }
        "pids-limit" => h.pids_limit = Some(int(flag, &v)?),
        "pid" => h.pid_mode = Some(v),
        "uts" => h.uts_mode = Some(v),
        "hostname" => o.hostname = Some(v),
        "domainname" => o.domainname = Some(v),
        "userns" => h.userns_mode = Some(v),
        "cgroup-parent" => h.cgroup_parent = Some(v),
        "log-driver" => h.log_config.get_or_insert_with(Default::default).typ = Some(v),
        "stop-signal" => o.stop_signal = Some(v),
        "stop-timeout" => o.stop_timeout = Some(int(flag, &v)?),
        "oom-score-adj" => {
            let n = int(flag, &v)?;
            if !(-1000..=1000).contains(&n) {
                return Err(err(
                    flag,
                    format!("{n} is out of range; accepted: -1000 to 1000"),
                ));
            }
            h.oom_score_adj = Some(n);
        }
        "restart" => {
            if v != "no" {
                return Err(err(flag, format!("{v:?} is not accepted: berth supervises and retries tasks itself (maxTaskRetryCount); only \"no\" is allowed")));
            }
        }
        "platform" => o.platform = Some(v),
        "pull" => {
            o.pull = Some(match v.as_str() {
                "missing" => PullPolicy::Missing,
                "always" => PullPolicy::Always,
                "never" => PullPolicy::Never,
                _ => {
                    return Err(err(
                        flag,
                        format!("{v:?} is not accepted; use missing, always or never"),
                    ))
                }
            })
        }
        _ => return Err(err(flag, "is not supported")),
    }
    Ok(())
}

fn nano_cpus(flag: &str, v: &str) -> Result<i64, RunOptionsError> {
    let bad = || err(flag, format!("{v:?} is not a number of CPUs such as 1.5"));
    let (whole, frac) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
    if frac.len() > 9 {
        return Err(err(
            flag,
            format!("{v:?} is too precise (at most 9 decimals)"),
        ));
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    if w < 0 {
        return Err(bad());
    }
    w.checked_mul(1_000_000_000)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)
}

fn key_value(flag: &str, v: &str, what: &str) -> Result<(String, String), RunOptionsError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => Err(err(flag, format!("{v:?} must be {what}"))),
    }
}

fn apply_many(
    o: &mut RunOptions,
    long: &str,
    flag: &str,
    vs: Vec<String>,
) -> Result<(), RunOptionsError> {
    for v in vs {
        let h = &mut o.host;
        match long {
            "env" => {
                if v.is_empty() || v.starts_with('=') {
                    return Err(err(flag, format!("{v:?} must be NAME=value or NAME")));
                }
                o.env.push(v);
            }
            "volume" => o.volumes.push(volume(flag, &v)?),
            "mount" => o.mounts.push(mount(flag, &v)?),
            "gpus" => h
                .device_requests
                .get_or_insert_with(Vec::new)
                .push(gpus(flag, &v)?),
            "device" => h
                .devices
                .get_or_insert_with(Vec::new)
                .push(device(flag, &v)?),
            "device-cgroup-rule" => h.device_cgroup_rules.get_or_insert_with(Vec::new).push(v),
            "cap-add" => h.cap_add.get_or_insert_with(Vec::new).push(v),
            "cap-drop" => h.cap_drop.get_or_insert_with(Vec::new).push(v),
            "security-opt" => h
                .security_opt
                .get_or_insert_with(Vec::new)
                .push(security_opt(flag, &v)?),
            "ulimit" => {
                let u = ulimit(flag, &v)?;
                let list = h.ulimits.get_or_insert_with(Vec::new);
                // Repeating a name replaces it, as in docker.
                list.retain(|x| x.name != u.name);
                list.push(u);
            }
            "add-host" => {
                let ok = v
                    .split_once(':')
                    .or_else(|| v.split_once('='))
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
                if !ok {
                    return Err(err(flag, format!("{v:?} must be host:ip")));
                }
                // The engine wants host:ip; newer CLIs also accept host=ip.
                let v = if v.contains('=') {
                    v.replacen('=', ":", 1)
                } else {
                    v
                };
                h.extra_hosts.get_or_insert_with(Vec::new).push(v);
            }
            "dns" => h.dns.get_or_insert_with(Vec::new).push(v),
            "dns-search" => h.dns_search.get_or_insert_with(Vec::new).push(v),
            "dns-option" => h.dns_options.get_or_insert_with(Vec::new).push(v),
            "tmpfs" => {
                let (path, opts) = v.split_once(':').unwrap_or((&v, ""));
                if !path.starts_with('/') {
                    return Err(err(flag, format!("{v:?} must start with an absolute path")));
                }
                h.tmpfs
                    .get_or_insert_with(HashMap::new)
                    .insert(path.to_string(), opts.to_string());
            }
            "sysctl" => {
                let (k, val) = key_value(flag, &v, "name=value")?;
                h.sysctls.get_or_insert_with(HashMap::new).insert(k, val);
            }
            "label" => {
                let (k, val) = v
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap_or((v.clone(), String::new()));
                if k.is_empty() {
                    return Err(err(flag, format!("{v:?} must be key[=value]")));
                }
                o.labels.push((k, val));
            }
            "group-add" => h.group_add.get_or_insert_with(Vec::new).push(v),
            "log-opt" => {
                let (k, val) = key_value(flag, &v, "key=value")?;
                h.log_config
                    .get_or_insert_with(HostConfigLogConfig::default)
                    .config
                    .get_or_insert_with(HashMap::new)
                    .insert(k, val);
            }
            "storage-opt" => {
                let (k, val) = key_value(flag, &v, "key=value")?;
                h.storage_opt
                    .get_or_insert_with(HashMap::new)
                    .insert(k, val);
            }
            _ => return Err(err(flag, "is not supported")),
        }
    }
    Ok(())
}

fn volume(flag: &str, v: &str) -> Result<Volume, RunOptionsError> {
    let parts: Vec<&str> = v.split(':').collect();
    let check_target = |t: &str| {
        if t.starts_with('/') {
            Ok(t.to_string())
        } else {
            Err(err(
                flag,
                format!("{v:?}: the container path {t:?} must be absolute"),
            ))
        }
    };
    match parts.as_slice() {
        [t] => Ok(Volume::Anonymous {
            target: check_target(t)?,
        }),
        [src, t] | [src, t, _] => {
            if src.is_empty() || src.starts_with('.') {
                return Err(err(
                    flag,
                    format!(
                        "{v:?}: the source {src:?} must be an absolute host path or a volume name"
                    ),
                ));
            }
            if let [_, _, opts] = parts.as_slice() {
                for o in opts.split(',') {
                    let known = [
                        "ro",
                        "rw",
                        "z",
                        "Z",
                        "nocopy",
                        "shared",
                        "rshared",
                        "slave",
                        "rslave",
                        "private",
                        "rprivate",
                        "consistent",
                        "cached",
                        "delegated",
                    ];
                    if !known.contains(&o) {
                        return Err(err(
                            flag,
                            format!(
                                "{v:?}: unknown option {o:?}; accepted: {}",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            Ok(Volume::Bind {
                spec: v.to_string(),
                target: check_target(t)?,
            })
        }
        _ => Err(err(
            flag,
            format!("{v:?} must be [source:]target[:options]"),
        )),
    }
}

fn mount(flag: &str, v: &str) -> Result<Mount, RunOptionsError> {
    let mut m = Mount::default();
    let mut typ = MountType::VOLUME;
    let mut typ_given = false;
    for field in csv(v) {
        let (k, val) = match field.split_once('=') {
            Some((k, val)) => (k.trim().to_ascii_lowercase(), Some(val.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need =
            |val: Option<String>| val.ok_or_else(|| err(flag, format!("{v:?}: {k} needs a value")));
        match k.as_str() {
            "type" => {
                typ_given = true;
                typ = match need(val)?.as_str() {
                    "bind" => MountType::BIND,
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    other => {
                        return Err(err(
                            flag,
                            format!(
                                "{v:?}: type {other:?} is not accepted; use bind, volume or tmpfs"
                            ),
                        ))
                    }
                }
            }
            "source" | "src" => m.source = Some(need(val)?),
            "target" | "dst" | "destination" => m.target = Some(need(val)?),
            "readonly" | "ro" => {
                m.read_only = Some(match val {
                    None => true,
                    Some(b) => bool_value(flag, &b)?,
                })
            }
            "bind-propagation" => {
                use MountBindOptionsPropagationEnum as P;
                let p = match need(val)?.as_str() {
                    "private" => P::PRIVATE,
                    "rprivate" => P::RPRIVATE,
                    "shared" => P::SHARED,
                    "rshared" => P::RSHARED,
                    "slave" => P::SLAVE,
                    "rslave" => P::RSLAVE,
                    other => {
                        return Err(err(
                            flag,
                            format!("{v:?}: bind-propagation {other:?} is not accepted"),
                        ))
                    }
                };
                m.bind_options
                    .get_or_insert_with(MountBindOptions::default)
                    .propagation = Some(p);
            }
            "bind-nonrecursive" => {
                m.bind_options
                    .get_or_insert_with(MountBindOptions::default)
                    .non_recursive = Some(match val {
                    None => true,
                    Some(b) => bool_value(flag, &b)?,
                })
            }
            "volume-nocopy" => {
                m.volume_options
                    .get_or_insert_with(MountVolumeOptions::default)
                    .no_copy = Some(match val {
                    None => true,
                    Some(b) => bool_value(flag, &b)?,
                })
            }
            "tmpfs-size" => {
                m.tmpfs_options
                    .get_or_insert_with(MountTmpfsOptions::default)
                    .size_bytes = Some(size(flag, &need(val)?)?)
            }
            "tmpfs-mode" => {
                let s = need(val)?;
                let mode = i64::from_str_radix(&s, 8)
                    .map_err(|_| err(flag, format!("{v:?}: tmpfs-mode {s:?} is not octal")))?;
                m.tmpfs_options
                    .get_or_insert_with(MountTmpfsOptions::default)
                    .mode = Some(mode);
            }
            "consistency" => m.consistency = Some(need(val)?),
            other => return Err(err(flag, format!("{v:?}: unknown field {other:?}"))),
        }
    }
    let _ = typ_given;
    match &m.target {
        Some(t) if t.starts_with('/') => {}
        _ => return Err(err(flag, format!("{v:?} needs an absolute target=..."))),
    }
    if typ == MountType::BIND && !m.source.as_deref().is_some_and(|s| s.starts_with('/')) {
        return Err(err(
            flag,
            format!("{v:?}: a bind mount needs an absolute source=..."),
        ));
    }
    m.typ = Some(typ);
    Ok(m)
}

/// Splits a CSV field list, honouring double quotes (`"device=0,1"`).
fn csv(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn gpus(flag: &str, v: &str) -> Result<DeviceRequest, RunOptionsError> {
    let mut r = DeviceRequest {
        driver: Some(String::new()),
        ..Default::default()
    };
    let mut caps: Vec<String> = Vec::new();
    let mut count_given = false;
    for f in csv(v) {
        match f.split_once('=') {
            None if f == "all" => {
                r.count = Some(-1);
                count_given = true;
            }
            None => {
                r.count = Some(f.parse().map_err(|_| err(flag, format!("{v:?}: {f:?} is not all, a count or key=value")))?);
                count_given = true;
            }
            Some(("count", n)) => {
                r.count = Some(if n == "all" { -1 } else { n.parse().map_err(|_| err(flag, format!("{v:?}: count {n:?} is not a number")))? });
                count_given = true;
            }
            Some(("device", ids)) => r.device_ids = Some(ids.split(',').map(str::to_string).collect()),
            Some(("driver", d)) => r.driver = Some(d.to_string()),
            Some(("capabilities", c)) => caps.extend(c.split(',').map(str::to_string)),
            Some(("options", kv)) => {
                let (k, val) = key_value(flag, kv, "options=key=value")?;
                r.options.get_or_insert_with(HashMap::new).insert(k, val);
            }
            Some((k, _)) => return Err(err(flag, format!("{v:?}: unknown field {k:?}; accepted: count, device, driver, capabilities, options"))),
        }
    }
    if count_given && r.device_ids.is_some() {
        return Err(err(
            flag,
            format!("{v:?}: give a count or a device list, not both"),
        ));
    }
    if !count_given && r.device_ids.is_none() {
        r.count = Some(1);
    }
    if !caps.iter().any(|c| c == "gpu") {
        caps.push("gpu".into());
    }
    r.capabilities = Some(vec![caps]);
    Ok(r)
}

fn device(flag: &str, v: &str) -> Result<DeviceMapping, RunOptionsError> {
    let parts: Vec<&str> = v.split(':').collect();
    let is_perm = |s: &str| !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c));
    let (host, ctr, perm) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perm(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if is_perm(p) => (*h, *c, *p),
        _ => {
            return Err(err(
                flag,
                format!("{v:?} must be host-path[:container-path][:permissions]"),
            ))
        }
    };
    if !host.starts_with('/') || !ctr.starts_with('/') {
        return Err(err(flag, format!("{v:?}: device paths must be absolute")));
    }
    Ok(DeviceMapping {
        path_on_host: Some(host.into()),
        path_in_container: Some(ctr.into()),
        cgroup_permissions: Some(perm.into()),
    })
}

fn security_opt(flag: &str, v: &str) -> Result<String, RunOptionsError> {
    let (k, val) = v
        .split_once('=')
        .or_else(|| v.split_once(':'))
        .unwrap_or((v, ""));
    match k {
        "seccomp" if val != "unconfined" => Err(err(
            flag,
            "seccomp=<profile file> is not supported (the docker CLI reads the file on the client); use seccomp=unconfined or the engine's default",
        )),
        "no-new-privileges" | "seccomp" | "apparmor" | "label" | "systempaths" | "proc-opts" | "mask" | "unmask" => {
            Ok(if v.contains(':') && !v.contains('=') { v.replacen(':', "=", 1) } else { v.to_string() })
        }
        _ => Err(err(flag, format!("{v:?} is not accepted; use no-new-privileges, seccomp=unconfined, apparmor=..., label=... or systempaths=unconfined"))),
    }
}

fn ulimit(flag: &str, v: &str) -> Result<ResourcesUlimits, RunOptionsError> {
    const NAMES: &[&str] = &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let (name, limits) = key_value(flag, v, "name=soft[:hard]")?;
    if !NAMES.contains(&name.as_str()) {
        return Err(err(
            flag,
            format!(
                "{v:?}: unknown limit {name:?}; accepted: {}",
                NAMES.join(", ")
            ),
        ));
    }
    let (soft, hard) = limits.split_once(':').unwrap_or((&limits, &limits));
    let soft = int(flag, soft)?;
    let hard = int(flag, hard)?;
    if hard != -1 && (soft == -1 || soft > hard) {
        return Err(err(
            flag,
            format!("{v:?}: the soft limit must not exceed the hard limit"),
        ));
    }
    Ok(ResourcesUlimits {
        name: Some(name),
        soft: Some(soft),
        hard: Some(hard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> RunOptions {
        parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }
    fn bad(s: &str) -> RunOptionsError {
        match parse(s) {
            Ok(o) => panic!("{s:?} parsed: {o:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn seed_sample() {
        let o = ok("--rm --workdir /");
        assert_eq!(o.workdir.as_deref(), Some("/"));
        assert_eq!(o.notes.len(), 1);
    }

    #[test]
    fn env_forms() {
        let o = ok(r#"-e A=1 --env B=2 --env=C=3 -eD=4 -e=E=5 -e F -e 'G=a b' -eH="x y""#);
        assert_eq!(
            o.env,
            ["A=1", "B=2", "C=3", "D=4", "E=5", "F", "G=a b", "H=x y"]
        );
    }

    #[test]
    fn sizes() {
        // The grammar is crate::size's (tested there); the flags take it.
        assert!(bad("--memory 5x").message.contains("unknown unit"));
        let o = ok("--shm-size 2g -m 512m --memory-swap -1 --memory-reservation=100m");
        assert_eq!(o.host.shm_size, Some(2 << 30));
        assert_eq!(o.host.memory, Some(512 << 20));
        assert_eq!(o.host.memory_swap, Some(-1));
        assert_eq!(o.host.memory_reservation, Some(100 << 20));
    }

    /// Every form of `--user` docker takes passes; an id the engine would refuse fails
    /// here, before any pull (names are resolved later, in the container).
    #[test]
    fn user_forms() {
        for u in [
            "appuser",
            "appuser:appgroup",
            "2000:appgroup",
            "appuser:2200",
            "2000",
            "2000:2000",
        ] {
            assert_eq!(ok(&format!("--user {u}")).user.as_deref(), Some(u));
        }
        let e = bad("--user 2147483648:1");
        assert_eq!(e.flag, "--user");
        assert!(e.message.contains("out of range"), "{e}");
        assert!(bad("-u 1:-1").message.contains("out of range"));
    }

    #[test]
    fn bools_take_values_only_with_equals() {
        let o = ok("--init --privileged=false --read-only=true");
        assert_eq!(
            (o.host.init, o.host.privileged, o.host.readonly_rootfs),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(ok("--init=false").host.init, Some(false));
        let e = bad("--init false");
        assert_eq!(e.flag, "false");
        assert!(e.message.contains("only flags"), "{e}");
        assert!(bad("--init=maybe").message.contains("boolean"));
    }

    #[test]
    fn last_wins_and_repeats() {
        let o = ok("-w /a --workdir /b -u 1:1 --user=2:2 --cap-add SYS_ADMIN --cap-add NET_ADMIN --ulimit nofile=10:20 --ulimit nofile=30");
        assert_eq!(o.workdir.as_deref(), Some("/b"));
        assert_eq!(o.user.as_deref(), Some("2:2"));
        assert_eq!(
            o.host.cap_add,
            Some(vec!["SYS_ADMIN".into(), "NET_ADMIN".into()])
        );
        let u = o.host.ulimits.unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].soft, u[0].hard), (Some(30), Some(30)));
    }

    #[test]
    fn hpc_flags() {
        let o = ok("--ipc=host --network none --net host --runtime runc --cpus 1.5 --cpuset-cpus 0-3 --cpuset-mems 0 \
            -c 512 --pids-limit -1 --pid host --uts host -h node1 --add-host db:127.0.0.1 --dns 127.0.0.53 \
            --dns-search x.local --dns-opt ndots:2 --tmpfs /scratch:size=64m --sysctl net.core.somaxconn=1024 \
            -l a=b -l flag --group-add video --log-driver json-file --log-opt max-size=10m --stop-signal SIGINT \
            --stop-timeout 5 --oom-score-adj -500 --security-opt no-new-privileges --security-opt seccomp:unconfined \
            --device /dev/null:/dev/mynull:rw --device /dev/zero --device-cgroup-rule 'c 195:* rwm' --cap-drop ALL \
            --restart no --pull never --platform linux/amd64 --userns host --cgroup-parent /batch --entrypoint ''");
        let h = &o.host;
        assert_eq!(h.ipc_mode.as_deref(), Some("host"));
        assert_eq!(
            h.network_mode.as_deref(),
            Some("host"),
            "--net is an alias and last wins"
        );
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(-1));
        assert_eq!(h.cpu_shares, Some(512));
        assert_eq!(o.hostname.as_deref(), Some("node1"));
        assert_eq!(h.dns_options, Some(vec!["ndots:2".into()]));
        assert_eq!(h.tmpfs.as_ref().unwrap()["/scratch"], "size=64m");
        assert_eq!(
            o.labels,
            vec![("a".into(), "b".into()), ("flag".into(), String::new())]
        );
        assert_eq!(
            h.log_config.as_ref().unwrap().config.as_ref().unwrap()["max-size"],
            "10m"
        );
        assert_eq!(o.stop_timeout, Some(5));
        assert_eq!(h.oom_score_adj, Some(-500));
        assert_eq!(
            h.security_opt,
            Some(vec![
                "no-new-privileges".into(),
                "seccomp=unconfined".into()
            ])
        );
        let d = h.devices.as_ref().unwrap();
        assert_eq!(d[0].path_in_container.as_deref(), Some("/dev/mynull"));
        assert_eq!(d[0].cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(d[1].path_in_container.as_deref(), Some("/dev/zero"));
        assert_eq!(o.pull, Some(PullPolicy::Never));
        assert_eq!(o.entrypoint.as_deref(), Some(""));
    }

    #[test]
    fn gpus_forms() {
        let g = |s: &str| {
            ok(&format!("--gpus {s}"))
                .host
                .device_requests
                .unwrap()
                .remove(0)
        };
        assert_eq!(g("all").count, Some(-1));
        assert_eq!(g("2").count, Some(2));
        let r = g(r#"'"device=0,2"'"#);
        assert_eq!(r.device_ids, Some(vec!["0".into(), "2".into()]));
        assert_eq!(r.count, None);
        let r = g("count=1,capabilities=utility,driver=nvidia");
        assert_eq!(
            r.capabilities,
            Some(vec![vec!["utility".into(), "gpu".into()]])
        );
        assert_eq!(r.driver.as_deref(), Some("nvidia"));
        assert!(bad("--gpus 'count=1,device=0'")
            .message
            .contains("not both"));
    }

    #[test]
    fn volumes_and_mounts() {
        let o = ok("-v /data:/data:ro -v cache:/cache -v /anon --mount type=bind,src=/opt,dst=/opt,readonly --mount type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777");
        assert_eq!(
            o.volumes[0],
            Volume::Bind {
                spec: "/data:/data:ro".into(),
                target: "/data".into()
            }
        );
        assert_eq!(
            o.volumes[2],
            Volume::Anonymous {
                target: "/anon".into()
            }
        );
        assert_eq!(o.mounts[0].read_only, Some(true));
        assert_eq!(
            o.mounts[1].tmpfs_options.as_ref().unwrap().mode,
            Some(0o1777)
        );
        assert!(bad("-v ./rel:/x").message.contains("absolute host path"));
        assert!(bad("-v /a:rel").message.contains("must be absolute"));
        assert!(bad("-v /a:/b:bogus").message.contains("unknown option"));
        assert!(bad("--mount type=bind,dst=/x")
            .message
            .contains("absolute source"));
        assert!(bad("--mount type=nfs,dst=/x").message.contains("nfs"));
    }

    #[test]
    fn agent_owned_and_unknown_flags_are_named() {
        for (s, flag) in [
            ("--name x", "--name"),
            ("-d", "--detach"),
            ("-it", "--interactive"),
            ("-t", "--tty"),
            ("--restart always", "--restart"),
        ] {
            assert_eq!(bad(s).flag, flag, "{s}");
        }
        let e = bad("--rm --bogus 1");
        assert_eq!(e.flag, "--bogus");
        assert!(e.message.contains("unknown flag"));
        let e = bad("--enn A=1");
        assert!(e.message.contains("--env"), "suggests the near flag: {e}");
        assert_eq!(bad("-p 80:80").flag, "--publish");
        assert!(bad("--security-opt seccomp=/p.json")
            .message
            .contains("seccomp"));
        assert!(bad("--ulimit nofile=20:10").message.contains("soft"));
        assert!(bad("--ulimit bogus=1").message.contains("unknown limit"));
        assert!(bad("--cpus 1.0000000001").message.contains("precise"));
        assert!(bad("-w relative").message.contains("absolute"));
        assert!(bad("--workdir").message.contains("value"), "missing value");
        assert!(bad("-e 'unterminated").message.contains("split"));
    }

    #[test]
    fn empty_options() {
        let o = ok("");
        assert!(o.env.is_empty() && o.workdir.is_none());
        let o = ok("   ");
        assert!(o.notes.is_empty());
    }
}
