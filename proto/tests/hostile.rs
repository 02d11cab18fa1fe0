//! Hostile input for the JSON loader and validation: every input gives tasks or errors,
//! never a panic. Property tests (proptest; cargo fuzz needs a nightly toolchain this
//! project does not use) plus the named extremes: deep nesting, huge strings, many
//! environment variables, ids at the length limit, Unicode and NUL bytes.
//! `PROPTEST_CASES` raises the case count (default here: 2000 per property).

use berth_proto::{load, validate, JobSpec, PoolSpec};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Loads and validates; returns the problems (load errors included) as text.
fn check(text: &str) -> Vec<String> {
    let (job, pool) = (JobSpec::default_for_run(), PoolSpec::default_for_run());
    match load::tasks("t.json", text) {
        Err(e) => vec![e.to_string()],
        Ok(l) => l
            .items
            .iter()
            .flat_map(|(path, t)| validate::task(path, t, &job, &pool))
            .map(|p| format!("t.json: {}: {}", p.path, p.message))
            .collect(),
    }
}

const KEYS: &[&str] = &[
    "id",
    "commandLine",
    "containerSettings",
    "imageName",
    "containerRunOptions",
    "workingDirectory",
    "registry",
    "registryServer",
    "username",
    "password",
    "environmentSettings",
    "name",
    "value",
    "constraints",
    "maxWallClockTime",
    "retentionTime",
    "maxTaskRetryCount",
    "userIdentity",
    "autoUser",
    "scope",
    "elevationLevel",
    "dependsOn",
    "taskIds",
    "taskIdRanges",
    "start",
    "end",
    "requiredSlots",
    "exitConditions",
    "resourceFiles",
    "outputFiles",
    "displayName",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec!["PT1H", "P1D", "-1", "admin", "pool", "task", "x"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 200, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(String::from), ".{0,8}"],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_load_or_fail_cleanly(s in any::<String>()) {
        let _ = check(&s);
    }

    #[test]
    fn any_json_loads_or_fails_with_a_path(v in json_value()) {
        for p in check(&v.to_string()) {
            prop_assert!(p.starts_with("t.json"), "{}", p);
        }
        // The same document as a task list and inside {"value": [...]}.
        let _ = check(&json!([v.clone()]).to_string());
        let _ = check(&json!({"value": [v]}).to_string());
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000)
}

fn one(t: Value) -> Vec<String> {
    check(&json!([t]).to_string())
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [200, 100_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let e = check(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("recursion limit"), "{}", e[0]);
        let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(!check(&obj).is_empty());
    }
}

#[test]
fn huge_strings_and_many_variables() {
    let big = "x".repeat(16 << 20);
    let problems = one(json!({"id": "big", "commandLine": format!("echo {big}")}));
    assert!(
        problems.is_empty(),
        "a 16 MiB command line is Batch-legal JSON: {problems:?}"
    );
    let env: Vec<Value> = (0..20_000)
        .map(|i| json!({"name": format!("V{i}"), "value": "v".repeat(100)}))
        .collect();
    assert!(
        one(json!({"id": "env", "commandLine": "true", "environmentSettings": env})).is_empty()
    );
    let e = one(json!({"id": &big, "commandLine": "true"}));
    assert!(e.iter().any(|p| p.contains("$[0].id")), "{e:?}");
    assert!(
        e.iter().all(|p| p.len() < 1000),
        "the message does not echo 16 MiB"
    );
}

#[test]
fn ids_at_the_length_limit() {
    let ok = "a".repeat(64);
    assert!(one(json!({"id": ok, "commandLine": "true"})).is_empty());
    let e = one(json!({"id": "a".repeat(65), "commandLine": "true"}));
    assert!(e.iter().any(|p| p.contains("$[0].id")), "{e:?}");
}

#[test]
fn unicode_and_nul_bytes() {
    for id in ["tâche", "任务", "a\u{0}b", "a b", "", "../x"] {
        let e = one(json!({"id": id, "commandLine": "true"}));
        assert!(e.iter().any(|p| p.contains("$[0].id")), "{id:?}: {e:?}");
    }
    // Unicode is fine where Batch takes free text.
    assert!(
        one(json!({"id": "u", "commandLine": "echo 任务 ✓", "displayName": "tâche ✓"})).is_empty()
    );
    // A NUL byte cannot reach a process or the engine: refused where it would.
    for (field, t) in [
        (
            "commandLine",
            json!({"id": "n", "commandLine": "echo a\u{0}b"}),
        ),
        (
            "environmentSettings[0].value",
            json!({"id": "n", "commandLine": "true", "environmentSettings": [{"name": "A", "value": "x\u{0}"}]}),
        ),
        (
            "environmentSettings[0].name",
            json!({"id": "n", "commandLine": "true", "environmentSettings": [{"name": "A\u{0}", "value": "x"}]}),
        ),
        (
            "containerSettings.imageName",
            json!({"id": "n", "commandLine": "true", "containerSettings": {"imageName": "busy\u{0}box"}}),
        ),
        (
            "containerSettings.containerRunOptions",
            json!({"id": "n", "commandLine": "true", "containerSettings": {"imageName": "busybox", "containerRunOptions": "-e A=\u{0}"}}),
        ),
    ] {
        let e = one(t);
        assert!(
            e.iter()
                .any(|p| p.contains(&format!("$[0].{field}")) && p.contains("NUL")),
            "{field}: {e:?}"
        );
    }
}
