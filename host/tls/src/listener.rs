//! [`TlsListener`]: a TLS listener for `axum::serve` (meta's API, which
//! also carries the Raft RPCs between members and forwarded writes).
//!
//! axum accepts connections one at a time, so a handshake run inside
//! `accept()` would let one client that connects and never sends a
//! ClientHello stop every other client. Here a background task accepts TCP
//! connections and runs each handshake in its own task, bounded by a
//! timeout; `accept()` only hands out connections whose handshake finished.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error};

/// Finished handshakes waiting for `accept()`.
const READY_QUEUE: usize = 64;

/// A `TcpListener` behind TLS. Dropping it stops accepting, closes the
/// listening socket and abandons the handshakes in progress.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` (inside a tokio runtime). Accepted
    /// sockets get `TCP_NODELAY`; a handshake that has not finished after
    /// `handshake_timeout` is dropped.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, handshake_timeout: Duration) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, handshake_timeout, tx));
        Ok(Self { local_addr, ready, accept_loop })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped (or
            // its runtime shuts down): nothing will ever arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Owned here, so aborting this task aborts the handshakes too.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let (acceptor, ready) = (acceptor.clone(), ready.clone());
                    handshakes.spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let _ = ready.send((tls, peer)).await;
                            }
                            Ok(Err(error)) => debug!(%peer, %error, "tls handshake failed"),
                            Err(_) => debug!(%peer, timeout = ?handshake_timeout, "tls handshake timed out"),
                        }
                    });
                }
                // The peer gave up before we accepted: nothing to do.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                Err(e) => {
                    // E.g. out of file descriptors: give connections time to close.
                    error!(error = %e, "accepting a tcp connection failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = ready.closed() => return,
        }
    }
}
