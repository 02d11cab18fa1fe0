//! `berth service`'s configuration: a TOML file (`/etc/berth/service.toml` when present,
//! or `--config FILE`), each key overridden by its flag.
//!
//! ```toml
//! database_url = "postgres://berth@127.0.0.1:5432/berth"
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/berth/service.crt"     # PEM chain
//! tls_key = "/etc/berth/service.key"      # PEM (PKCS#8, PKCS#1 or SEC1)
//! # insecure_http = true                  # plain HTTP: only when asked for
//! token_file = "/etc/berth/client-tokens" # client tokens, one per line
//! # read_only_token_file = "/etc/berth/viewer-tokens" # read-only tokens, one per line
//! enrolment_secret_file = "/etc/berth/enrolment-secret"
//! proxy_secret_file = "/etc/berth/proxy-secret"   # the key of nodes' file-proxy credentials
//! # account_name = "berth"                # Batch's SharedKey, as the agent takes it:
//! # account_key_files = ["/etc/berth/account-key1", "/etc/berth/account-key2"]
//! ```

use super::state::Settings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the configuration is read from when `--config` is not given (if it exists).
pub const DEFAULT_PATH: &str = "/etc/berth/service.toml";

/// The file's keys; every one optional here (flags may give them).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: Option<bool>,
    pub token_file: Option<PathBuf>,
    pub read_only_token_file: Option<PathBuf>,
    pub enrolment_secret_file: Option<PathBuf>,
    pub proxy_secret_file: Option<PathBuf>,
    /// The Batch account name SharedKey clients sign for.
    pub account_name: Option<String>,
    /// One or two files of a base64 account key (two: a key rotation).
    pub account_key_files: Option<Vec<PathBuf>>,
}

impl FileConfig {
    /// Reads `path`; `None` when `path` is the default one and does not exist.
    pub fn read(path: Option<&Path>) -> Result<FileConfig, String> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileConfig::default())
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` with every key `over` gives replaced (flags over the file).
    pub fn overridden(self, over: FileConfig) -> FileConfig {
        FileConfig {
            database_url: over.database_url.or(self.database_url),
            listen: over.listen.or(self.listen),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            insecure_http: over.insecure_http.or(self.insecure_http),
            token_file: over.token_file.or(self.token_file),
            read_only_token_file: over.read_only_token_file.or(self.read_only_token_file),
            enrolment_secret_file: over.enrolment_secret_file.or(self.enrolment_secret_file),
            proxy_secret_file: over.proxy_secret_file.or(self.proxy_secret_file),
            account_name: over.account_name.or(self.account_name),
            account_key_files: over.account_key_files.or(self.account_key_files),
        }
    }
}

/// How the service answers: HTTPS with this certificate and key, or plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tls {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Only with `insecure_http` given explicitly.
    Plain,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub database_url: String,
    pub listen: SocketAddr,
    pub transport: Transport,
    pub settings: Settings,
}

/// The default listen address (Batch's HTTPS port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:443";

impl ServiceConfig {
    /// Checks `c` and reads its token and secret files. Errors name the key.
    pub fn resolve(c: FileConfig) -> Result<ServiceConfig, String> {
        let database_url = c
            .database_url
            .ok_or("database_url (--database-url) is required")?;
        let listen = c
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("static address"));
        let transport = match (c.tls_cert, c.tls_key, c.insecure_http.unwrap_or(false)) {
            (Some(_), _, true) | (_, Some(_), true) => {
                return Err("insecure_http and tls_cert/tls_key exclude each other".into())
            }
            (None, None, true) => Transport::Plain,
            (Some(cert), Some(key), false) => Transport::Tls { cert, key },
            _ => {
                return Err(
                    "tls_cert and tls_key (--tls-cert, --tls-key) are required; plain HTTP only with insecure_http (--insecure-http)"
                        .into(),
                )
            }
        };
        let token_file = c
            .token_file
            .ok_or("token_file (--token-file) is required: the clients' bearer tokens")?;
        let client_tokens = crate::api::read_tokens(&token_file)?;
        let read_only_tokens = match &c.read_only_token_file {
            Some(f) => crate::api::read_tokens(f)?,
            None => vec![],
        };
        let secret_file = c.enrolment_secret_file.ok_or(
            "enrolment_secret_file (--enrolment-secret-file) is required: the secret agents enrol with",
        )?;
        let enrolment_secret = read_secret("enrolment_secret_file", &secret_file)?;
        let proxy_secret = match &c.proxy_secret_file {
            Some(f) => read_secret("proxy_secret_file", f)?,
            None => {
                tracing::warn!("no proxy_secret_file: nodes' file-proxy credentials are derived from the enrolment secret, which every agent holds");
                String::new()
            }
        };
        let secure_cookies = matches!(transport, Transport::Tls { .. });
        let shared_key = match (c.account_name, c.account_key_files.unwrap_or_default()) {
            (None, files) if files.is_empty() => None,
            (Some(name), files) if !files.is_empty() => {
                Some(crate::api::shared_key::KeyRing::read(&name, &files)?)
            }
            (None, _) => {
                return Err("account_key_files (--account-key-file) is set but account_name (--account-name) is not".into())
            }
            (Some(_), _) => {
                return Err("account_name (--account-name) is set but account_key_files (--account-key-file) is not".into())
            }
        };
        Ok(ServiceConfig {
            database_url,
            listen,
            transport,
            settings: Settings {
                client_tokens,
                read_only_tokens,
                secure_cookies,
                enrolment_secret,
                proxy_secret,
                shared_key,
            },
        })
    }
}

/// The one secret in `path` (the file of key `key`).
fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    let mut secrets = crate::api::read_tokens(path)?;
    if secrets.len() != 1 {
        return Err(format!("{key} {}: one secret, on one line", path.display()));
    }
    Ok(secrets.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_one_per_line() {
        assert_eq!(
            crate::api::parse_tokens("# clients\nabcdefghijklmnop\n\n  qrstuvwxyz0123456789 \n")
                .unwrap(),
            vec!["abcdefghijklmnop", "qrstuvwxyz0123456789"]
        );
        assert!(crate::api::parse_tokens("short\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(crate::api::parse_tokens("# none\n").is_err());
    }

    #[test]
    fn flags_override_the_file_and_tls_is_required() {
        let file: FileConfig = toml::from_str(
            "database_url = \"postgres://a@h/db\"\nlisten = \"127.0.0.1:1\"\ninsecure_http = true",
        )
        .unwrap();
        let flags = FileConfig {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            ..Default::default()
        };
        let c = file.overridden(flags);
        assert_eq!(c.listen, Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(c.database_url.as_deref(), Some("postgres://a@h/db"));
        let no_tls = FileConfig {
            database_url: Some("postgres://a@h/db".into()),
            ..Default::default()
        };
        let e = ServiceConfig::resolve(no_tls).unwrap_err();
        assert!(e.contains("--insecure-http"), "{e}");
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
