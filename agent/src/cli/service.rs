//! `berth service`: pool mode's control plane on PostgreSQL (README, "Pool mode: the
//! service"). Flags override the configuration file's keys.

use super::{fail, CommandError, Exit};
use crate::service::config::{FileConfig, ServiceConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// The configuration file (TOML); default /etc/berth/service.toml when it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PostgreSQL: postgres://USER[:PASSWORD]@HOST:PORT/DB.
    #[arg(long)]
    database_url: Option<String>,
    /// Address to serve on (default 0.0.0.0:443); port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP, without TLS (tests, a loopback behind a TLS proxy).
    #[arg(long)]
    insecure_http: bool,
    /// The clients' bearer tokens, one per line.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Read-only tokens (GET only; the web view's viewers), one per line.
    #[arg(long)]
    read_only_token_file: Option<PathBuf>,
    /// The secret agents enrol nodes with (one line).
    #[arg(long)]
    enrolment_secret_file: Option<PathBuf>,
    /// The key nodes' file-proxy credentials are derived with (one line).
    #[arg(long)]
    proxy_secret_file: Option<PathBuf>,
    /// The Batch account name clients sign SharedKey requests for.
    #[arg(long)]
    account_name: Option<String>,
    /// A file of a base64 account key; give it twice for two keys (a rotation).
    #[arg(long = "account-key-file")]
    account_key_files: Vec<PathBuf>,
}

pub async fn run(args: ServiceArgs) -> ExitCode {
    let file = match FileConfig::read(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return fail(&CommandError::plain(e), Exit::InvalidInput),
    };
    let flags = FileConfig {
        database_url: args.database_url,
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        insecure_http: args.insecure_http.then_some(true),
        token_file: args.token_file,
        read_only_token_file: args.read_only_token_file,
        enrolment_secret_file: args.enrolment_secret_file,
        proxy_secret_file: args.proxy_secret_file,
        account_name: args.account_name,
        account_key_files: (!args.account_key_files.is_empty()).then_some(args.account_key_files),
    };
    let cfg = match ServiceConfig::resolve(file.overridden(flags)) {
        Ok(c) => c,
        Err(e) => return fail(&CommandError::plain(e), Exit::InvalidInput),
    };
    let cancel = CancellationToken::new();
    crate::shutdown::cancel_on_signals(cancel.clone(), "the service stops serving");
    match crate::service::server::run(cfg, cancel).await {
        Ok(()) => Exit::Ok.into(),
        Err(e) => fail(&e, Exit::Failed),
    }
}
