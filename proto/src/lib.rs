//! Azure Batch REST JSON (camelCase) as berth accepts and reports it.
//!
//! This crate is data plus validation: no I/O beyond parsing bytes, no async, no engine.
//! Flow: bytes --[`load`]--> typed specs (+ unknown-field warnings) --[`validate`]--> checked specs.
//! What berth reports back lives in [`status`]; failure codes in [`failure`].
#![forbid(unsafe_code)]

pub mod common;
pub mod duration;
pub mod exit;
pub mod failure;
pub mod fields;
pub mod files;
pub mod id;
pub mod image_ref;
pub mod job;
pub mod job_schedule;
pub mod load;
pub mod node;
pub mod node_protocol;
pub mod odata;
pub mod pool;
pub mod status;
pub mod task;
pub mod validate;

pub use common::{
    AutoUserScope, AutoUserSpecification, BindMountEntry, ContainerHostDataPath, ContainerRegistry,
    ContainerWorkingDirectory, ElevationLevel, EnvironmentSetting, Secret, SecretUrl,
    TaskContainerSettings, UserIdentity,
};
pub use duration::IsoDuration;
pub use failure::{FailureCategory, FailureCode};
pub use files::{OutputFile, ResourceFile, UploadCondition};
pub use image_ref::ImageRef;
pub use job::{
    DisableJobOption, JobExecutionInfo, JobPrepReleaseStatus, JobPreparationTask, JobReleaseTask,
    JobSpec, JobState, JobTaskExecutionInfo, JobView, OnAllTasksComplete, OnTaskFailure,
};
pub use job_schedule::{
    JobScheduleSpec, JobScheduleState, JobScheduleUpdate, JobScheduleView, JobSpecification,
    Schedule,
};
pub use load::{LoadError, Loaded};
pub use node::{
    ComputeNode, NodeAgentInfo, NodeError, NodeGpu, NodeGpus, NodeImage, NodeState, StartTaskInfo,
};
pub use pool::{ContainerConfiguration, LinuxUserConfiguration, PoolSpec, StartTask, UserAccount};
pub use status::{
    ContainerInfo, ExecutionInfo, FailureInfo, NameValuePair, TaskResult, TaskState, TaskView,
};
pub use task::{TaskConstraints, TaskDependencies, TaskIdRange, TaskSpec};
