//! HTTPS: the certificate chain and private key named in `[signer.tls]`,
//! loaded once at start into a rustls server configuration (ring
//! provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::exit::Failure;

fn bad(msg: String) -> Failure {
    Failure::bad_input(msg).hint(
        "[signer.tls] certificate-file is the PEM chain (server certificate first), key-file its PEM private key",
    )
}

/// The acceptor for `certificate` (PEM chain) and `key` (PEM key).
pub fn acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, Failure> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| bad(format!("certificate-file {}: {e}", certificate.display())))?;
    if chain.is_empty() {
        return Err(bad(format!(
            "certificate-file {}: no certificate in it",
            certificate.display()
        )));
    }
    // The error names the file only: a key parser's message could quote
    // key material.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        bad(format!(
            "key-file {}: no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
