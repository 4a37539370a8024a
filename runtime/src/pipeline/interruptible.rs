//! A response body that can be cut short with a final gRPC status.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Wraps a response body so the pipeline (or the drain) can end it early with `grpc-status`
    /// trailers, or answer with no body at all (the `Default`, for
    /// trailers-only responses Keel makes itself).
    pub struct Interruptible<B> {
        #[pin]
        inner: Option<B>,
    }
}

impl<B> Interruptible<B> {
    pub(crate) fn new(inner: B) -> Self {
        Interruptible { inner: Some(inner) }
    }

    /// The wrapped body, unless it ended early.
    pub(crate) fn inner(self: Pin<&mut Self>) -> Option<Pin<&mut B>> {
        self.project().inner.as_pin_mut()
    }

    /// Drops the wrapped body and yields the trailers that end the call with `status`.
    pub(crate) fn interrupt<E>(
        self: Pin<&mut Self>,
        status: &tonic::Status,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.project().inner.set(None);
        let mut trailers = HeaderMap::new();
        // Statuses made by Keel always encode into valid headers.
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl<B> Default for Interruptible<B> {
    /// An empty body.
    fn default() -> Self {
        Interruptible { inner: None }
    }
}

impl<B: Body<Data = Bytes>> Body for Interruptible<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.inner() {
            Some(inner) => inner.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
