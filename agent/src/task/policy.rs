//! The node's `containerRunOptions` policy: which options that widen a container's power
//! this node refuses (config `forbid_run_options`, `--forbid-run-options`). Pure: a parsed
//! [`RunOptions`] and the node root in, the first forbidden option out.
//!
//! Default: nothing is forbidden, as in Batch, so that existing task files run unchanged.

use super::run_options::{RunOptions, RunOptionsError, Volume};
use bollard::models::MountType;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// One class of widening options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `--privileged`: every device and capability, no confinement.
    Privileged,
    /// `--cap-add`.
    CapAdd,
    /// `--network/--pid/--ipc/--uts/--userns host` or `container:<id>`.
    HostNamespaces,
    /// `--device`, `--device-cgroup-rule`, `--gpus` (berth's own GPU exposure still applies).
    Devices,
    /// `-v` / `--mount type=bind` from a host path outside the node root.
    Binds,
    /// `--security-opt seccomp=unconfined`, `apparmor=unconfined`, `label=disable`,
    /// `systempaths=unconfined`, `unmask=...`.
    Unconfined,
    /// `--pids-limit` above the node's `default_pids_limit`, or 0/-1 (no limit).
    PidsLimit,
}

pub const ALL: [Rule; 7] = [
    Rule::Privileged,
    Rule::CapAdd,
    Rule::HostNamespaces,
    Rule::Devices,
    Rule::Binds,
    Rule::Unconfined,
    Rule::PidsLimit,
];

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Privileged => "privileged",
            Rule::CapAdd => "cap-add",
            Rule::HostNamespaces => "host-namespaces",
            Rule::Devices => "devices",
            Rule::Binds => "binds",
            Rule::Unconfined => "unconfined",
            Rule::PidsLimit => "pids-limit",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The refused rules, in order, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy(Vec<Rule>);

impl Policy {
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        let mut v: Vec<Rule> = rules.into_iter().collect();
        v.sort();
        v.dedup();
        Policy(v)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    /// From names: `privileged`, `cap-add`, `host-namespaces`, `devices`, `binds`,
    /// `unconfined`, or `all`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut rules = vec![];
        for n in names {
            let n = n.as_ref().trim();
            if n == "all" {
                rules.extend(ALL);
            } else {
                rules.push(n.parse()?);
            }
        }
        Ok(Policy::new(rules))
    }
}

impl FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<_> = ALL.iter().map(|r| r.name()).collect();
            format!(
                "{s:?} is not a run-options rule; use {} or all",
                names.join(", ")
            )
        })
    }
}

fn forbidden(rule: Rule, flag: &str, what: String) -> RunOptionsError {
    RunOptionsError {
        flag: flag.into(),
        message: format!("{what} is forbidden on this node (forbid_run_options: {rule})"),
    }
}

fn host_or_container(mode: &Option<String>) -> bool {
    mode.as_deref()
        .is_some_and(|m| m == "host" || m.starts_with("container:"))
}

