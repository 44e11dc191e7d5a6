//! TLS for Shardgate's roles, in one place: rustls with the `ring` provider
//! passed explicitly everywhere (never a process-wide default provider, never
//! aws-lc).
//!
//! - Server side: [`acceptor`] loads a PEM certificate chain and key into a
//!   `TlsAcceptor` (the proxy's client listener, meta's API listener); the
//!   roles' shared accept loop (`shardgate_role::serve`) runs every
//!   handshake with it, in the connection's own task, with a deadline.
//! - Client side: [`client_config`] is the rustls client config (roots: a
//!   CA file, or the platform's trust store), and [`http_client`] /
//!   [`http_client_system_roots`] are the `reqwest::ClientBuilder`s every
//!   HTTP client of the workspace starts from. reqwest is built with its
//!   `rustls-no-provider` feature, so a client built any other way panics at
//!   `build()`: meta's Raft RPCs, its forwarded writes, `MetaClient`, the
//!   binary and the tests all come through here.
//!
//! Where it sits in the request flow: between the TCP socket and HTTP, on
//! both ends of every connection that uses `https://`. Plain HTTP clients
//! built here still speak plain HTTP to `http://` addresses.

mod client;
mod server;

#[cfg(feature = "blocking")]
pub use client::{blocking_http_client, blocking_http_client_system_roots};
pub use client::{client_config, http_client, http_client_system_roots};
pub use server::acceptor;

/// Re-exported so the roles name the same types as this crate.
pub use tokio_rustls::TlsAcceptor;

/// Why a certificate, key or CA file could not be used. Server-side errors
/// name the config key (`<key_path>.cert`, `<key_path>.key`); CA errors name
/// the file, and the caller puts its key in front (`meta.tls.ca: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{key_path}.cert {path}: {reason}")]
    Cert { key_path: String, path: String, reason: String },
    #[error("{key_path}.key {path}: {reason}")]
    Key { key_path: String, path: String, reason: String },
    #[error("{key_path}: the certificate and key do not make a TLS server config: {reason}")]
    Server { key_path: String, reason: String },
    #[error("CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot build the TLS client config: {0}")]
    Client(String),
}
