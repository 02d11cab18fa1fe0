//! Batch's failure categories and the task failure codes berth reports (spec §3.3, §3.4).

use crate::common::batch_enum;

batch_enum!(
    /// Spec wire casing (lower case); clients compare case-insensitively.
    FailureCategory {
        UserError => "usererror",
        ServerError => "servererror",
    }
);

batch_enum!(
    /// The `failureInfo.code` values berth produces.
    FailureCode {
        FailureExitCode => "FailureExitCode",
        TaskEnded => "TaskEnded",
        ContainerInvalidImage => "ContainerInvalidImage",
        ContainerInvalidRegistry => "ContainerInvalidRegistry",
        ContainerInvalidSettings => "ContainerInvalidSettings",
        ContainerMiscError => "ContainerMiscError",
        ContainerTaskSettingsNotFound => "ContainerTaskSettingsNotFound",
        ResourceDirectoryCreateFailed => "ResourceDirectoryCreateFailed",
        ResourceFileCreateFailed => "ResourceFileCreateFailed",
        ResourceFileWriteFailed => "ResourceFileWriteFailed",
        BlobNotFound => "BlobNotFound",
        BlobAccessDenied => "BlobAccessDenied",
        BlobDownloadTimedOut => "BlobDownloadTimedOut",
        BlobDownloadMiscError => "BlobDownloadMiscError",
        ResourceContainerNotFound => "ResourceContainerNotFound",
        ResourceContainerAccessDenied => "ResourceContainerAccessDenied",
        ResourceContainerListTimedOut => "ResourceContainerListTimedOut",
        ResourceContainerListMiscError => "ResourceContainerListMiscError",
        FileUploadContainerNotFound => "FileUploadContainerNotFound",
        FileUploadAccessDenied => "FileUploadAccessDenied",
        FileUploadConflict => "FileUploadConflict",
        FileUploadTimedOut => "FileUploadTimedOut",
        FileUploadMiscError => "FileUploadMiscError",
        DiskFull => "DiskFull",
        GpuRequestInvalid => "GpuRequestInvalid",
        EngineUnavailable => "EngineUnavailable",
        TaskFileRefused => "TaskFileRefused",
        Unknown => "Unknown",
    }
);

impl FailureCode {
    /// An output file's upload failed (`exitConditions.fileUploadError`).
    pub fn is_upload(self) -> bool {
        matches!(
            self,
            FailureCode::FileUploadContainerNotFound
                | FailureCode::FileUploadAccessDenied
                | FailureCode::FileUploadConflict
                | FailureCode::FileUploadTimedOut
                | FailureCode::FileUploadMiscError
        )
    }

    /// The category and the message Batch shows for each code.
    pub fn category_and_message(self) -> (FailureCategory, &'static str) {
        use FailureCategory::*;
        match self {
            FailureCode::FailureExitCode => (
                UserError,
                "The task exited with an exit code representing a failure",
            ),
            FailureCode::TaskEnded => (UserError, "Task was ended by user request."),
            FailureCode::ContainerInvalidImage => (
                UserError,
                "One or more container images specified are invalid",
            ),
            FailureCode::ContainerInvalidRegistry => (
                UserError,
                "One or more container registries specified are invalid",
            ),
            FailureCode::ContainerInvalidSettings => (
                UserError,
                "At least one value of specified task container settings is invalid",
            ),
            FailureCode::ContainerMiscError => (
                ServerError,
                "An error occurred while running the task's container",
            ),
            FailureCode::ContainerTaskSettingsNotFound => (
                UserError,
                "Container-enabled compute node requires task container settings",
            ),
            FailureCode::ResourceDirectoryCreateFailed => (
                ServerError,
                "Failure encountered creating resource directory for the task.",
            ),
            FailureCode::ResourceFileCreateFailed => (
                ServerError,
                "Failure encountered creating a resource file for the task.",
            ),
            FailureCode::ResourceFileWriteFailed => (
                ServerError,
                "Failure encountered writing a resource file for the task.",
            ),
            FailureCode::BlobNotFound => (UserError, "One of the specified Azure Blob(s) is not found."),
            FailureCode::BlobAccessDenied => (
                UserError,
                "Access for one of the specified Azure Blob(s) is denied.",
            ),
            FailureCode::BlobDownloadTimedOut => (
                ServerError,
                "Timeout encountered while downloading one of the specified Azure Blob(s).",
            ),
            FailureCode::BlobDownloadMiscError => (
                ServerError,
                "Miscellaneous error encountered while downloading one of the specified Azure Blob(s).",
            ),
            FailureCode::ResourceContainerNotFound => (
                UserError,
                "One of the specified Azure container(s) was not found while listing resource files.",
            ),
            FailureCode::ResourceContainerAccessDenied => (
                UserError,
                "Access for one of the specified Azure container(s) is denied while listing resource files.",
            ),
            FailureCode::ResourceContainerListTimedOut => (
                ServerError,
                "Timeout encountered while listing one of the specified Azure container(s).",
            ),
            FailureCode::ResourceContainerListMiscError => (
                ServerError,
                "Miscellaneous error encountered while listing one of the specified Azure container(s).",
            ),
            FailureCode::FileUploadContainerNotFound => (
                UserError,
                "One of the specified Azure container(s) was not found while attempting to upload an output file",
            ),
            FailureCode::FileUploadAccessDenied => (
                UserError,
                "Access for one of the specified Azure container(s) is denied while attempting to upload an output file",
            ),
            FailureCode::FileUploadConflict => (
                UserError,
                "A conflict occurred while attempting to upload an output file",
            ),
            FailureCode::FileUploadTimedOut => (
                ServerError,
                "Timeout encountered while attempting to upload an output file",
            ),
            FailureCode::FileUploadMiscError => (
                UserError,
                "Miscellaneous error encountered while attempting to upload an output file",
            ),
            FailureCode::DiskFull => (
                ServerError,
                "There is not enough disk space on the node that was selected to run the task.",
            ),
            // berth's own: the Docker engine stopped (restart, crash) while the container ran,
            // and the container did not survive it. Retried like a failed exit.
            FailureCode::EngineUnavailable => (
                ServerError,
                "The node's container engine went away while the task ran",
            ),
            // berth's own: `BERTH_GPUS` asks for more GPUs than the node has, or is not a number.
            FailureCode::GpuRequestInvalid => {
                (UserError, "The task asks for GPUs this node cannot give it")
            }
            // berth's own: the task left a link, a FIFO, a device or a file with several
            // names where the agent (root) writes or reads its own files in the task's
            // directories. The agent did not act on it; the task's doing, so a user error.
            FailureCode::TaskFileRefused => (
                UserError,
                "The task left a link or special file where the node keeps the task's own files",
            ),
            FailureCode::Unknown => (ServerError, "An unknown scheduling error has occurred."),
        }
    }
}
