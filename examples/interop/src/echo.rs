//! Echo of the interop test metadata (the "Echo Metadata" server feature).
//!
//! A tonic handler can set initial metadata on its response, so the handlers
//! echo `x-grpc-test-echo-initial` themselves (it crosses Keel's layers). They
//! cannot set trailers, so [`EchoTrailing`], a tower layer around the
//! Keel-wrapped server (as in tonic's own interop server), copies
//! `x-grpc-test-echo-trailing-bin` from the request into the response's
//! trailers, or into its headers when the response is trailers-only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Request metadata echoed back in the initial metadata.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";

/// Request metadata echoed back in the trailing metadata.
pub const ECHO_TRAILING_BIN: &str = "x-grpc-test-echo-trailing-bin";

/// Makes [`EchoTrailing`] services.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoTrailingLayer;

impl<S> Layer<S> for EchoTrailingLayer {
    type Service = EchoTrailing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EchoTrailing { inner }
    }
}

/// Copies `x-grpc-test-echo-trailing-bin` from each request into the
/// trailing metadata of its response.
#[derive(Clone, Debug)]
pub struct EchoTrailing<S> {
    inner: S,
}

impl<S> EchoTrailing<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        EchoTrailing { inner }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for EchoTrailing<S> {
    const NAME: &'static str = S::NAME;
}

type Echo = Option<HeaderValue>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for EchoTrailing<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
{
    type Response = Response<EchoTrailingBody<ResBody>>;
    type Error = Infallible;
    type Future = EchoFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let echo = req.headers().get(ECHO_TRAILING_BIN).cloned();
        EchoFuture {
            inner: self.inner.call(req),
            echo,
        }
    }
}

pin_project! {
    /// Response future of [`EchoTrailing`].
    pub struct EchoFuture<F> {
        #[pin]
        inner: F,
        echo: Echo,
    }
}

impl<F, B> Future for EchoFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<EchoTrailingBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (mut parts, body) = response.into_parts();
        let mut echo = this.echo.take();
        // A trailers-only response (an error status and no messages) carries
        // its trailing metadata in the headers.
        if parts.headers.contains_key("grpc-status")
            && let Some(value) = echo.take()
        {
            parts
                .headers
                .insert(HeaderName::from_static(ECHO_TRAILING_BIN), value);
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            EchoTrailingBody { inner: body, echo },
        )))
    }
}

pin_project! {
    /// A response body that adds the echoed value to the trailers.
    pub struct EchoTrailingBody<B> {
        #[pin]
        inner: B,
        echo: Echo,
    }
}

impl<B: Body<Data = Bytes>> Body for EchoTrailingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    if let Some(value) = this.echo.take() {
                        trailers.insert(HeaderName::from_static(ECHO_TRAILING_BIN), value);
                    }
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