/// The first option of `o` that `policy` forbids. `node_root` is where binds may come from;
/// `pids_default` is the node's `default_pids_limit` (none: no limit to raise).
pub fn check(
    policy: &Policy,
    o: &RunOptions,
    node_root: &Path,
    pids_default: Option<i64>,
) -> Result<(), RunOptionsError> {
    let h = &o.host;
    for rule in policy.rules() {
        match rule {
            Rule::Privileged if h.privileged == Some(true) => {
                return Err(forbidden(
                    *rule,
                    "--privileged",
                    "a privileged container".into(),
                ))
            }
            Rule::CapAdd => {
                if let Some(c) = h.cap_add.as_ref().and_then(|c| c.first()) {
                    return Err(forbidden(*rule, "--cap-add", format!("adding {c}")));
                }
            }
            Rule::HostNamespaces => {
                let modes = [
                    ("--network", &h.network_mode),
                    ("--pid", &h.pid_mode),
                    ("--ipc", &h.ipc_mode),
                    ("--uts", &h.uts_mode),
                    ("--userns", &h.userns_mode),
                ];
                for (flag, m) in modes {
                    if host_or_container(m) {
                        let m = m.as_deref().unwrap_or_default();
                        return Err(forbidden(*rule, flag, format!("the namespace {m:?}")));
                    }
                }
            }
            Rule::Devices => {
                if let Some(d) = h.devices.as_ref().and_then(|d| d.first()) {
                    let p = d.path_on_host.clone().unwrap_or_default();
                    return Err(forbidden(*rule, "--device", format!("the device {p}")));
                }
                if let Some(r) = h.device_cgroup_rules.as_ref().and_then(|d| d.first()) {
                    return Err(forbidden(
                        *rule,
                        "--device-cgroup-rule",
                        format!("the rule {r:?}"),
                    ));
                }
                if h.device_requests.as_ref().is_some_and(|d| !d.is_empty()) {
                    return Err(forbidden(*rule, "--gpus", "a device request".into()));
                }
            }
            Rule::Binds => {
                let sources = o
                    .volumes
                    .iter()
                    .filter_map(|v| match v {
                        Volume::Bind { spec, .. } => Some(("-v", spec.split(':').next()?)),
                        Volume::Anonymous { .. } => None,
                    })
                    .chain(o.mounts.iter().filter_map(|m| {
                        (m.typ == Some(MountType::BIND))
                            .then_some(("--mount", m.source.as_deref()?))
                    }));
                for (flag, src) in sources {
                    // A name is a named volume, not a host path.
                    if src.starts_with('/') && !under(Path::new(src), node_root) {
                        return Err(forbidden(
                            *rule,
                            flag,
                            format!(
                                "binding {src} (outside the node root {})",
                                node_root.display()
                            ),
                        ));
                    }
                    if let Some(at) = src
                        .starts_with('/')
                        .then(|| swappable(Path::new(src), node_root))
                        .flatten()
                    {
                        return Err(forbidden(
                            *rule,
                            flag,
                            format!(
                                "binding {src} (a task can replace {} with a link before the engine binds it)",
                                at.display()
                            ),
                        ));
                    }
                }
            }
            Rule::Unconfined => {
                for s in h.security_opt.iter().flatten() {
                    let wide = matches!(
                        s.as_str(),
                        "seccomp=unconfined"
                            | "apparmor=unconfined"
                            | "label=disable"
                            | "systempaths=unconfined"
                    ) || s.starts_with("unmask=");
                    if wide {
                        return Err(forbidden(*rule, "--security-opt", format!("{s:?}")));
                    }
                }
            }
            Rule::PidsLimit => {
                // The engine reads 0 and any negative value as no limit.
                if let (Some(want), Some(node)) = (h.pids_limit, pids_default) {
                    if want <= 0 {
                        return Err(forbidden(
                            *rule,
                            "--pids-limit",
                            format!("no process limit ({want}; this node's default_pids_limit is {node})"),
                        ));
                    }
                    if want > node {
                        return Err(forbidden(
                            *rule,
                            "--pids-limit",
                            format!("raising the process limit to {want} (this node's default_pids_limit is {node})"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `p` is `root` or below it, after `..` is resolved and symlinks are followed as
/// far as the path exists (a task may plant a link to `/` under the node root; the engine
/// follows it when it binds).
pub fn under(p: &Path, root: &Path) -> bool {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| lexical(root));
    resolve(p).starts_with(&root)
}

/// Where a task could change what the bind source `src` (under `root`) names between this
/// check and the engine's bind, which follows links and comes after the image pull: the
/// first component below the node root that is a link, or that sits in a directory a
/// user other than root can write (a sticky directory of root's protects root's own
/// entries), or that is missing from such a directory. None when only root can change
/// the path. The node root itself is the operator's.
fn swappable(src: &Path, root: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let lex = lexical(src);
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| lexical(root));
    // A source that reaches the node root only through a link elsewhere is refused too.
    let rel = lex
        .strip_prefix(lexical(root))
        .or_else(|_| lex.strip_prefix(&real_root))
        .map(Path::to_path_buf)
        .ok();
    let Some(rel) = rel else { return Some(lex) };
    let mut dir = real_root;
    // No node root yet: no task has written anything below it.
    let Ok(mut dir_md) = std::fs::symlink_metadata(&dir) else {
        return None;
    };
    for c in rel.components() {
        let here = dir.join(c);
        let open = dir_md.uid() != 0 || dir_md.mode() & 0o022 != 0;
        let sticky = dir_md.uid() == 0 && dir_md.mode() & 0o1000 != 0;
        match std::fs::symlink_metadata(&here) {
            Ok(md) if md.file_type().is_symlink() => return Some(here),
            Ok(md) if open && !(sticky && md.uid() == 0) => return Some(here),
            Ok(md) => {
                dir = here;
                dir_md = md;
            }
            // Missing: whoever can write the directory can make it a link.
            Err(_) => return open.then_some(here),
        }
    }
    None
}

fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The canonical form of the longest existing ancestor, plus the rest lexically.
fn resolve(p: &Path) -> PathBuf {
    let p = lexical(p);
    let mut existing = p.as_path();
    let mut rest = vec![];
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::run_options::parse;

    /// The node default the tests assume, as the daemon's own.
    const PIDS: Option<i64> = Some(4096);

    fn denied(policy: &Policy, opts: &str, root: &Path) -> Option<String> {
        check(policy, &parse(opts).unwrap(), root, PIDS)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn each_rule_names_the_option() {
        let all = Policy::from_names(&["all"]).unwrap();
        let root = Path::new("/var/lib/berth-policy-test");
        let cases = [
            ("--privileged", "--privileged", "privileged"),
            ("--cap-add SYS_ADMIN", "--cap-add", "cap-add"),
            ("--network host", "--network", "host-namespaces"),
            ("--net=container:abc", "--network", "host-namespaces"),
            ("--pid host", "--pid", "host-namespaces"),
            ("--ipc host", "--ipc", "host-namespaces"),
            ("--uts host", "--uts", "host-namespaces"),
            ("--userns host", "--userns", "host-namespaces"),
            ("--device /dev/fuse", "--device", "devices"),
            (
                "--device-cgroup-rule 'c 10:* rwm'",
                "--device-cgroup-rule",
                "devices",
            ),
            ("--gpus all", "--gpus", "devices"),
            ("-v /etc:/x", "-v", "binds"),
            ("-v /var/lib/berth-policy-test/../../etc:/x", "-v", "binds"),
            ("--mount type=bind,src=/,dst=/host", "--mount", "binds"),
            (
                "--security-opt seccomp=unconfined",
                "--security-opt",
                "unconfined",
            ),
            (
                "--security-opt apparmor:unconfined",
                "--security-opt",
                "unconfined",
            ),
            (
                "--security-opt label=disable",
                "--security-opt",
                "unconfined",
            ),
            (
                "--security-opt systempaths=unconfined",
                "--security-opt",
                "unconfined",
            ),
            ("--pids-limit 4097", "--pids-limit", "pids-limit"),
            ("--pids-limit 0", "--pids-limit", "pids-limit"),
            ("--pids-limit=-1", "--pids-limit", "pids-limit"),
        ];
        for (opts, flag, rule) in cases {
            let e = denied(&all, opts, root).unwrap_or_else(|| panic!("{opts} passed"));
            assert!(
                e.starts_with(&format!("containerRunOptions: {flag}: ")),
                "{opts}: {e}"
            );
            assert!(
                e.ends_with(&format!("(forbid_run_options: {rule})")),
                "{opts}: {e}"
            );
            // Only that rule refuses it.
            let others = Policy::new(ALL.into_iter().filter(|r| r.name() != rule));
            assert_eq!(denied(&others, opts, root), None, "{opts}");
        }
    }

    #[test]
    fn narrowing_and_harmless_options_pass_every_rule() {
        let all = Policy::from_names(&["all"]).unwrap();
        let root = Path::new("/var/lib/berth-policy-test");
        for opts in [
            "",
            "--network none",
            "--network bridge",
            "--ipc private",
            "--ipc shareable",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--read-only --memory 1g --cpus 2 --shm-size 2g",
            "-v /var/lib/berth-policy-test/shared/data:/data:ro",
            "-v named:/data",
            "-v /scratch",
            "--mount type=volume,src=cache,dst=/cache",
            "--mount type=tmpfs,dst=/tmp",
            "--privileged=false",
            "--pids-limit 4096",
            "--pids-limit 64",
        ] {
            assert_eq!(denied(&all, opts, root), None, "{opts}");
        }
        // Nothing forbidden: everything passes, as in Batch.
        assert_eq!(
            denied(
                &Policy::default(),
                "--privileged --network host -v /:/h",
                root
            ),
            None
        );
    }

    #[test]
    fn the_pids_limit_rule_compares_with_the_node_default() {
        let rule = Policy::new([Rule::PidsLimit]);
        let root = Path::new("/var/lib/berth-policy-test");
        let e = denied(&rule, "--pids-limit 10000", root).unwrap();
        assert_eq!(e, "containerRunOptions: --pids-limit: raising the process limit to 10000 (this node's default_pids_limit is 4096) is forbidden on this node (forbid_run_options: pids-limit)");
        let e = denied(&rule, "--pids-limit -1", root).unwrap();
        assert!(e.contains("no process limit (-1;"), "{e}");
        // No node default: there is no limit to raise.
        let o = parse("--pids-limit -1").unwrap();
        assert_eq!(check(&rule, &o, root, None), Ok(()));
    }

    #[test]
    fn a_symlink_under_the_node_root_does_not_escape() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::os::unix::fs::symlink("/", root.join("shared/escape")).unwrap();
        let all = Policy::from_names(&["binds"]).unwrap();
        let via_link = format!("-v {}/shared/escape/etc:/x", root.display());
        let e = denied(&all, &via_link, &root).expect("a link to / is outside");
        assert!(e.contains("outside the node root"), "{e}");
        let missing = format!("-v {}/applications/new/dir:/x", root.display());
        assert_eq!(
            denied(&all, &missing, &root),
            None,
            "not yet there, but inside"
        );
    }

    /// The engine resolves a bind's source when it starts the container, long after the
    /// check (the image pull lies between): a directory a task made under `shared/` (or
    /// any directory whose parent a task can write) passes as a real directory, and the
    /// task swaps it for a link to `/` before the engine binds it. Such sources are refused;
    /// paths only root can change are not.
    #[test]
    fn a_bind_source_a_task_can_swap_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        for sub in ["shared", "applications/tools", "workitems/j/job-1/t/wd"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::set_permissions(root.join("shared"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        // Made by a task: its own, in the sticky shared directory.
        std::fs::create_dir(root.join("shared/x")).unwrap();
        std::os::unix::fs::chown(root.join("shared/x"), Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(root.join("workitems/j/job-1/t"), Some(65534), Some(65534))
            .unwrap();
        let all = Policy::from_names(&["binds"]).unwrap();
        let bind = |p: &str| denied(&all, &format!("-v {}/{p}:/x", root.display()), &root);
        for swappable in [
            "shared/x",
            "shared/x/deeper",
            "shared/new",
            "workitems/j/job-1/t/wd",
        ] {
            let e = bind(swappable).unwrap_or_else(|| panic!("{swappable} was allowed"));
            assert!(
                e.contains("a task can replace") && e.contains("(forbid_run_options: binds)"),
                "{swappable}: {e}"
            );
        }
        for fixed in [
            "shared",
            "applications/tools",
            "applications/new/dir",
            "workitems/j/job-1/t",
        ] {
            assert_eq!(bind(fixed), None, "{fixed}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(Policy::from_names(&["all"]).unwrap().rules(), &ALL);
        assert_eq!(
            Policy::from_names(&["binds", "privileged", "binds"])
                .unwrap()
                .rules(),
            &[Rule::Privileged, Rule::Binds]
        );
        let e = Policy::from_names(&["root"]).unwrap_err();
        assert!(e.contains("\"root\" is not a run-options rule; use privileged, cap-add, host-namespaces, devices, binds, unconfined, pids-limit or all"), "{e}");
    }
}
