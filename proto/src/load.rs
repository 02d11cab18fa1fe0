//! Reading Batch JSON files: a task, an array of tasks, `{"value": [...]}`, a pool, a job
//! or a job schedule.
//!
//! Every error names the file, the JSON path and the problem. Unknown fields are not
//! errors: they come back as warnings, so files written for newer Batch APIs still load.

use crate::job::JobSpec;
use crate::pool::PoolSpec;
use crate::task::TaskSpec;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    /// JSONPath-style location, `$` for the document itself.
    pub path: String,
    pub problem: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.path, self.problem)
    }
}

impl std::error::Error for LoadError {}

/// Parsed items, the JSON path each came from, and warnings about ignored fields.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub items: Vec<(String, T)>,
    pub warnings: Vec<String>,
}

/// Joins a JSON path prefix and a serde path (`a.b[2].c`).
pub fn join_path(prefix: &str, rest: &str) -> String {
    if rest.is_empty() || rest == "." {
        prefix.to_string()
    } else if rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

fn parse_json(file: &str, text: &str) -> Result<Value, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError {
        file: file.into(),
        path: "$".into(),
        problem: format!("not valid JSON: {e}"),
    })
}

/// Deserializes one value, tracking the path of any error and collecting ignored fields.
fn typed<T: DeserializeOwned>(
    file: &str,
    prefix: &str,
    v: Value,
    warnings: &mut Vec<String>,
) -> Result<T, LoadError> {
    let mut ignored = Vec::new();
    let r: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        v,
        &mut |p: serde_ignored::Path<'_>| ignored.push(p.to_string()),
    ));
    match r {
        Ok(t) => {
            for p in ignored {
                let p = seq_to_brackets(&p);
                warnings.push(format!(
                    "{file}: {}: unknown field, ignored",
                    join_path(prefix, &p)
                ));
            }
            Ok(t)
        }
        Err(e) => Err(LoadError {
            file: file.into(),
            path: join_path(prefix, &e.path().to_string()),
            problem: e.into_inner().to_string(),
        }),
    }
}

