//! THE flag table of `containerRunOptions`: one entry per docker flag berth knows, saying
//! how it is written (long name, short form, aliases, value kind), what berth does with it
//! (mapped into the create body, accepted without effect, refused because berth owns it, or
//! refused as unsupported) and which `forbid_run_options` rule refuses it when it widens a
//! container's power. The parser builds its grammar from this table, refuses by it, and the
//! tests check every entry: each accepted flag takes effect, each rule refuses its flags
//! and no other, the README lists exactly the accepted ones, and the hostile property test
//! draws its flags from it. A flag added here and forgotten elsewhere fails a test, not a
//! task.

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag`, or `--flag=true|false`.
    Bool,
    /// One value; the last one given wins.
    One,
    /// Repeatable; every value counts.
    Many,
}

/// What berth does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Parsed and mapped into the create body (`apply_bool`, `apply_one`, `apply_many`).
    Mapped,
    /// Accepted; without effect (a note says so).
    NoEffect,
    /// Refused: berth itself does what the flag would; the text says why.
    AgentOwned(&'static str),
    /// Refused: a docker flag berth does not implement.
    Unsupported,
}

/// One docker flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    /// Other long names docker accepts for it.
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub role: Role,
    /// The `forbid_run_options` rule (`task::policy::Rule` by name) that refuses this flag's
    /// widening values.
    pub rule: Option<&'static str>,
    /// A value that takes effect; for a flag with a rule, one that widens power.
    pub sample: &'static str,
}

impl Flag {
    /// Accepted in a task's options (mapped, or accepted without effect).
    pub fn accepted(&self) -> bool {
        matches!(self.role, Role::Mapped | Role::NoEffect)
    }
}

/// Every flag berth knows, in docker's terms.
#[rustfmt::skip]
pub const FLAGS: &[Flag] = &[
    Flag { long: "rm", short: None, aliases: &[], kind: Kind::Bool, role: Role::NoEffect, rule: None, sample: "true" },
    Flag { long: "privileged", short: None, aliases: &[], kind: Kind::Bool, role: Role::Mapped, rule: Some("privileged"), sample: "true" },
    Flag { long: "read-only", short: None, aliases: &[], kind: Kind::Bool, role: Role::Mapped, rule: None, sample: "true" },
    Flag { long: "init", short: None, aliases: &[], kind: Kind::Bool, role: Role::Mapped, rule: None, sample: "true" },
    Flag { long: "oom-kill-disable", short: None, aliases: &[], kind: Kind::Bool, role: Role::Mapped, rule: None, sample: "true" },
    Flag { long: "no-healthcheck", short: None, aliases: &[], kind: Kind::Bool, role: Role::Unsupported, rule: None, sample: "true" },
    Flag { long: "publish-all", short: Some('P'), aliases: &[], kind: Kind::Bool, role: Role::Unsupported, rule: None, sample: "true" },
    Flag { long: "interactive", short: Some('i'), aliases: &[], kind: Kind::Bool, role: Role::AgentOwned("batch tasks have no standard input"), rule: None, sample: "true" },
    Flag { long: "tty", short: Some('t'), aliases: &[], kind: Kind::Bool, role: Role::AgentOwned("a terminal would change how stdout and stderr are captured"), rule: None, sample: "true" },
    Flag { long: "detach", short: Some('d'), aliases: &[], kind: Kind::Bool, role: Role::AgentOwned("berth always runs the container detached and waits for it"), rule: None, sample: "true" },
    Flag { long: "quiet", short: Some('q'), aliases: &[], kind: Kind::Bool, role: Role::NoEffect, rule: None, sample: "true" },
    Flag { long: "sig-proxy", short: None, aliases: &[], kind: Kind::Bool, role: Role::AgentOwned("berth delivers signals itself"), rule: None, sample: "true" },
    Flag { long: "disable-content-trust", short: None, aliases: &[], kind: Kind::Bool, role: Role::Unsupported, rule: None, sample: "true" },
    Flag { long: "workdir", short: Some('w'), aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "/w" },
    Flag { long: "user", short: Some('u'), aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "1000:1000" },
    Flag { long: "shm-size", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "64m" },
    Flag { long: "ipc", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: Some("host-namespaces"), sample: "host" },
    Flag { long: "network", short: None, aliases: &["net"], kind: Kind::One, role: Role::Mapped, rule: Some("host-namespaces"), sample: "host" },
    Flag { long: "runtime", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "runc" },
    Flag { long: "memory", short: Some('m'), aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "512m" },
    Flag { long: "memory-swap", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "1g" },
    Flag { long: "memory-reservation", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "256m" },
    Flag { long: "memory-swappiness", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "10" },
    Flag { long: "cpus", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "1.5" },
    Flag { long: "cpuset-cpus", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "0-1" },
    Flag { long: "cpuset-mems", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "0" },
    Flag { long: "cpu-shares", short: Some('c'), aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "512" },
    Flag { long: "cpu-period", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "100000" },
    Flag { long: "cpu-quota", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "50000" },
    Flag { long: "cpu-rt-period", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "cpu-rt-runtime", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "blkio-weight", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "500" },
    Flag { long: "pids-limit", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: Some("pids-limit"), sample: "100000" },
    Flag { long: "entrypoint", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "/bin/sh" },
    Flag { long: "pid", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: Some("host-namespaces"), sample: "host" },
    Flag { long: "uts", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: Some("host-namespaces"), sample: "host" },
    Flag { long: "hostname", short: Some('h'), aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "h" },
    Flag { long: "domainname", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "d" },
    Flag { long: "userns", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: Some("host-namespaces"), sample: "host" },
    Flag { long: "cgroup-parent", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "/x" },
    Flag { long: "cgroupns", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "log-driver", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "json-file" },
    Flag { long: "stop-signal", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "SIGINT" },
    Flag { long: "stop-timeout", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "5" },
    Flag { long: "oom-score-adj", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "10" },
    Flag { long: "name", short: None, aliases: &[], kind: Kind::One, role: Role::AgentOwned("berth names containers itself so that it can find them after a restart"), rule: None, sample: "x" },
    Flag { long: "restart", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "no" },
    Flag { long: "platform", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "linux/amd64" },
    Flag { long: "pull", short: None, aliases: &[], kind: Kind::One, role: Role::Mapped, rule: None, sample: "always" },
    Flag { long: "cidfile", short: None, aliases: &[], kind: Kind::One, role: Role::AgentOwned("berth records the container id in the task's containerInfo"), rule: None, sample: "x" },
    Flag { long: "detach-keys", short: None, aliases: &[], kind: Kind::One, role: Role::AgentOwned("batch tasks have no standard input"), rule: None, sample: "x" },
    Flag { long: "mac-address", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "ip", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "ip6", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "volume-driver", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "isolation", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "kernel-memory", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "health-cmd", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "health-interval", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "health-timeout", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "health-retries", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "health-start-period", short: None, aliases: &[], kind: Kind::One, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "env", short: Some('e'), aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "A=1" },
    Flag { long: "env-file", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "volume", short: Some('v'), aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("binds"), sample: "/etc:/x" },
    Flag { long: "mount", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("binds"), sample: "type=bind,src=/etc,dst=/x" },
    Flag { long: "gpus", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("devices"), sample: "all" },
    Flag { long: "device", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("devices"), sample: "/dev/fuse" },
    Flag { long: "device-cgroup-rule", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("devices"), sample: "c 1:3 mr" },
    Flag { long: "cap-add", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("cap-add"), sample: "SYS_ADMIN" },
    Flag { long: "cap-drop", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "NET_RAW" },
    Flag { long: "security-opt", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: Some("unconfined"), sample: "seccomp=unconfined" },
    Flag { long: "ulimit", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "nofile=10:20" },
    Flag { long: "add-host", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "h:192.0.2.1" },
    Flag { long: "dns", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "192.0.2.53" },
    Flag { long: "dns-search", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "example.com" },
    Flag { long: "dns-option", short: None, aliases: &["dns-opt"], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "ndots:1" },
    Flag { long: "tmpfs", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "/t" },
    Flag { long: "sysctl", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "net.core.somaxconn=1024" },
    Flag { long: "label", short: Some('l'), aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "a=b" },
    Flag { long: "label-file", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "group-add", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "100" },
    Flag { long: "log-opt", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "max-size=1m" },
    Flag { long: "storage-opt", short: None, aliases: &[], kind: Kind::Many, role: Role::Mapped, rule: None, sample: "size=1G" },
    Flag { long: "publish", short: Some('p'), aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "expose", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "link", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "link-local-ip", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "volumes-from", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "network-alias", short: None, aliases: &["net-alias"], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "attach", short: Some('a'), aliases: &[], kind: Kind::Many, role: Role::AgentOwned("berth attaches to stdout and stderr itself"), rule: None, sample: "x" },
    Flag { long: "blkio-weight-device", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "device-read-bps", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "device-write-bps", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "device-read-iops", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
    Flag { long: "device-write-iops", short: None, aliases: &[], kind: Kind::Many, role: Role::Unsupported, rule: None, sample: "x" },
];

/// The flag written `--long`.
pub fn find(long: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.long == long)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::policy::{self, Policy, Rule};
    use std::path::Path;

    /// The node's default process limit these tests assume.
    const PIDS_DEFAULT: i64 = 4096;

    /// `--long sample`, quoted as a shell would need.
    fn written(f: &Flag, long: &str) -> String {
        match f.kind {
            Kind::Bool => format!("--{long}={}", f.sample),
            _ => format!("--{long} {}", shell_words::quote(f.sample)),
        }
    }

    #[test]
    fn every_accepted_flag_takes_its_sample_under_each_of_its_names() {
        for f in FLAGS {
            let names = std::iter::once(f.long).chain(f.aliases.iter().copied());
            for long in names {
                let r = super::super::parse(&written(f, long));
                if f.accepted() {
                    assert!(r.is_ok(), "--{long}: {:?}", r.err());
                } else {
                    let e = r.expect_err(long);
                    assert_eq!(e.flag, format!("--{}", f.long), "{e}");
                }
            }
        }
    }

    #[test]
    fn a_refused_flag_says_why() {
        for f in FLAGS {
            let Err(e) = super::super::parse(&written(f, f.long)) else {
                continue;
            };
            match f.role {
                Role::AgentOwned(why) => assert!(e.message.contains(why), "{e}"),
                Role::Unsupported => assert!(e.message.contains("does not support"), "{e}"),
                _ => unreachable!("accepted flags parse: {e}"),
            }
        }
    }

    /// Each widening flag is refused by its rule and by no other; a flag without a rule is
    /// refused by none.
    #[test]
    fn each_rule_refuses_exactly_its_flags() {
        let root = Path::new("/mnt/batch/tasks");
        for f in FLAGS.iter().filter(|f| f.accepted()) {
            let o = super::super::parse(&written(f, f.long)).unwrap();
            let own: Option<Rule> = f.rule.map(|r| r.parse().unwrap());
            for rule in policy::ALL {
                let refused =
                    policy::check(&Policy::new([rule]), &o, root, Some(PIDS_DEFAULT)).is_err();
                assert_eq!(refused, own == Some(rule), "--{} under {rule}", f.long);
            }
        }
    }

    /// The README's "Accepted:" list of `containerRunOptions` is the table's accepted flags.
    #[test]
    fn the_readme_lists_exactly_the_accepted_flags() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("Accepted: `-e/--env`")
            .expect("the README's accepted-flags list");
        let end = start + readme[start..].find("\n\n").unwrap();
        let mut listed: Vec<&str> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .flat_map(|w| w.split('/'))
            .filter_map(|w| w.split_whitespace().next())
            .filter_map(|w| w.strip_prefix("--"))
            .filter(|w| !FLAGS.iter().any(|f| f.aliases.contains(w)))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let mut accepted: Vec<&str> = FLAGS
            .iter()
            .filter(|f| f.accepted())
            .map(|f| f.long)
            .collect();
        accepted.sort_unstable();
        assert_eq!(listed, accepted);
    }
}
