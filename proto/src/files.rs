//! Task files: `resourceFiles` downloaded before the command runs and `outputFiles`
//! uploaded after it ends (spec §2.2, §2.3). Data and the pure rules on it; the transfers
//! live in the agent (`agent/src/files/`).

use crate::common::{batch_enum, SecretUrl};
use serde::{Deserialize, Serialize};

/// `ResourceFile`: exactly one of the three sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_storage_container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_container_url: Option<SecretUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<SecretUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_reference: Option<serde_json::Value>,
}

/// Batch's default `fileMode` on Linux.
pub const DEFAULT_FILE_MODE: u32 = 0o770;

impl ResourceFile {
    /// The `fileMode` as a number (validation has checked it), else the default.
    pub fn mode(&self) -> u32 {
        self.file_mode
            .as_deref()
            .and_then(|m| parse_mode(m).ok())
            .unwrap_or(DEFAULT_FILE_MODE)
    }
}

/// An octal mode string: 1 to 4 octal digits, like `0755` or `644`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "{s:?} is not an octal file mode; use 1 to 4 octal digits, like \"0755\""
        ));
    }
    u32::from_str_radix(s, 8).map_err(|e| e.to_string())
}

/// Checks a relative path that must stay inside the directory it is relative to: no
/// absolute path, no `..` component, no NUL. Returns the problem.
pub fn contained_path(p: &str) -> Result<(), String> {
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if p.starts_with('/') {
        return Err(format!(
            "{p:?} is absolute; use a path relative to the task working directory"
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!(
            "{p:?} has a \"..\" component; the path must stay inside the task working directory"
        ));
    }
    Ok(())
}

/// `OutputFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    pub file_pattern: String,
    pub destination: OutputFileDestination,
    /// Required on Batch's wire; berth defaults it to `taskCompletion`, as Batch's docs say.
    #[serde(default)]
    pub upload_options: OutputFileUploadOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFileDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<OutputFileBlobContainerDestination>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFileBlobContainerDestination {
    pub container_url: SecretUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_reference: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upload_headers: Vec<HttpHeader>,
}

/// `{name, value?}`: one request header for the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFileUploadOptions {
    #[serde(default)]
    pub upload_condition: UploadCondition,
}

batch_enum!(
    /// When outputs go up; compared case-insensitively, as Batch does.
    UploadCondition {
        TaskSuccess => "taskSuccess",
        TaskFailure => "taskFailure",
        TaskCompletion => "taskCompletion",
    }
);

#[allow(clippy::derivable_impls)] // batch_enum! makes the enum; no attribute can reach it.
impl Default for UploadCondition {
    fn default() -> Self {
        UploadCondition::TaskCompletion
    }
}

impl UploadCondition {
    /// Whether files go up for a task whose process ended as given (`success`: exit code
    /// 0 and no failure before or around the process).
    pub fn holds(self, success: bool) -> bool {
        match self {
            UploadCondition::TaskSuccess => success,
            UploadCondition::TaskFailure => !success,
            UploadCondition::TaskCompletion => true,
        }
    }
}

/// Whether a `filePattern` has glob characters (then `path` is a prefix, not a blob name).
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("7"), Ok(0o7));
        for bad in ["", "0788", "12345", "rwx", "-1", "0x1"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        let f = ResourceFile::default();
        assert_eq!(f.mode(), 0o770);
    }

    #[test]
    fn contained_paths() {
        for ok in ["a", "a/b/c.txt", "./x", "a/..b", "...", "a..b/c"] {
            assert_eq!(contained_path(ok), Ok(()), "{ok}");
        }
        for bad in ["/etc/passwd", "..", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(contained_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions() {
        let c: UploadCondition = serde_json::from_str("\"tasksuccess\"").unwrap();
        assert_eq!(c, UploadCondition::TaskSuccess);
        assert!(c.holds(true) && !c.holds(false));
        assert!(UploadCondition::TaskFailure.holds(false));
        assert!(!UploadCondition::TaskFailure.holds(true));
        assert!(UploadCondition::TaskCompletion.holds(false));
        let o: OutputFile = serde_json::from_str(
            r#"{"filePattern":"*.txt","destination":{"container":{"containerUrl":"http://h/c?sig=1"}}}"#,
        )
        .unwrap();
        assert_eq!(
            o.upload_options.upload_condition,
            UploadCondition::TaskCompletion
        );
    }

    #[test]
    fn urls_are_redacted_unless_revealed() {
        let f: ResourceFile = serde_json::from_str(
            r#"{"httpUrl":"https://u:p@a.blob.core.windows.net/c/b.txt?sv=1&sig=SECRET","filePath":"b"}"#,
        )
        .unwrap();
        let out = serde_json::to_string(&f).unwrap();
        assert!(!out.contains("SECRET") && !out.contains("u:p"), "{out}");
        assert!(
            out.contains("https://<redacted>@a.blob.core.windows.net/c/b.txt?<redacted>"),
            "{out}"
        );
        assert!(!format!("{f:?}").contains("SECRET"));
        let full = crate::common::with_secrets_revealed(|| serde_json::to_string(&f).unwrap());
        assert!(full.contains("sig=SECRET"), "{full}");
        // The flag does not outlive the call.
        assert!(!serde_json::to_string(&f).unwrap().contains("SECRET"));
    }

    #[test]
    fn wildcards() {
        assert!(has_wildcards("*.txt") && has_wildcards("a?") && has_wildcards("[ab]"));
        assert!(!has_wildcards("out/result.txt"));
    }
}
