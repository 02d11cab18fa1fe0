//! Objects shared by tasks, start tasks and pools: environment, registries, container
//! settings and user identity.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Declares a Batch string enum. Batch compares enum values case-insensitively, so berth
/// accepts any casing and writes the spec's spelling back; an unknown value names the
/// accepted ones.
macro_rules! batch_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ACCEPTED: &'static [&'static str] = &[$($wire),+];
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($wire) { return Ok(Self::$variant); })+
                Err(format!("{s:?} is not accepted; use one of: {}", Self::ACCEPTED.join(", ")))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
pub(crate) use batch_enum;

/// A string that must never reach a log, an error or `--json` output.
/// `Debug` and `Display` print `<redacted>`; serializing writes `<redacted>` too.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to the value: call sites that need it are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if revealing() {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str("<redacted>")
        }
    }
}

thread_local! {
    static REVEAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a serialization) with secrets written in full. Only the agent's own store,
/// readable by root alone, calls it: everything else (`--json`, the API, logs) gets the
/// redacted forms. Serialization is synchronous, so a thread-local flag is enough.
pub fn with_secrets_revealed<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REVEAL.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REVEAL.with(|r| r.replace(true)));
    f()
}

fn revealing() -> bool {
    REVEAL.with(|r| r.get())
}

/// `skip_serializing_if` for secrets that outputs leave out altogether.
pub(crate) fn hidden<T>(_: &T) -> bool {
    !revealing()
}

/// A URL that may carry a credential: a SAS token in its query, or a user and password.
/// `Debug`, `Display` and serialization show it without them (`https://a.blob.core.windows.net/c?<redacted>`),
/// except inside [`with_secrets_revealed`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }
    /// The whole URL, for the request itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL without its query, fragment or user info.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// `url` with any user info, query and fragment replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (base, secret_tail) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let mut out = match base.find("://") {
        Some(i) => {
            let rest = &base[i + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{}://<redacted>@{}", &base[..i], &rest[at + 1..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if secret_tail {
        out.push_str("?<redacted>");
    }
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if revealing() {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str(&self.redacted())
        }
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretUrl(String::deserialize(d)?))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

/// `{ "name": ..., "value": ... }`; a missing value means the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSetting {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A private registry and its credentials (`ContainerRegistry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRegistry {
    /// Defaults to `docker.io` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_server: Option<String>,
    /// Lower-case `n` on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "hidden")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_reference: Option<serde_json::Value>,
}

impl ContainerRegistry {
    pub fn server(&self) -> &str {
        self.registry_server.as_deref().unwrap_or("docker.io")
    }
}

batch_enum!(
    /// Where a container task starts.
    ContainerWorkingDirectory {
        TaskWorkingDirectory => "taskWorkingDirectory",
        ContainerImageDefault => "containerImageDefault",
    }
);

batch_enum!(
    /// A Batch directory that can be mounted into a container task.
    ContainerHostDataPath {
        Shared => "Shared",
        Startup => "Startup",
        VfsMounts => "VfsMounts",
        Task => "Task",
        JobPrep => "JobPrep",
        Applications => "Applications",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindMountEntry {
    pub source: ContainerHostDataPath,
    #[serde(default)]
    pub is_read_only: bool,
}

/// `containerSettings` of a task, start task or job preparation/release task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskContainerSettings {
    pub image_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<ContainerRegistry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_run_options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<ContainerWorkingDirectory>,
    /// Absent: the whole node root is mounted. `[]`: nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_host_batch_bind_mounts: Option<Vec<BindMountEntry>>,
}

batch_enum!(
    AutoUserScope {
        Task => "task",
        Pool => "pool",
    }
);

batch_enum!(
    ElevationLevel {
        NonAdmin => "nonadmin",
        Admin => "admin",
    }
);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoUserSpecification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AutoUserScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation_level: Option<ElevationLevel>,
}

/// Who a task runs as: a named pool user xor an auto-user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_user: Option<AutoUserSpecification>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_case_insensitive_and_name_accepted_values() {
        let w: ContainerWorkingDirectory =
            serde_json::from_str("\"CONTAINERIMAGEDEFAULT\"").unwrap();
        assert_eq!(w, ContainerWorkingDirectory::ContainerImageDefault);
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            "\"containerImageDefault\""
        );
        let e = serde_json::from_str::<ElevationLevel>("\"root\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonadmin, admin"), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let r: ContainerRegistry =
            serde_json::from_str(r#"{"registryServer":"r","username":"u","password":"hunter2"}"#)
                .unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&r).unwrap().contains("hunter2"));
        assert_eq!(r.password.unwrap().expose(), "hunter2");
    }
}
