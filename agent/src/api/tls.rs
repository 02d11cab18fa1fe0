//! The TCP API's TLS: rustls with a PEM certificate chain and key (the service's own
//! [`crate::service::server::tls_config`]), re-read on SIGHUP so that a renewed certificate
//! is served without a restart. A reload that fails keeps the certificate in use.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The certificate and key files, and the acceptor made of them last.
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Reads `cert` and `key`; errors name the file and the cause.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, String> {
        Self::of(cert, key).map_err(|e| crate::error_chain::chain(&e))
    }

    /// [`ReloadableTls::load`] with the typed error.
    pub fn of(
        cert: PathBuf,
        key: PathBuf,
    ) -> Result<Arc<Self>, crate::service::server::ServerError> {
        let config = crate::service::server::tls_config(&cert, &key)?;
        Ok(Arc::new(ReloadableTls {
            cert,
            key,
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    /// The acceptor for a new connection (connections already open keep theirs).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files; on failure the previous certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = crate::service::server::tls_config(&self.cert, &self.key)
            .map(|c| TlsAcceptor::from(Arc::new(c)))
            .map_err(|e| crate::error_chain::chain(&e))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}