/// serde_ignored writes sequence indices as `.3`; write them as `[3]` like the error paths.
fn seq_to_brackets(p: &str) -> String {
    let mut out = String::new();
    // `?` marks an Option in serde_ignored's paths; it is not part of the JSON path.
    for (i, seg) in p.split('.').filter(|s| *s != "?").enumerate() {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Loads tasks from any of the three shapes `az batch task create --json-file` accepts.
pub fn tasks(file: &str, text: &str) -> Result<Loaded<TaskSpec>, LoadError> {
    let doc = parse_json(file, text)?;
    let (prefix, list) = match doc {
        Value::Array(list) => ("$".to_string(), list),
        Value::Object(mut m) if !m.contains_key("id") && m.contains_key("value") => {
            match m.remove("value") {
                Some(Value::Array(list)) => ("$.value".to_string(), list),
                _ => {
                    return Err(LoadError {
                        file: file.into(),
                        path: "$.value".into(),
                        problem: "must be an array of tasks".into(),
                    })
                }
            }
        }
        Value::Object(m) => {
            let mut warnings = Vec::new();
            let t = typed(file, "$", Value::Object(m), &mut warnings)?;
            return Ok(Loaded {
                items: vec![("$".into(), t)],
                warnings,
            });
        }
        other => {
            return Err(LoadError {
                file: file.into(),
                path: "$".into(),
                problem: format!(
                    "expected a task object, an array of tasks or {{\"value\": [...]}}, got {}",
                    kind(&other)
                ),
            })
        }
    };
    if list.is_empty() {
        return Err(LoadError {
            file: file.into(),
            path: prefix,
            problem: "holds no tasks".into(),
        });
    }
    let mut warnings = Vec::new();
    let mut items = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let p = format!("{prefix}[{i}]");
        let t = typed(file, &p, v, &mut warnings)?;
        items.push((p, t));
    }
    Ok(Loaded { items, warnings })
}

fn single<T: DeserializeOwned>(file: &str, text: &str, what: &str) -> Result<Loaded<T>, LoadError> {
    let doc = parse_json(file, text)?;
    if !doc.is_object() {
        return Err(LoadError {
            file: file.into(),
            path: "$".into(),
            problem: format!("expected a {what} object, got {}", kind(&doc)),
        });
    }
    let mut warnings = Vec::new();
    let t = typed(file, "$", doc, &mut warnings)?;
    Ok(Loaded {
        items: vec![("$".into(), t)],
        warnings,
    })
}

/// Loads a pool (`PoolAddParameter` subset).
pub fn pool(file: &str, text: &str) -> Result<Loaded<PoolSpec>, LoadError> {
    single(file, text, "pool")
}

/// Loads a job (`JobAddParameter` subset).
pub fn job(file: &str, text: &str) -> Result<Loaded<JobSpec>, LoadError> {
    single(file, text, "job")
}

/// Loads a job schedule (`JobScheduleAddParameter`).
pub fn job_schedule(
    file: &str,
    text: &str,
) -> Result<Loaded<crate::job_schedule::JobScheduleSpec>, LoadError> {
    single(file, text, "job schedule")
}

/// Loads a job schedule update (PATCH or PUT body); a property an update cannot change
/// (`id`, `displayName`, ...) is an error naming it, not a warning.
pub fn job_schedule_update(
    file: &str,
    text: &str,
) -> Result<Loaded<crate::job_schedule::JobScheduleUpdate>, LoadError> {
    use crate::job_schedule::JobScheduleUpdate;
    let doc = parse_json(file, text)?;
    if let Some(k) = doc.as_object().and_then(|m| {
        m.keys()
            .find(|k| !JobScheduleUpdate::FIELDS.contains(&k.as_str()))
    }) {
        return Err(LoadError {
            file: file.into(),
            path: join_path("$", k),
            problem: format!(
                "cannot be changed by a job schedule update (accepted: {})",
                JobScheduleUpdate::FIELDS.join(", ")
            ),
        });
    }
    single(file, text, "job schedule update")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"id":"t1","commandLine":"echo hi",
        "containerSettings":{"imageName":"busybox","containerRunOptions":"--rm"}}"#;

    #[test]
    fn three_shapes() {
        assert_eq!(tasks("f", ONE).unwrap().items.len(), 1);
        assert_eq!(
            tasks("f", &format!("[{ONE},{}]", ONE.replace("t1", "t2")))
                .unwrap()
                .items
                .len(),
            2
        );
        let l = tasks("f", &format!(r#"{{"value":[{ONE}]}}"#)).unwrap();
        assert_eq!(l.items[0].0, "$.value[0]");
        assert_eq!(l.items[0].1.id, "t1");
    }

    #[test]
    fn unknown_fields_warn_with_path() {
        let text = r#"[{"id":"t","commandLine":"x","futureField":1,
            "containerSettings":{"imageName":"i","extra":true}}]"#;
        let l = tasks("f.json", text).unwrap();
        assert_eq!(
            l.warnings,
            vec![
                "f.json: $[0].containerSettings.extra: unknown field, ignored",
                "f.json: $[0].futureField: unknown field, ignored",
            ]
        );
    }

    #[test]
    fn wrong_type_names_file_path_and_expectation() {
        let text = r#"{"value":[{"id":"a","commandLine":"x"},
            {"id":"b","commandLine":"x","containerSettings":{"imageName":5}}]}"#;
        let e = tasks("t.json", text).unwrap_err();
        assert_eq!(e.file, "t.json");
        assert_eq!(e.path, "$.value[1].containerSettings.imageName");
        assert!(e.problem.contains("expected a string"), "{}", e.problem);
    }

    #[test]
    fn missing_field_and_bad_enum() {
        let e = tasks("f", r#"{"id":"a"}"#).unwrap_err();
        assert!(e.problem.contains("commandLine"), "{e}");
        let e = tasks(
            "f",
            r#"{"id":"a","commandLine":"","containerSettings":{"imageName":"i","workingDirectory":"home"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "$.containerSettings.workingDirectory");
        assert!(
            e.problem
                .contains("taskWorkingDirectory, containerImageDefault"),
            "{e}"
        );
        let e = tasks(
            "f",
            r#"{"id":"a","commandLine":"","constraints":{"maxWallClockTime":"10m"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "$.constraints.maxWallClockTime");
    }

    #[test]
    fn not_json_and_wrong_shapes() {
        assert!(tasks("f", "{")
            .unwrap_err()
            .problem
            .contains("not valid JSON"));
        assert!(tasks("f", "3").unwrap_err().problem.contains("a number"));
        assert!(tasks("f", "[]").unwrap_err().problem.contains("no tasks"));
        assert!(pool("p", "[]").unwrap_err().problem.contains("pool object"));
    }

    #[test]
    fn job_schedules_and_their_updates() {
        let l = job_schedule(
            "s.json",
            r#"{"id":"s","schedule":{"recurrenceInterval":"PT1H"},
                "jobSpecification":{"priority":1,"future":true}}"#,
        )
        .unwrap();
        assert_eq!(l.items[0].1.id, "s");
        assert_eq!(
            l.warnings,
            vec!["s.json: $.jobSpecification.future: unknown field, ignored"]
        );
        let e = job_schedule("s.json", r#"{"id":"s","jobSpecification":{}}"#).unwrap_err();
        assert!(e.problem.contains("schedule"), "{e}");
        let e = job_schedule(
            "s.json",
            r#"{"id":"s","schedule":{"startWindow":"5m"},"jobSpecification":{}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "$.schedule.startWindow");
        let u = job_schedule_update("b", r#"{"metadata":[]}"#).unwrap();
        assert_eq!(u.items[0].1.metadata, Some(vec![]));
        assert!(u.items[0].1.schedule.is_none());
        let e = job_schedule_update("b", r#"{"displayName":"x"}"#).unwrap_err();
        assert_eq!(e.path, "$.displayName");
        assert!(
            e.problem.contains("schedule, jobSpecification, metadata"),
            "{e}"
        );
    }
}
