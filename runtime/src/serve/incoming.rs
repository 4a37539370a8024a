//! The accepted connections of a listener, until draining starts.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::TcpIncoming;

/// Yields accepted connections (with `TCP_NODELAY`) until `draining` is
/// cancelled; then ends and closes the listening socket at once, so new
/// connections are refused while in-flight calls drain.
pub(crate) struct Incoming {
    listener: Option<TcpIncoming>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Incoming {
    pub(crate) fn new(listener: TcpListener, draining: CancellationToken) -> Self {
        Incoming {
            listener: Some(TcpIncoming::from(listener).with_nodelay(Some(true))),
            stop: Box::pin(draining.cancelled_owned()),
        }
    }
}

impl Stream for Incoming {
    type Item = <TcpIncoming as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            self.listener = None;
        }
        match self.listener.as_mut() {
            Some(listener) => Pin::new(listener).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}
