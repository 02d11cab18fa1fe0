//! Hostile `containerRunOptions`: every string parses or fails with an error naming a flag
//! and saying what is wrong, never a panic; what parses also passes through the policy
//! check. Property tests (proptest; cargo fuzz needs a nightly toolchain).
//! `PROPTEST_CASES` raises the case count (default here: 2000 per property).

use berth_agent::task::policy::{self, Policy};
use berth_agent::task::run_options::{self, parse};
use proptest::prelude::*;
use std::path::Path;

/// Every way the flag table lets a flag be written, plus words that are not flags.
fn flags() -> Vec<String> {
    let mut v: Vec<String> = vec!["-it".into(), "--".into(), "-".into(), "---x".into()];
    for f in run_options::FLAGS {
        v.push(format!("--{}", f.long));
        v.extend(f.short.map(|c| format!("-{c}")));
        v.extend(f.aliases.iter().map(|a| format!("--{a}")));
    }
    v
}

const VALUES: &[&str] = &[
    "",
    "=",
    "-",
    "--",
    "a=b",
    "A",
    "1g",
    "2GiB",
    "-1",
    "0",
    "99999999999999999999999g",
    "1.5",
    "1e400",
    "/",
    "/dev/fuse",
    "/dev/../etc",
    "/etc:/x:ro",
    "named:/d",
    "host",
    "container:x",
    "type=bind,src=/,dst=/h",
    "type=tmpfs,dst=/t,tmpfs-size=1k",
    "all",
    "device=0,1",
    "\"device=0,1\"",
    "nofile=1:2",
    "nofile=2:1",
    "seccomp=unconfined",
    "seccomp=/p.json",
    "apparmor:unconfined",
    "SYS_ADMIN",
    "CAP_ALL",
    "true",
    "false",
    "任务",
    "💥",
    "a\u{0}b",
    "'unterminated",
    "\"x y\"",
    "\\",
    "$(rm -rf /)",
    "`id`",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(flags()),
        prop::sample::select(VALUES).prop_map(String::from),
        (prop::sample::select(flags()), prop::sample::select(VALUES))
            .prop_map(|(f, v)| format!("{f}={v}")),
        ".{0,12}",
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000)
}

fn exercise(s: &str) -> Result<(), TestCaseError> {
    match parse(s) {
        Ok(o) => {
            let all = Policy::new(policy::ALL);
            if let Err(e) = policy::check(&all, &o, Path::new("/var/lib/berth"), Some(4096)) {
                prop_assert!(e.message.contains("forbid_run_options"), "{}", e);
            }
        }
        Err(e) => {
            prop_assert!(
                !e.message.is_empty(),
                "an error says what is wrong: {:?}",
                e
            );
            prop_assert!(e.to_string().starts_with("containerRunOptions: "), "{}", e);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_string(s in any::<String>()) {
        exercise(&s)?;
    }

    #[test]
    fn flag_soup(words in prop::collection::vec(word(), 0..12), quote in any::<bool>()) {
        let s = if quote {
            words.iter().map(|w| format!("'{}'", w.replace('\'', ""))).collect::<Vec<_>>().join(" ")
        } else {
            words.join(" ")
        };
        exercise(&s)?;
    }
}

#[test]
fn extremes() {
    for s in [
        "-e ".repeat(100_000) + "A=1",
        format!("-e A={}", "x".repeat(8 << 20)),
        "-".repeat(1 << 20),
        "'".repeat(1001),
        (0..5000)
            .map(|i| format!("-e V{i}=v"))
            .collect::<Vec<_>>()
            .join(" "),
        "--memory 1".to_string() + &"0".repeat(5000),
        "\u{0}".repeat(100),
    ] {
        exercise(&s).unwrap();
    }
}
