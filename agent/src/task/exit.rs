//! How an attempt ended -> Batch's result: exit code, failure info, whether to retry.
//! Pure, with one exhaustive match: the only place that maps endings to failure codes.

use berth_proto::{ContainerInfo, FailureCode, FailureInfo, NameValuePair};

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Finished {
    /// The process ran and exited.
    Exited {
        code: i64,
        oom_kills: u64,
        engine_oom: bool,
        container: Option<ContainerInfo>,
    },
    /// `maxWallClockTime` passed and berth stopped the task.
    TimedOut {
        code: Option<i64>,
        container: Option<ContainerInfo>,
    },
    /// The task was terminated (the API's terminate, its job's end).
    Cancelled {
        code: Option<i64>,
        container: Option<ContainerInfo>,
    },
    /// berth itself stopped and stopped the task (Ctrl-C, SIGTERM with `on_shutdown =
    /// "stop"`).
    ShutDown {
        code: Option<i64>,
        container: Option<ContainerInfo>,
    },
    /// The engine went away while the container ran, and the container did not survive
    /// it (or the engine did not come back in time).
    EngineLost {
        code: Option<i64>,
        message: String,
        container: Option<ContainerInfo>,
    },
    /// The task's stdout/stderr could not be written (a full disk, or a link the task left
    /// in their place): berth stopped it.
    OutputLost {
        code: Option<i64>,
        fault: FileFault,
        message: String,
        container: Option<ContainerInfo>,
    },
    /// The process never ran.
    NotStarted {
        code: FailureCode,
        message: String,
        details: Vec<NameValuePair>,
        container: Option<ContainerInfo>,
    },
}

/// Why a file in the task's directories could not be made, opened or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFault {
    /// `ENOSPC`/`EDQUOT`: the node's disk.
    DiskFull,
    /// The task left a link, FIFO, device or hard link there
    /// ([`crate::node::BeneathError::Refused`]): its own doing.
    Refused,
    /// Anything else.
    Other,
}

impl FileFault {
    pub fn of(e: &std::io::Error) -> FileFault {
        if crate::node::beneath::is_refused(e) {
            FileFault::Refused
        } else if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            FileFault::DiskFull
        } else {
            FileFault::Other
        }
    }

    /// The failure code: `TaskFileRefused` (usererror) for what the task planted,
    /// `DiskFull` for the disk, else `otherwise`.
    pub fn code(self, otherwise: FailureCode) -> FailureCode {
        match self {
            FileFault::Refused => FailureCode::TaskFileRefused,
            FileFault::DiskFull => FailureCode::DiskFull,
            FileFault::Other => otherwise,
        }
    }
}

/// The failure code of a file operation in the task's directories that failed.
pub fn file_code(e: &std::io::Error, otherwise: FailureCode) -> FailureCode {
    FileFault::of(e).code(otherwise)
}

/// The Batch-shaped outcome of one attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit_code: Option<i64>,
    pub failure: Option<FailureInfo>,
    pub container: Option<ContainerInfo>,
    /// Only a non-zero exit is retried (spec §2.4); pre-processing errors and timeouts are not.
    pub retryable: bool,
}

fn nv(name: &str, value: impl Into<String>) -> NameValuePair {
    NameValuePair {
        name: name.into(),
        value: value.into(),
    }
}

