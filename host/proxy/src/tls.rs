//! TLS on the proxy's client listener (`proxy.tls = { cert, key }`): the
//! PEM certificate chain and private key are loaded once at start into a
//! rustls `ServerConfig` built with the `ring` provider passed explicitly
//! (never a process-wide default provider), offering HTTP/1.1 over ALPN.
//! Where it sits: [`crate::server`]'s accept loop hands each accepted TCP
//! connection to a task that runs the handshake (bounded by
//! `proxy.header_read_timeout`) and then serves HTTP on the TLS stream.
//! Plain HTTP stays the default.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why `proxy.tls` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("proxy.tls.cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("proxy.tls.key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("proxy.tls: the certificate and key do not make a TLS server config: {0}")]
    Config(String),
}

/// The acceptor for `config`: reads both files and checks that the key
/// matches the certificate.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_path = config.cert.display().to_string();
    let key_path = config.key.display().to_string();
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: cert_path.clone(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: cert_path, reason: "no PEM CERTIFICATE block found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::Key { path: key_path, reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(config: TlsConfig) -> String {
        match acceptor(&config) {
            Ok(_) => panic!("{config:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key, other) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("other.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&other, other_key.serialize_pem()).unwrap();
        acceptor(&TlsConfig { cert: cert.clone(), key: key.clone() }).unwrap();
        let e = error(TlsConfig { cert: dir.path().join("absent.pem"), key: key.clone() });
        assert!(e.starts_with("proxy.tls.cert") && e.contains("absent.pem"), "{e}");
        let e = error(TlsConfig { cert: key.clone(), key: key.clone() });
        assert!(e.starts_with("proxy.tls.cert"), "{e}");
        let e = error(TlsConfig { cert: cert.clone(), key: cert.clone() });
        assert!(e.starts_with("proxy.tls.key"), "{e}");
        let e = error(TlsConfig { cert, key: other });
        assert!(e.starts_with("proxy.tls:"), "{e}");
    }
}
