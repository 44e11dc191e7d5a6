//! The server half: a rustls `ServerConfig` from a PEM certificate chain
//! and private key, offering HTTP/1.1 over ALPN. Loaded once when a role
//! starts; the roles' shared accept loop (`shardgate_role::serve`) runs one
//! handshake per accepted connection with it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::TlsError;

/// The acceptor for the certificate chain in `cert` (leaf first) and the
/// key in `key` (PKCS#8, PKCS#1 or SEC1): reads both files and checks that
/// the key matches the certificate. `key_path` is the config key of the
/// pair (`proxy.tls`, `meta.tls`) and prefixes every error.
pub fn acceptor(cert: &Path, key: &Path, key_path: &str) -> Result<TlsAcceptor, TlsError> {
    let cert_file = cert.display().to_string();
    let key_file = key.display().to_string();
    let certs = CertificateDer::pem_file_iter(cert).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()).map_err(|e| TlsError::Cert {
        key_path: key_path.into(),
        path: cert_file.clone(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { key_path: key_path.into(), path: cert_file, reason: "no PEM CERTIFICATE block found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        key_path: key_path.into(),
        path: key_file,
        reason: e.to_string(),
    })?;
    let server_error = |e: rustls::Error| TlsError::Server { key_path: key_path.into(), reason: e.to_string() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(server_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(server_error)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(cert: &Path, key: &Path) -> String {
        match acceptor(cert, key, "role.tls") {
            Ok(_) => panic!("{} + {} was accepted", cert.display(), key.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key, other) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("other.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        acceptor(&cert, &key, "role.tls").unwrap();
        let e = error(&dir.path().join("absent.pem"), &key);
        assert!(e.starts_with("role.tls.cert") && e.contains("absent.pem"), "{e}");
        let e = error(&key, &key);
        assert!(e.starts_with("role.tls.cert") && e.contains("key.pem: no PEM CERTIFICATE"), "{e}");
        let e = error(&cert, &cert);
        assert!(e.starts_with("role.tls.key") && e.contains("cert.pem"), "{e}");
        let e = error(&cert, &dir.path().join("absent-key.pem"));
        assert!(e.starts_with("role.tls.key") && e.contains("absent-key.pem"), "{e}");
        let e = error(&cert, &other);
        assert!(e.starts_with("role.tls: the certificate and key do not make"), "{e}");
    }
}
