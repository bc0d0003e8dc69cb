//! TLS (`--tls-cert`, `--tls-key`): the relay serves `wss://` and `https://` itself, with rustls.
//!
//! Each connection's handshake runs in that connection's own task (see `server`), within the
//! header timeout and counted among the connections not yet upgraded, so a client that stalls
//! in its handshake holds up nobody else's and is closed in time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and the private key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the TLS set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (they do not match, unsupported key type, ...).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the acceptor from the PEM files.
///
/// # Errors
/// [`TlsError`] naming the file or the problem.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let pem_error = |path: &Path, error: &dyn std::fmt::Display| TlsError::Pem {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| pem_error(&files.cert, &error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(&files.cert, &error))?;
    if certs.is_empty() {
        return Err(pem_error(&files.cert, &"no certificate in it"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|error| pem_error(&files.key, &error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Browsers negotiate HTTP/1.1 for WebSocket upgrades.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