pub fn outcome(f: Finished) -> Outcome {
    match f {
        Finished::Exited {
            code: 0,
            oom_kills,
            container,
            ..
        } => {
            // A child killed by the OOM killer need not fail the task; say so in containerInfo.
            let container = container.map(|mut c| {
                if oom_kills > 0 && c.error.is_none() {
                    c.error = Some(format!(
                        "the kernel's OOM killer killed {oom_kills} process(es) in the container"
                    ));
                }
                c
            });
            Outcome {
                exit_code: Some(0),
                failure: None,
                container,
                retryable: false,
            }
        }
        Finished::Exited {
            code,
            oom_kills,
            engine_oom,
            container,
        } => {
            let mut details = vec![nv(
                "Message",
                format!("The task process exited with code {code}"),
            )];
            if oom_kills > 0 || engine_oom {
                let source = match (oom_kills > 0, engine_oom) {
                    (true, true) => "kernel oom_kill counter and engine",
                    (true, false) => "kernel oom_kill counter",
                    _ => "engine",
                };
                details.push(nv("OutOfMemory", "true"));
                details.push(nv("OutOfMemorySource", source));
                if oom_kills > 0 {
                    details.push(nv("OutOfMemoryKills", oom_kills.to_string()));
                }
            }
            let mut failure = FailureInfo::new(FailureCode::FailureExitCode, details);
            if oom_kills > 0 || engine_oom {
                failure.message = format!(
                    "{} (the container ran out of memory and was killed by the kernel)",
                    failure.message
                );
            }
            Outcome {
                exit_code: Some(code),
                failure: Some(failure),
                container,
                retryable: true,
            }
        }
        Finished::TimedOut { code, container } => Outcome {
            exit_code: code,
            failure: Some(FailureInfo::new(
                FailureCode::TaskEnded,
                vec![nv(
                    "Message",
                    "The maximum execution time configured on the task was exceeded",
                )],
            )),
            container,
            retryable: false,
        },
        // An exit the process made by itself while berth stopped it (it handled the stop
        // signal, or ended just then) is its real result. Only 128 + N is a signal's death,
        // berth's doing.
        Finished::ShutDown {
            code: Some(code),
            container,
        } if (0..128).contains(&code) => Outcome {
            // No other attempt while berth stops.
            retryable: false,
            ..outcome(Finished::Exited {
                code,
                oom_kills: 0,
                engine_oom: false,
                container,
            })
        },
        Finished::ShutDown { code, container } => Outcome {
            exit_code: code,
            failure: Some(FailureInfo::new(
                FailureCode::TaskEnded,
                vec![nv("Message", "berth was stopped while the task ran")],
            )),
            container,
            retryable: false,
        },
        Finished::Cancelled { code, container } => Outcome {
            exit_code: code,
            failure: Some(FailureInfo::new(
                FailureCode::TaskEnded,
                vec![nv("Message", "the task was terminated while it ran")],
            )),
            container,
            retryable: false,
        },
        Finished::EngineLost {
            code,
            message,
            container,
        } => Outcome {
            exit_code: code,
            failure: Some(FailureInfo::new(
                FailureCode::EngineUnavailable,
                vec![nv("Message", message)],
            )),
            container,
            // The task did nothing wrong: another attempt, if its retries allow.
            retryable: true,
        },
        Finished::OutputLost {
            code,
            fault,
            message,
            container,
        } => Outcome {
            exit_code: code,
            failure: Some(FailureInfo::new(
                fault.code(FailureCode::Unknown),
                vec![nv("Message", message)],
            )),
            container,
            // Another attempt would meet the same disk, or the same planted file.
            retryable: false,
        },
        Finished::NotStarted {
            code,
            message,
            mut details,
            container,
        } => {
            details.insert(0, nv("Message", message));
            Outcome {
                exit_code: None,
                failure: Some(FailureInfo::new(code, details)),
                container,
                retryable: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_keeps_an_exit_the_task_made_itself() {
        let shut = |code| {
            outcome(Finished::ShutDown {
                code,
                container: None,
            })
        };
        let o = shut(Some(0));
        assert_eq!((o.exit_code, o.failure.is_none()), (Some(0), true));
        let o = shut(Some(3));
        let f = o.failure.unwrap();
        assert_eq!(
            (f.code.as_str(), o.exit_code, o.retryable),
            ("FailureExitCode", Some(3), false)
        );
        for code in [Some(137), Some(143), None] {
            let o = shut(code);
            let f = o.failure.unwrap();
            assert_eq!((f.code.as_str(), o.exit_code), ("TaskEnded", code));
            assert_eq!(
                f.detail("Message"),
                Some("berth was stopped while the task ran")
            );
        }
        // A terminate is the user's choice, whatever the process then did.
        let o = outcome(Finished::Cancelled {
            code: Some(0),
            container: None,
        });
        assert_eq!(o.failure.unwrap().code.as_str(), "TaskEnded");
    }

    #[test]
    fn a_lost_engine_is_a_retried_server_error() {
        let o = outcome(Finished::EngineLost {
            code: Some(137),
            message: "the Docker engine stopped".into(),
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!(f.code.as_str(), "EngineUnavailable");
        assert_eq!(f.category.as_str(), "servererror");
        assert_eq!(f.detail("Message"), Some("the Docker engine stopped"));
        assert!(o.retryable);
        assert_eq!(o.exit_code, Some(137));
    }

    #[test]
    fn lost_output_on_a_full_disk_is_disk_full() {
        let o = outcome(Finished::OutputLost {
            code: Some(137),
            fault: FileFault::DiskFull,
            message: "cannot write the task's output".into(),
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!(
            (f.code.as_str(), f.category.as_str()),
            ("DiskFull", "servererror")
        );
        assert!(!o.retryable);
        assert_eq!(o.exit_code, Some(137));
    }

    /// A link the task left where its output goes is the task's fault, named as such;
    /// a full disk and other I/O errors are the node's.
    #[test]
    fn a_planted_file_is_the_tasks_fault() {
        let refused: std::io::Error = crate::node::BeneathError::Refused {
            path: "/t/stdout.txt".into(),
            found: crate::node::beneath::Found::Link,
        }
        .into();
        assert_eq!(FileFault::of(&refused), FileFault::Refused);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FileFault::of(&full), FileFault::DiskFull);
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(
            file_code(&other, FailureCode::ResourceDirectoryCreateFailed),
            FailureCode::ResourceDirectoryCreateFailed
        );
        assert_eq!(
            file_code(&refused, FailureCode::ResourceDirectoryCreateFailed),
            FailureCode::TaskFileRefused
        );
        let o = outcome(Finished::OutputLost {
            code: Some(0),
            fault: FileFault::of(&refused),
            message: format!("cannot write the task's output: {refused}"),
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!(
            (f.code.as_str(), f.category.as_str()),
            ("TaskFileRefused", "usererror")
        );
        assert!(f
            .detail("Message")
            .unwrap()
            .contains("stdout.txt: is a symbolic link"));
        assert!(!o.retryable);
        let o = outcome(Finished::NotStarted {
            code: file_code(&refused, FailureCode::ResourceDirectoryCreateFailed),
            message: refused.to_string(),
            details: vec![],
            container: None,
        });
        assert_eq!(o.failure.unwrap().category.as_str(), "usererror");
    }

    #[test]
    fn table() {
        let o = outcome(Finished::Exited {
            code: 0,
            oom_kills: 0,
            engine_oom: false,
            container: None,
        });
        assert!(o.failure.is_none() && o.exit_code == Some(0));
        let o = outcome(Finished::Exited {
            code: 3,
            oom_kills: 0,
            engine_oom: false,
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!((f.code.as_str(), o.retryable), ("FailureExitCode", true));
        assert_eq!(
            f.detail("OutOfMemory"),
            None,
            "a plain non-zero exit is not OOM"
        );
        let o = outcome(Finished::Exited {
            code: 137,
            oom_kills: 0,
            engine_oom: false,
            container: None,
        });
        assert_eq!(
            o.failure.unwrap().detail("OutOfMemory"),
            None,
            "137 alone (SIGKILL) is not OOM"
        );
        let o = outcome(Finished::Exited {
            code: 137,
            oom_kills: 1,
            engine_oom: false,
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!(f.detail("OutOfMemory"), Some("true"));
        assert_eq!(
            f.detail("OutOfMemorySource"),
            Some("kernel oom_kill counter")
        );
        let o = outcome(Finished::TimedOut {
            code: Some(137),
            container: None,
        });
        let f = o.failure.unwrap();
        assert_eq!(
            (f.code.as_str(), f.category.as_str(), o.retryable),
            ("TaskEnded", "usererror", false)
        );
        assert_eq!(
            f.detail("Message"),
            Some("The maximum execution time configured on the task was exceeded")
        );
        let o = outcome(Finished::NotStarted {
            code: FailureCode::ContainerInvalidImage,
            message: "pull access denied".into(),
            details: vec![nv("ContainerImage", "x")],
            container: None,
        });
        assert_eq!(o.exit_code, None);
        let f = o.failure.unwrap();
        assert_eq!(f.detail("ContainerImage"), Some("x"));
        assert_eq!(
            f.message,
            "One or more container images specified are invalid"
        );
        let o = outcome(Finished::Exited {
            code: 0,
            oom_kills: 2,
            engine_oom: false,
            container: Some(Default::default()),
        });
        assert!(o.container.unwrap().error.unwrap().contains("OOM killer"));
    }
}
