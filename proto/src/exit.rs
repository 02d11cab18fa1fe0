//! A task's `exitConditions` (Batch REST `ExitConditions`, spec §2.5): what its end means
//! for its dependants (`dependencyAction`) and for its job (`jobAction`). Pure.
//!
//! Precedence, as Batch documents it: an exit code listed in `exitCodes`, then one in
//! `exitCodeRanges` (inclusive), wins over everything, an upload error included; then
//! `preProcessingError` for a task that could not start, `fileUploadError` for an upload
//! that failed; then `default` for every other failure. Exit code 0 gets anything but
//! the defaults only when listed. A field left out takes Batch's default for the
//! outcome: `jobAction` `none` and `dependencyAction` `satisfy` for a success, `terminate`
//! and `block` for every failure.

use crate::common::batch_enum;
use crate::failure::FailureCode;
use crate::status::ExecutionInfo;
use serde::{Deserialize, Serialize};

batch_enum!(
    /// `ExitOptions.jobAction`: what the task's end does to its job. Honoured only when
    /// the job's `onTaskFailure` is `performexitoptionsjobaction`.
    JobAction {
        None => "none",
        Disable => "disable",
        Terminate => "terminate",
    }
);

batch_enum!(
    /// `ExitOptions.dependencyAction`: whether tasks that depend on this one may run.
    DependencyAction {
        Satisfy => "satisfy",
        Block => "block",
    }
);

/// `ExitOptions`: either field may be left out (see the module's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_action: Option<JobAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_action: Option<DependencyAction>,
}

/// `ExitCodeMapping`: one exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitCodeMapping {
    pub code: i64,
    pub exit_options: ExitOptions,
}

/// `ExitCodeRangeMapping`: `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitCodeRangeMapping {
    pub start: i64,
    pub end: i64,
    pub exit_options: ExitOptions,
}

/// `ExitConditions` as Batch's REST JSON has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitConditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<ExitCodeMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_code_ranges: Vec<ExitCodeRangeMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_processing_error: Option<ExitOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_upload_error: Option<ExitOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ExitOptions>,
}

/// How a task ended, as exit conditions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its process exited with this code (and its outputs, if any, were uploaded).
    Exit(i64),
    /// It could not start: resource files, image, container settings, ...
    PreProcessingError,
    /// An output upload failed; the exit code, when the process ran.
    FileUploadError(Option<i64>),
    /// It ended otherwise (stopped by a terminate, its engine lost...) with no exit code.
    Other,
}

impl Outcome {
    /// The outcome an execution info records: an upload failure code is an upload error,
    /// a failure with no exit code before any process ran a pre-processing error.
    pub fn of(info: &ExecutionInfo) -> Outcome {
        let code = info
            .failure_info
            .as_ref()
            .and_then(|f| f.code.parse::<FailureCode>().ok());
        match (code, info.exit_code) {
            (Some(c), exit) if c.is_upload() => Outcome::FileUploadError(exit),
            (_, Some(exit)) => Outcome::Exit(exit),
            (None, None) => Outcome::Other,
            (Some(FailureCode::TaskEnded | FailureCode::EngineUnavailable), None) => Outcome::Other,
            (Some(_), None) => Outcome::PreProcessingError,
        }
    }

    fn success(self) -> bool {
        self == Outcome::Exit(0)
    }
}

/// The actions a task's end calls for, every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    pub job: JobAction,
    pub dependency: DependencyAction,
}

impl ExitConditions {
    fn listed(&self, code: i64) -> Option<&ExitOptions> {
        self.exit_codes
            .iter()
            .find(|m| m.code == code)
            .map(|m| &m.exit_options)
            .or_else(|| {
                self.exit_code_ranges
                    .iter()
                    .find(|r| (r.start..=r.end).contains(&code))
                    .map(|r| &r.exit_options)
            })
    }
}

