//! [`TlsListener`]: the HTTP port's connections over TLS, for `axum::serve`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use super::TlsIncoming;

/// Serves the connections of a listener once their handshakes (concurrent, as on the gRPC
/// port) succeeded.
pub(crate) struct TlsListener {
    incoming: TlsIncoming<TcpListenerStream>,
    addr: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let incoming = TlsIncoming::new(TcpListenerStream::new(listener), config);
        Ok(TlsListener { incoming, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr();
                    let peer =
                        peer.unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
                    return (stream, peer);
                }
                // Out of file descriptors and the like: wait, as axum's own listener does,
                // rather than spin.
                Some(Err(error)) => {
                    tracing::warn!(%error, "accepting a connection of the HTTP port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
