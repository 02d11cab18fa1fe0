//! Every field of the shapes berth accepts (task, job, pool and the objects inside them),
//! each with what berth does with it: acted on, refused, or accepted with no effect (a
//! documented no-op, with its reason). No field is accepted and silently ignored.
//!
//! [`validate`](crate::validate) refuses the `Refused` ones from this table alone
//! ([`refused_in`]); the README's three lists are generated from it; the tests hold the
//! table against serde's own field lists of the structs, so a field added to a struct
//! without a line here fails the build's tests. Shapes carry Batch's type names (REST
//! reference); a shape whose fields mean something else in one place (the job
//! preparation task's `constraints`) has a shape of its own for that place.
//!

#[cfg(test)]
mod probe;

use serde_json::Value;

/// What berth does with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Carried out as Batch does (see the README's sections).
    Acted,
    /// An input error when present (not null, not an empty list), with this reason.
    /// Validation reads the serialized spec, so such a field must serialize when present
    /// (no `skip_serializing`, as the secrets have).
    Refused(&'static str),
    /// Accepted and kept, with no effect on what runs, for this reason.
    NoOp(&'static str),
}

/// One field of a shape: its JSON name, its treatment and, for an acted-on object (or
/// list of objects), the shape of that object.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub treatment: Treatment,
    pub shape: Option<&'static str>,
}

/// A JSON object berth accepts: Batch's name for it, the Rust struct that holds it, and
/// every field that struct has.
#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    pub rust: &'static str,
    pub fields: &'static [Field],
}

/// The task (`berth run` task files, `POST /jobs/{job}/tasks`).
pub const TASK: &str = "TaskAddParameter";
/// The job (`--job`, `POST /jobs`).
pub const JOB: &str = "JobAddParameter";
/// The pool (`--pool`, the agent's `pool`).
pub const POOL: &str = "PoolAddParameter";
/// The job schedule (`POST /jobschedules`).
pub const JOB_SCHEDULE: &str = "JobScheduleAddParameter";

const fn acted(name: &'static str) -> Field {
    Field {
        name,
        treatment: Treatment::Acted,
        shape: None,
    }
}

const fn object(name: &'static str, shape: &'static str) -> Field {
    Field {
        name,
        treatment: Treatment::Acted,
        shape: Some(shape),
    }
}

const fn refused(name: &'static str, reason: &'static str) -> Field {
    Field {
        name,
        treatment: Treatment::Refused(reason),
        shape: None,
    }
}

const fn no_op(name: &'static str, reason: &'static str) -> Field {
    Field {
        name,
        treatment: Treatment::NoOp(reason),
        shape: None,
    }
}

const LABEL: &str = "a label; berth uses it for nothing else";

