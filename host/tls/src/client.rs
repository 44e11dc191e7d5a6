//! The client half: the rustls `ClientConfig` every outgoing HTTP connection
//! of the workspace uses, and the `reqwest` builders that carry it.
//!
//! Roots: the CA file given (`meta.tls.ca`, `proxy.meta_ca`, `ctl
//! --ca-cert`), or else the platform's trust store read by
//! `rustls-native-certs` (already in the tree through reqwest's
//! `rustls-platform-verifier`, which on Linux does the same; its own
//! verifier is not used because it logs every refused certificate at ERROR
//! level, which `ctl` would print on each retry) and checked by rustls's
//! WebPKI verifier. The system store is read once per process, at the first
//! `https://` handshake that needs it, so the many plain-HTTP clients
//! (tests, `dev`) never touch it and building them cannot fail.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::TlsError;

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for outgoing connections: the `ring` provider,
/// TLS 1.2 and 1.3, ALPN `http/1.1`. With `ca`, only the certificates in
/// that PEM file are trusted (the CA that signed the members'
/// certificates); without, the platform's trust store.
pub fn client_config(ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(ring()).with_safe_default_protocol_versions().map_err(|e| TlsError::Client(e.to_string()))?;
    let mut config = match ca {
        Some(path) => builder.with_root_certificates(ca_roots(path)?).with_no_client_auth(),
        None => builder.dangerous().with_custom_certificate_verifier(system_roots()).with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A `reqwest` client builder whose TLS is [`client_config`]`(ca)`. Every
/// reqwest client in the workspace starts here (reqwest's
/// `rustls-no-provider` feature makes any other client panic at `build()`).
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(ca)?))
}

/// [`http_client`] trusting the platform's roots: for plain `http://`
/// addresses and public `https://` ones. Cannot fail.
pub fn http_client_system_roots() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(system_roots_config())
}

/// [`http_client`] for `reqwest::blocking` (the binary's tests).
#[cfg(feature = "blocking")]
pub fn blocking_http_client(ca: Option<&Path>) -> Result<reqwest::blocking::ClientBuilder, TlsError> {
    Ok(reqwest::blocking::Client::builder().tls_backend_preconfigured(client_config(ca)?))
}

/// [`http_client_system_roots`] for `reqwest::blocking`.
#[cfg(feature = "blocking")]
pub fn blocking_http_client_system_roots() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder().tls_backend_preconfigured(system_roots_config())
}

/// The `client_config(None)` of this process, built once.
fn system_roots_config() -> ClientConfig {
    static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // Only a provider without TLS 1.2/1.3 cipher suites can fail
            // here, and ring's default provider has both.
            client_config(None).expect("ring's default provider supports TLS 1.2 and 1.3")
        })
        .clone()
}

/// Every certificate in the PEM file at `path`, as trust anchors.
fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let ca_error = |reason: String| TlsError::Ca { path: path.display().to_string(), reason };
    let certs =
        CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()).map_err(|e| ca_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_error("no PEM CERTIFICATE block found".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| ca_error(format!("certificate {} is not a usable CA certificate: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// The process's verifier for the platform's roots.
fn system_roots() -> Arc<dyn ServerCertVerifier> {
    static VERIFIER: OnceLock<Arc<SystemRoots>> = OnceLock::new();
    VERIFIER.get_or_init(|| Arc::new(SystemRoots { provider: ring(), verifier: OnceLock::new() })).clone()
}

/// A WebPKI verifier over the system's roots, created (which reads the
/// store from disk, and fails when it holds no usable certificate) at the
/// first certificate it has to check. Signatures are checked with the
/// provider's algorithms, as the WebPKI verifier itself does.
struct SystemRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
}

impl SystemRoots {
    fn load(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "loaded the system's CA certificates");
        if roots.is_empty() {
            return Err(rustls::Error::General(
                "no CA certificates in the system trust store (give the CA file that signed the server's certificate)".into(),
            ));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("system trust store: {e}")))
    }
}

impl fmt::Debug for SystemRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemRoots").field("loaded", &self.verifier.get().map(|v| v.is_ok())).finish()
    }
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = self.verifier.get_or_init(|| self.load()).as_ref().map_err(|e| e.clone())?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent-ca.pem");
        let e = client_config(Some(&absent)).unwrap_err().to_string();
        assert!(e.starts_with("CA file") && e.contains("absent-ca.pem"), "{e}");
        let key_only = dir.path().join("key-only.pem");
        std::fs::write(&key_only, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let e = client_config(Some(&key_only)).unwrap_err().to_string();
        assert!(e.contains("key-only.pem: no PEM CERTIFICATE block found"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = client_config(Some(&garbage)).unwrap_err().to_string();
        assert!(e.contains("garbage.pem: certificate 1 is not a usable CA certificate"), "{e}");
    }

    #[test]
    fn configs_offer_http1_and_clients_build_without_a_default_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem()).unwrap();
        for config in [client_config(None).unwrap(), client_config(Some(&ca)).unwrap()] {
            assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
        http_client(Some(&ca)).unwrap().build().unwrap();
        http_client_system_roots().build().unwrap();
        // Building them installed nothing process-wide.
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
