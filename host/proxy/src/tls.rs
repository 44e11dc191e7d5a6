//! TLS for the proxy, both ways, through crate `shardgate-tls` (rustls with
//! the `ring` provider passed explicitly, never a process-wide default):
//!
//! - `proxy.tls = { cert, key }`: the client listener. The PEM certificate
//!   chain and key are loaded once at start into an acceptor offering
//!   HTTP/1.1 over ALPN. The shared accept loop ([`shardgate_role::serve`],
//!   started by [`crate::server`]) hands each accepted TCP connection to a
//!   task that runs the handshake (bounded by `proxy.header_read_timeout`)
//!   and then serves HTTP on the TLS stream.
//! - `proxy.meta_ca`: the routing watch and reads from `https://` meta
//!   members check their certificates against this CA ([`meta_client`]).
//!
//! Plain HTTP stays the default on both.

use shardgate_meta_client::{ClientError, MetaClient};
use tokio_rustls::TlsAcceptor;

use crate::config::{ProxyConfig, TlsConfig};

/// Why `proxy.tls` or `proxy.meta_ca` could not be loaded; the message
/// names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Listener(#[from] shardgate_tls::TlsError),
    #[error("proxy.meta_ca: {0}")]
    MetaCa(shardgate_tls::TlsError),
}

/// The acceptor for `config`: reads both files and checks that the key
/// matches the certificate.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    Ok(shardgate_tls::acceptor(&config.cert, &config.key, "proxy.tls")?)
}

/// The client of `proxy.meta` the routing watch uses: trusting
/// `proxy.meta_ca` for `https://` members when it is set, the platform's
/// roots otherwise.
pub fn meta_client(config: &ProxyConfig) -> Result<MetaClient, TlsError> {
    let client = MetaClient::new(config.meta.clone());
    match &config.meta_ca {
        Some(ca) => client.with_tls_ca(ca).map_err(|e| match e {
            ClientError::Tls(e) => TlsError::MetaCa(e),
            other => TlsError::MetaCa(shardgate_tls::TlsError::Client(other.to_string())),
        }),
        None => Ok(client),
    }
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
        let e = error(TlsConfig { cert: cert.clone(), key: other });
        assert!(e.starts_with("proxy.tls:"), "{e}");

        // proxy.meta_ca: the CA file is read when the proxy starts.
        let config = |ca: &std::path::Path| ProxyConfig { meta_ca: Some(ca.to_path_buf()), ..ProxyConfig::default() };
        meta_client(&config(&cert)).unwrap();
        let e = meta_client(&config(&dir.path().join("absent-ca.pem"))).err().unwrap().to_string();
        assert!(e.starts_with("proxy.meta_ca: CA file") && e.contains("absent-ca.pem"), "{e}");
        let e = meta_client(&config(&key)).err().unwrap().to_string();
        assert!(e.starts_with("proxy.meta_ca: CA file") && e.contains("key.pem: no PEM CERTIFICATE"), "{e}");
    }
}