/// The table, roots first, each shape after the first one that holds it.
pub static SHAPES: &[Shape] = &[
    Shape {
        name: TASK,
        rust: "TaskSpec",
        fields: &[
            acted("id"),
            no_op("displayName", LABEL),
            acted("commandLine"),
            object("containerSettings", "TaskContainerSettings"),
            object("environmentSettings", "EnvironmentSetting"),
            object("constraints", "TaskConstraints"),
            acted("requiredSlots"),
            object("userIdentity", "UserIdentity"),
            object("dependsOn", "TaskDependencies"),
            object("resourceFiles", "ResourceFile"),
            object("outputFiles", "OutputFile"),
            refused(
                "multiInstanceSettings",
                "a berth node runs each task on itself alone; multi-instance (MPI) tasks span several nodes",
            ),
            refused(
                "applicationPackageReferences",
                "berth has no Batch application packages; put the files in the image or in resourceFiles",
            ),
            object("exitConditions", "ExitConditions"),
            no_op(
                "affinityInfo",
                "a hint for choosing one of a pool's nodes; a berth node runs every task it is given",
            ),
            object("authenticationTokenSettings", "AuthenticationTokenSettings"),
        ],
    },
    Shape {
        name: "AuthenticationTokenSettings",
        rust: "AuthenticationTokenSettings",
        fields: &[acted("access")],
    },
    Shape {
        name: "TaskContainerSettings",
        rust: "TaskContainerSettings",
        fields: &[
            acted("imageName"),
            object("registry", "ContainerRegistry"),
            acted("containerRunOptions"),
            acted("workingDirectory"),
            object(
                "containerHostBatchBindMounts",
                "ContainerHostBatchBindMountEntry",
            ),
        ],
    },
    Shape {
        name: "ContainerRegistry",
        rust: "ContainerRegistry",
        fields: &[
            acted("registryServer"),
            acted("username"),
            acted("password"),
            refused(
                "identityReference",
                "berth has no managed identity; give username and password",
            ),
        ],
    },
    Shape {
        name: "ContainerHostBatchBindMountEntry",
        rust: "BindMountEntry",
        fields: &[acted("source"), acted("isReadOnly")],
    },
    Shape {
        name: "EnvironmentSetting",
        rust: "EnvironmentSetting",
        fields: &[acted("name"), acted("value")],
    },
    Shape {
        name: "TaskConstraints",
        rust: "TaskConstraints",
        fields: &[
            acted("maxWallClockTime"),
            acted("retentionTime"),
            acted("maxTaskRetryCount"),
        ],
    },
    Shape {
        name: "UserIdentity",
        rust: "UserIdentity",
        fields: &[
            acted("username"),
            object("autoUser", "AutoUserSpecification"),
        ],
    },
    Shape {
        name: "AutoUserSpecification",
        rust: "AutoUserSpecification",
        fields: &[acted("scope"), acted("elevationLevel")],
    },
    Shape {
        name: "TaskDependencies",
        rust: "TaskDependencies",
        fields: &[
            acted("taskIds"),
            object("taskIdRanges", "TaskIdRange"),
        ],
    },
    Shape {
        name: "TaskIdRange",
        rust: "TaskIdRange",
        fields: &[acted("start"), acted("end")],
    },
    Shape {
        name: "ResourceFile",
        rust: "ResourceFile",
        fields: &[
            refused(
                "autoStorageContainerName",
                "a berth node has no linked storage account; use storageContainerUrl with a SAS",
            ),
            acted("storageContainerUrl"),
            acted("httpUrl"),
            acted("blobPrefix"),
            acted("filePath"),
            acted("fileMode"),
            refused("identityReference", "berth has no managed identity; put a SAS in the URL"),
        ],
    },
    Shape {
        name: "OutputFile",
        rust: "OutputFile",
        fields: &[
            acted("filePattern"),
            object("destination", "OutputFileDestination"),
            object("uploadOptions", "OutputFileUploadOptions"),
        ],
    },
    Shape {
        name: "OutputFileDestination",
        rust: "OutputFileDestination",
        fields: &[object("container", "OutputFileBlobContainerDestination")],
    },
    Shape {
        name: "OutputFileBlobContainerDestination",
        rust: "OutputFileBlobContainerDestination",
        fields: &[
            acted("containerUrl"),
            acted("path"),
            refused(
                "identityReference",
                "berth has no managed identity; put a SAS in containerUrl",
            ),
            object("uploadHeaders", "HttpHeader"),
        ],
    },
    Shape {
        name: "HttpHeader",
        rust: "HttpHeader",
        fields: &[acted("name"), acted("value")],
    },
    Shape {
        name: "OutputFileUploadOptions",
        rust: "OutputFileUploadOptions",
        fields: &[acted("uploadCondition")],
    },
    Shape {
        name: "ExitConditions",
        rust: "ExitConditions",
        fields: &[
            object("exitCodes", "ExitCodeMapping"),
            object("exitCodeRanges", "ExitCodeRangeMapping"),
            object("preProcessingError", "ExitOptions"),
            object("fileUploadError", "ExitOptions"),
            object("default", "ExitOptions"),
        ],
    },
    Shape {
        name: "ExitCodeMapping",
        rust: "ExitCodeMapping",
        fields: &[acted("code"), object("exitOptions", "ExitOptions")],
    },
    Shape {
        name: "ExitCodeRangeMapping",
        rust: "ExitCodeRangeMapping",
        fields: &[
            acted("start"),
            acted("end"),
            object("exitOptions", "ExitOptions"),
        ],
    },
    Shape {
        name: "ExitOptions",
        rust: "ExitOptions",
        fields: &[acted("jobAction"), acted("dependencyAction")],
    },
    Shape {
        name: JOB,
        rust: "JobSpec",
        fields: &[
            acted("id"),
            no_op("displayName", LABEL),
            object("commonEnvironmentSettings", "EnvironmentSetting"),
            acted("usesTaskDependencies"),
            object("constraints", "JobConstraints"),
            acted("priority"),
            acted("maxParallelTasks"),
            no_op(
                "poolInfo",
                "names the pool the job runs on; a berth node runs every job it is given, on its own pool",
            ),
            acted("onAllTasksComplete"),
            acted("onTaskFailure"),
            object("jobPreparationTask", "JobPreparationTask"),
            object("jobReleaseTask", "JobReleaseTask"),
            object("jobManagerTask", "JobManagerTask"),
        ],
    },
    Shape {
        name: JOB_SCHEDULE,
        rust: "JobScheduleSpec",
        fields: &[
            acted("id"),
            no_op("displayName", LABEL),
            object("schedule", "Schedule"),
            object("jobSpecification", "JobSpecification"),
            no_op(
                "metadata",
                "name-value pairs kept and returned for the caller; berth acts on none",
            ),
        ],
    },
    Shape {
        name: "Schedule",
        rust: "Schedule",
        fields: &[
            acted("doNotRunUntil"),
            acted("doNotRunAfter"),
            acted("startWindow"),
            acted("recurrenceInterval"),
        ],
    },
    Shape {
        name: "JobSpecification",
        rust: "JobSpecification",
        fields: &[
            no_op("displayName", LABEL),
            object("commonEnvironmentSettings", "EnvironmentSetting"),
            acted("usesTaskDependencies"),
            object("constraints", "JobConstraints"),
            acted("priority"),
            acted("maxParallelTasks"),
            no_op(
                "poolInfo",
                "names the pool the job runs on; a berth node runs every job it is given, on its own pool",
            ),
            acted("onAllTasksComplete"),
            acted("onTaskFailure"),
            object("jobPreparationTask", "JobPreparationTask"),
            object("jobReleaseTask", "JobReleaseTask"),
            object("jobManagerTask", "JobManagerTask"),
        ],
    },
    Shape {
        name: "JobConstraints",
        rust: "JobConstraints",
        fields: &[
            acted("maxWallClockTime"),
            acted("maxTaskRetryCount"),
        ],
    },
    Shape {
        name: "JobManagerTask",
        rust: "JobManagerTask",
        fields: &[
            acted("id"),
            no_op("displayName", LABEL),
            acted("commandLine"),
            object("containerSettings", "TaskContainerSettings"),
            object("resourceFiles", "ResourceFile"),
            object("outputFiles", "OutputFile"),
            object("environmentSettings", "EnvironmentSetting"),
            object("constraints", "TaskConstraints"),
            acted("requiredSlots"),
            acted("killJobOnCompletion"),
            object("userIdentity", "UserIdentity"),
            acted("runExclusive"),
            object("authenticationTokenSettings", "AuthenticationTokenSettings"),
            no_op(
                "allowLowPriorityNode",
                "chooses among a pool's dedicated and Spot nodes; a berth node runs the task itself",
            ),
        ],
    },
    Shape {
        name: "JobPreparationTask",
        rust: "JobPreparationTask",
        fields: &[
            acted("id"),
            acted("commandLine"),
            object("containerSettings", "TaskContainerSettings"),
            object("resourceFiles", "ResourceFile"),
            object("environmentSettings", "EnvironmentSetting"),
            object("constraints", "JobPreparationTask.constraints"),
            acted("waitForSuccess"),
            object("userIdentity", "UserIdentity"),
            acted("rerunOnNodeRebootAfterSuccess"),
        ],
    },
    Shape {
        name: "JobPreparationTask.constraints",
        rust: "TaskConstraints",
        fields: &[
            acted("maxWallClockTime"),
            no_op(
                "retentionTime",
                "the preparation task's directory stays as long as its job: the job's tasks read it",
            ),
            acted("maxTaskRetryCount"),
        ],
    },
    Shape {
        name: "JobReleaseTask",
        rust: "JobReleaseTask",
        fields: &[
            acted("id"),
            acted("commandLine"),
            object("containerSettings", "TaskContainerSettings"),
            object("resourceFiles", "ResourceFile"),
            object("environmentSettings", "EnvironmentSetting"),
            acted("maxWallClockTime"),
            acted("retentionTime"),
            object("userIdentity", "UserIdentity"),
        ],
    },
    Shape {
        name: POOL,
        rust: "PoolSpec",
        fields: &[
            acted("id"),
            no_op("displayName", LABEL),
            no_op(
                "vmSize",
                "the machine berth runs on is the node; its size is what it is",
            ),
            acted("taskSlotsPerNode"),
            object(
                "virtualMachineConfiguration",
                "VirtualMachineConfiguration",
            ),
            object("startTask", "StartTask"),
            object("userAccounts", "UserAccount"),
            object("taskSchedulingPolicy", "TaskSchedulingPolicy"),
            acted("berthLeaseProfile"),
        ],
    },
    Shape {
        name: "TaskSchedulingPolicy",
        rust: "TaskSchedulingPolicy",
        fields: &[acted("nodeFillType")],
    },
    Shape {
        name: "VirtualMachineConfiguration",
        rust: "VirtualMachineConfiguration",
        fields: &[
            object("containerConfiguration", "ContainerConfiguration"),
            no_op(
                "imageReference",
                "the node's operating system is the machine's own",
            ),
            no_op("nodeAgentSkuId", "berth is the node agent"),
        ],
    },
    Shape {
        name: "ContainerConfiguration",
        rust: "ContainerConfiguration",
        fields: &[
            no_op(
                "type",
                "berth runs every container through the Docker Engine API; both values run the same OCI images",
            ),
            acted("containerImageNames"),
            object("containerRegistries", "ContainerRegistry"),
        ],
    },
    Shape {
        name: "StartTask",
        rust: "StartTask",
        fields: &[
            acted("commandLine"),
            object("containerSettings", "TaskContainerSettings"),
            object("environmentSettings", "EnvironmentSetting"),
            object("userIdentity", "UserIdentity"),
            acted("maxTaskRetryCount"),
            acted("waitForSuccess"),
            object("resourceFiles", "ResourceFile"),
        ],
    },
    Shape {
        name: "UserAccount",
        rust: "UserAccount",
        fields: &[
            acted("name"),
            no_op(
                "password",
                "tasks never log in: berth creates the account without a password",
            ),
            acted("elevationLevel"),
            object("linuxUserConfiguration", "LinuxUserConfiguration"),
            no_op("windowsUserConfiguration", "berth runs on Linux"),
        ],
    },
    Shape {
        name: "LinuxUserConfiguration",
        rust: "LinuxUserConfiguration",
        fields: &[
            acted("uid"),
            acted("gid"),
            no_op(
                "sshPrivateKey",
                "it serves SSH between a pool's nodes for multi-instance tasks, which berth refuses",
            ),
        ],
    },
];

