use super::probe::{probe, Found};
use super::*;
use crate::{JobSpec, PoolSpec, TaskSpec};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeSet;

/// Compares shape `name` with what `T` holds at `path`, then the shapes inside it; a
/// problem goes to `errors` once, however often its shape is met.
fn audit<T: DeserializeOwned>(
    name: &'static str,
    path: &mut Vec<&'static str>,
    seen: &mut BTreeSet<&'static str>,
    errors: &mut BTreeSet<String>,
) {
    let s = shape(name);
    seen.insert(s.name);
    let at = || format!("{} at {}", s.name, path.join("."));
    let Found::Struct(rust, fields) = probe::<T>(path) else {
        errors.insert(format!("{}: not a struct", at()));
        return;
    };
    if rust != s.rust {
        errors.insert(format!(
            "{}: the table says struct {}, it is {rust}",
            at(),
            s.rust
        ));
    }
    for f in fields {
        if !s.fields.iter().any(|t| t.name == *f) {
            errors.insert(format!(
                "{}.{f}: the struct {rust} has it and the table does not: \
                 add it to proto/src/fields.rs as acted on, refused or a no-op",
                s.name
            ));
        }
    }
    for f in s.fields {
        if !fields.contains(&f.name) {
            errors.insert(format!(
                "{}.{}: in the table, not in the struct {rust}",
                s.name, f.name
            ));
            continue;
        }
        path.push(f.name);
        let problem = match (f.treatment, f.shape, probe::<T>(path)) {
            (_, _, Found::Map) => {
                Some("a map or flattened struct, which the audit cannot see into".into())
            }
            (Treatment::Acted, Some(inner), Found::Struct(..)) => {
                audit::<T>(inner, path, seen, errors);
                None
            }
            (Treatment::Acted, None, Found::Struct(r, _)) => Some(format!(
                "holds struct {r}; give the field its shape in the table"
            )),
            (Treatment::Acted, Some(inner), Found::Leaf) => Some(format!(
                "the table gives it shape {inner}, but it is a plain value"
            )),
            (_, Some(inner), _) if f.treatment != Treatment::Acted => {
                Some(format!("only acted-on fields have a shape (not {inner})"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            errors.insert(format!("{}.{}: {problem}", s.name, f.name));
        }
        path.pop();
    }
}

/// Every field of every struct berth accepts is in the table, and the table has nothing
/// the structs lack: a field added later without a line in the table fails here.
#[test]
fn the_table_holds_every_field_of_the_structs() {
    let (mut seen, mut errors) = (BTreeSet::new(), BTreeSet::new());
    audit::<TaskSpec>(TASK, &mut vec![], &mut seen, &mut errors);
    audit::<JobSpec>(JOB, &mut vec![], &mut seen, &mut errors);
    audit::<PoolSpec>(POOL, &mut vec![], &mut seen, &mut errors);
    audit::<crate::job_schedule::JobScheduleSpec>(
        JOB_SCHEDULE,
        &mut vec![],
        &mut seen,
        &mut errors,
    );
    for s in SHAPES {
        if !seen.contains(s.name) {
            errors.insert(format!("{}: no acted-on field holds this shape", s.name));
        }
    }
    assert!(errors.is_empty(), "{}", Vec::from_iter(errors).join("\n"));
}

/// The audit itself sees a field missing from the table, and one the struct lacks.
#[test]
fn the_audit_catches_a_missing_and_a_stale_field() {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct TaskContainerSettings {
        image_name: String,
        new_field: Option<String>,
    }
    let (mut seen, mut errors) = (BTreeSet::new(), BTreeSet::new());
    audit::<TaskContainerSettings>("TaskContainerSettings", &mut vec![], &mut seen, &mut errors);
    let all = Vec::from_iter(errors).join("\n");
    assert!(
        all.contains("TaskContainerSettings.newField: the struct"),
        "{all}"
    );
    assert!(
        all.contains("TaskContainerSettings.registry: in the table, not"),
        "{all}"
    );
}

#[test]
fn names_are_unique_and_reasons_given() {
    let mut shapes = BTreeSet::new();
    for s in SHAPES {
        assert!(shapes.insert(s.name), "shape {} twice", s.name);
        let mut names = BTreeSet::new();
        for f in s.fields {
            assert!(names.insert(f.name), "{}.{} twice", s.name, f.name);
            if let Treatment::Refused(r) | Treatment::NoOp(r) = f.treatment {
                assert!(!r.is_empty() && !r.ends_with('.'), "{}.{}", s.name, f.name);
            }
        }
    }
}

/// Refused fields are found at any depth, in lists too; `null` and `[]` are absent; the
/// inside of a refused or no-op value is not looked into.
#[test]
fn refused_fields_are_found_with_their_paths() {
    let task = json!({"id": "t", "commandLine": "x",
        "multiInstanceSettings": {},
        "applicationPackageReferences": [],
        "authenticationTokenSettings": null,
        "affinityInfo": {"identityReference": {}},
        "containerSettings": {"imageName": "i", "registry": {"identityReference": {"resourceId": "r"}}},
        "resourceFiles": [{"httpUrl": "h"}, {"autoStorageContainerName": "c", "identityReference": {}}],
        "outputFiles": [{"filePattern": "*", "destination": {"container": {"containerUrl": "u", "identityReference": {}}}}]});
    let found: Vec<String> = refused_in("$.value[3]", TASK, &task)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        found,
        [
            "$.value[3].containerSettings.registry.identityReference",
            "$.value[3].resourceFiles[1].autoStorageContainerName",
            "$.value[3].resourceFiles[1].identityReference",
            "$.value[3].outputFiles[0].destination.container.identityReference",
            "$.value[3].multiInstanceSettings",
        ]
    );
    let pool = json!({"id": "p", "virtualMachineConfiguration": {"containerConfiguration":
        {"containerRegistries": [{"username": "u"}, {"identityReference": {}}]}}});
    assert_eq!(
        refused_in("$", POOL, &pool),
        [(
            "$.virtualMachineConfiguration.containerConfiguration.containerRegistries[1].identityReference".to_string(),
            "berth has no managed identity; give username and password"
        )]
    );
}

/// One markdown list item, wrapped as the README is (continuation lines indented).
fn item(text: &str) -> String {
    let mut out = String::from("-");
    let mut line = 1;
    for w in text.split(' ') {
        if line + 1 + w.len() > 92 && line > 2 {
            out.push_str("\n ");
            line = 1;
        }
        out.push(' ');
        out.push_str(w);
        line += 1 + w.len();
    }
    out.push('\n');
    out
}

/// The README's three lists, as the table makes them.
fn readme_lists() -> String {
    let (mut acted, mut refused, mut no_op) = (String::new(), String::new(), String::new());
    for s in SHAPES {
        let names: Vec<String> = s
            .fields
            .iter()
            .filter(|f| f.treatment == Treatment::Acted)
            .map(|f| format!("`{}`", f.name))
            .collect();
        if !names.is_empty() {
            acted.push_str(&item(&format!("`{}`: {}", s.name, names.join(", "))));
        }
        for f in s.fields {
            match f.treatment {
                Treatment::Refused(r) => {
                    refused.push_str(&item(&format!("`{}.{}`: {r}", s.name, f.name)))
                }
                Treatment::NoOp(r) => {
                    no_op.push_str(&item(&format!("`{}.{}`: {r}", s.name, f.name)))
                }
                Treatment::Acted => {}
            }
        }
    }
    format!(
        "**Acted on**, as the sections above describe:\n\n{acted}\n**Refused**, each an \
         input error naming the field (`is not supported: <reason>`):\n\n{refused}\n\
         **Accepted with no effect** (documented no-ops), each with its reason:\n\n{no_op}"
    )
}

/// The README's lists are the table's (run with `BERTH_WRITE_README=1` to rewrite them).
#[test]
fn the_readme_lists_the_table() {
    const BEGIN: &str = "<!-- fields: generated from proto/src/fields.rs -->\n";
    const END: &str = "<!-- fields: end -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find(BEGIN).expect("the README's field lists") + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("the end of the field lists");
    let want = readme_lists();
    if readme[start..end] != want && std::env::var_os("BERTH_WRITE_README").is_some() {
        std::fs::write(
            path,
            format!("{}{want}{}", &readme[..start], &readme[end..]),
        )
        .unwrap();
        return;
    }
    assert!(
        readme[start..end] == want,
        "the README's field lists differ from the table; they should read:\n{want}"
    );
}
