//! TLS with rustls (ring provider): the server side (index server and volumes with
//! `--tls-cert` / `--tls-key`) and the trust roots of the index's volume client
//! (`--tls-ca`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process-wide rustls crypto provider (reqwest is built without one).
/// Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS acceptor serving the PEM certificate chain `cert` with the PEM key `key`,
/// speaking HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    install_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The certificates of the PEM file `ca`, for the volume client to trust.
pub fn ca_certificates(ca: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("parsing certificates in {}", ca.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", ca.display());
    Ok(certs)
}