/// The shape named `name`. Panics on a name the table lacks (a table test covers every
/// name the table itself uses).
pub fn shape(name: &str) -> &'static Shape {
    SHAPES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no shape {name:?} in the field table"))
}

/// Whether a field counts as given: `null` and `[]` do not (serde reads them as absent).
fn present(v: &Value) -> bool {
    !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
}

/// The refused fields present in `value` (a JSON object of shape `shape`, at JSON path
/// `path`, e.g. `$.value[2]`), each as its JSON path and the reason, in the table's
/// order. Only acted-on objects are looked into.
pub fn refused_in(path: &str, shape: &str, value: &Value) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    walk(path, self::shape(shape), value, &mut out);
    out
}

fn walk(path: &str, shape: &Shape, value: &Value, out: &mut Vec<(String, &'static str)>) {
    let Some(obj) = value.as_object() else {
        return;
    };
    for f in shape.fields {
        let Some(v) = obj.get(f.name).filter(|v| present(v)) else {
            continue;
        };
        let at = format!("{path}.{}", f.name);
        match (f.treatment, f.shape) {
            (Treatment::Refused(reason), _) => out.push((at, reason)),
            (Treatment::Acted, Some(inner)) => match v.as_array() {
                Some(list) => {
                    for (i, item) in list.iter().enumerate() {
                        walk(&format!("{at}[{i}]"), self::shape(inner), item, out);
                    }
                }
                None => walk(&at, self::shape(inner), v, out),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