/// The actions for `outcome` under `conditions` (none given: Batch's defaults).
pub fn actions(conditions: Option<&ExitConditions>, outcome: Outcome) -> Actions {
    let none = ExitConditions::default();
    let c = conditions.unwrap_or(&none);
    let chosen = match outcome {
        Outcome::Exit(code) | Outcome::FileUploadError(Some(code)) if c.listed(code).is_some() => {
            c.listed(code)
        }
        Outcome::Exit(0) => None,
        Outcome::PreProcessingError => c.pre_processing_error.as_ref().or(c.default.as_ref()),
        Outcome::FileUploadError(_) => c.file_upload_error.as_ref().or(c.default.as_ref()),
        Outcome::Exit(_) | Outcome::Other => c.default.as_ref(),
    };
    let ok = outcome.success();
    let chosen = chosen.cloned().unwrap_or_default();
    Actions {
        job: chosen.job_action.unwrap_or(if ok {
            JobAction::None
        } else {
            JobAction::Terminate
        }),
        dependency: chosen.dependency_action.unwrap_or(if ok {
            DependencyAction::Satisfy
        } else {
            DependencyAction::Block
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyAction::*;
    use JobAction::{Disable, Terminate};
    use Outcome::*;

    fn opts(job: Option<JobAction>, dep: Option<DependencyAction>) -> ExitOptions {
        ExitOptions {
            job_action: job,
            dependency_action: dep,
        }
    }

    /// The exitConditions of spec §2.5's example, plus a listed 0.
    fn example() -> ExitConditions {
        ExitConditions {
            exit_codes: vec![
                ExitCodeMapping {
                    code: 3,
                    exit_options: opts(Some(Terminate), Some(Block)),
                },
                ExitCodeMapping {
                    code: 10,
                    exit_options: opts(None, Some(Satisfy)),
                },
            ],
            exit_code_ranges: vec![ExitCodeRangeMapping {
                start: 2,
                end: 4,
                exit_options: opts(Some(JobAction::None), None),
            }],
            pre_processing_error: Some(opts(Some(Disable), None)),
            file_upload_error: Some(opts(None, Some(Satisfy))),
            default: Some(opts(Some(JobAction::None), Some(Satisfy))),
        }
    }

    #[test]
    fn precedence_and_defaults_follow_batch() {
        let e = example();
        let table: &[(
            Option<&ExitConditions>,
            Outcome,
            JobAction,
            DependencyAction,
        )] = &[
            // No conditions: Batch's defaults.
            (None, Exit(0), JobAction::None, Satisfy),
            (None, Exit(1), Terminate, Block),
            (None, PreProcessingError, Terminate, Block),
            (None, FileUploadError(Some(0)), Terminate, Block),
            (None, Other, Terminate, Block),
            // exitCodes first, then ranges (3 is in both: exitCodes wins).
            (Some(&e), Exit(3), Terminate, Block),
            (Some(&e), Exit(2), JobAction::None, Block),
            (Some(&e), Exit(4), JobAction::None, Block),
            // A listed code's missing field takes the failure default.
            (Some(&e), Exit(10), Terminate, Satisfy),
            // Not listed: default (its fields as given).
            (Some(&e), Exit(7), JobAction::None, Satisfy),
            (Some(&e), Exit(-1), JobAction::None, Satisfy),
            // 0 not listed: never `default`.
            (Some(&e), Exit(0), JobAction::None, Satisfy),
            // Errors: their own entry, its missing field the failure default.
            (Some(&e), PreProcessingError, Disable, Block),
            (Some(&e), FileUploadError(None), Terminate, Satisfy),
            (Some(&e), FileUploadError(Some(0)), Terminate, Satisfy),
            // An upload error whose exit code is listed: the exit-code rule wins.
            (Some(&e), FileUploadError(Some(3)), Terminate, Block),
            (Some(&e), Other, JobAction::None, Satisfy),
        ];
        for (c, outcome, job, dep) in table {
            assert_eq!(
                actions(*c, *outcome),
                Actions {
                    job: *job,
                    dependency: *dep
                },
                "{outcome:?} under {c:?}"
            );
        }
    }

    #[test]
    fn errors_without_their_entry_fall_back_to_default() {
        let c = ExitConditions {
            default: Some(opts(None, Some(Satisfy))),
            ..Default::default()
        };
        assert_eq!(actions(Some(&c), PreProcessingError).dependency, Satisfy);
        assert_eq!(
            actions(Some(&c), FileUploadError(Some(1))).dependency,
            Satisfy
        );
        let listed0 = ExitConditions {
            exit_codes: vec![ExitCodeMapping {
                code: 0,
                exit_options: opts(None, Some(Block)),
            }],
            ..Default::default()
        };
        // A listed 0 keeps the success default for the field left out.
        assert_eq!(
            actions(Some(&listed0), Exit(0)),
            Actions {
                job: JobAction::None,
                dependency: Block
            }
        );
    }

    #[test]
    fn the_outcome_is_read_from_the_execution_info() {
        use crate::status::FailureInfo;
        let failed = |code: FailureCode, exit: Option<i64>| ExecutionInfo {
            exit_code: exit,
            failure_info: Some(FailureInfo::new(code, vec![])),
            ..Default::default()
        };
        assert_eq!(
            Outcome::of(&ExecutionInfo {
                exit_code: Some(0),
                ..Default::default()
            }),
            Exit(0)
        );
        assert_eq!(
            Outcome::of(&failed(FailureCode::FailureExitCode, Some(3))),
            Exit(3)
        );
        assert_eq!(
            Outcome::of(&failed(FailureCode::ContainerInvalidImage, None)),
            PreProcessingError
        );
        assert_eq!(
            Outcome::of(&failed(FailureCode::FileUploadMiscError, Some(0))),
            FileUploadError(Some(0))
        );
        assert_eq!(Outcome::of(&failed(FailureCode::TaskEnded, None)), Other);
    }
}
