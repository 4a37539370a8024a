//! [`TlsIncoming`]: TLS handshakes of the HTTP port's accepted connections, each in a task of
//! its own.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

/// A client gets this long to finish its handshake; then the connection is closed, so idle
/// sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once; past it, no more connections are accepted until one ends
/// (the kernel's backlog queues them), which bounds the memory a flood of silent clients takes.
const MAX_HANDSHAKES: usize = 1024;

/// The connections of `tcp` once their TLS handshake succeeded. Handshakes run concurrently,
/// in tasks, so one slow client holds up no other; a failed one closes its connection and is
/// logged at `debug` (port scanners and plaintext clients fail them all day). When `tcp` ends
/// (draining), this ends at once: handshakes still under way are dropped, as their clients
/// have sent no call yet.
pub(crate) struct TlsIncoming<S> {
    /// `None` once it ended.
    tcp: Option<S>,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsStream<TcpStream>>>,
}

impl<S> TlsIncoming<S> {
    pub(crate) fn new(tcp: S, config: Arc<ServerConfig>) -> Self {
        TlsIncoming {
            tcp: Some(tcp),
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl<S> Stream for TlsIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.tcp.is_none() {
            return Poll::Ready(None);
        }
        // First start the handshake of every connection waiting, so none waits on another's.
        while this.handshakes.len() < MAX_HANDSHAKES
            && let Some(tcp) = this.tcp.as_mut()
        {
            match Pin::new(tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let acceptor = this.acceptor.clone();
                    this.handshakes.spawn(handshake(acceptor, stream));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.tcp = None;
                    this.handshakes.abort_all();
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        // Then hand over a connection whose handshake finished.
        loop {
            match ready!(this.handshakes.poll_join_next(cx)) {
                Some(Ok(Some(stream))) => return Poll::Ready(Some(Ok(stream))),
                // Failed (logged), or panicked inside rustls: that connection only.
                Some(Ok(None) | Err(_)) => continue,
                // None under way: the listener's waker is registered above.
                None => return Poll::Pending,
            }
        }
    }
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(?peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}
