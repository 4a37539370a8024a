//! Turns a panicking handler into an `INTERNAL` status instead of a dropped
//! connection.
//!
//! A panic while the handler future runs, or while a streaming response is
//! produced, is caught, logged (inside the request's span, so with its trace
//! id) and answered with `INTERNAL`; the connection and the server carry on.
//! [`Keel`](crate::Keel) puts [`RecoverLayer`] inside the metrics layer, so a
//! panic is counted as `Internal`.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::Interruptible;
use crate::policy::ServicePolicy;

/// Catches panics of the wrapped service; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct RecoverLayer {
    policy: &'static ServicePolicy,
}

impl RecoverLayer {
    /// A layer for the service `policy` describes (its paths name panics in logs).
    pub fn new(policy: &'static ServicePolicy) -> Self {
        RecoverLayer { policy }
    }
}

impl<S> Layer<S> for RecoverLayer {
    type Service = Recover<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Recover {
            inner,
            policy: self.policy,
        }
    }
}

/// The service made by [`RecoverLayer`].
#[derive(Clone, Debug)]
pub struct Recover<S> {
    inner: S,
    policy: &'static ServicePolicy,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Recover<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for Recover<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<RecoverBody<ResBody>>;
    type Error = S::Error;
    type Future = RecoverFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = self.policy.method(req.uri().path()).map(|(_, m)| m.path);
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(inner) => RecoverFuture {
                inner: Some(inner),
                path,
            },
            Err(panic) => {
                log_panic(path, panic.as_ref());
                RecoverFuture { inner: None, path }
            }
        }
    }
}

pin_project! {
    /// Response future of [`Recover`].
    pub struct RecoverFuture<F> {
        #[pin]
        inner: Option<F>,
        path: Option<&'static str>,
    }
}

impl<F, ResBody, E> Future for RecoverFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<RecoverBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(internal_response()));
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => {
                let path = *this.path;
                Poll::Ready(result.map(|res| res.map(|body| RecoverBody::new(body, path))))
            }
            Err(panic) => {
                log_panic(*this.path, panic.as_ref());
                this.inner.set(None);
                Poll::Ready(Ok(internal_response()))
            }
        }
    }
}

pin_project! {
    /// Response body of [`Recover`]: ends with `INTERNAL` trailers if
    /// producing the body panics. The default is an empty body.
    pub struct RecoverBody<B> {
        #[pin]
        body: Interruptible<B>,
        path: Option<&'static str>,
    }
}

impl<B> RecoverBody<B> {
    /// Guards `body`, a response of the method at `path` (for the log).
    pub(crate) fn new(body: B, path: Option<&'static str>) -> Self {
        RecoverBody {
            body: Interruptible::new(body),
            path,
        }
    }
}

impl<B> Default for RecoverBody<B> {
    fn default() -> Self {
        RecoverBody {
            body: Interruptible::default(),
            path: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RecoverBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        poll_guarded(this.body, *this.path, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Polls `body`, catching a panic of the handler code producing it: the
/// panic is logged (with `path`, the method's) and the body ends with
/// `INTERNAL` trailers.
pub(crate) fn poll_guarded<B: Body<Data = Bytes>>(
    mut body: Pin<&mut Interruptible<B>>,
    path: Option<&str>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    let Some(inner) = body.as_mut().inner() else {
        return Poll::Ready(None);
    };
    match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
        Ok(polled) => polled,
        Err(panic) => {
            log_panic(path, panic.as_ref());
            body.interrupt(&internal())
        }
    }
}

/// The status of a call whose handler panicked.
#[cold]
pub(crate) fn internal() -> tonic::Status {
    tonic::Status::internal("internal error")
}

/// A trailers-only `INTERNAL` response with an empty body.
fn internal_response<B>() -> Response<RecoverBody<B>> {
    internal().into_http()
}

/// Logs the panic of the handler of `path` (inside the current span).
#[cold]
#[inline(never)]
pub(crate) fn log_panic(path: Option<&str>, panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    let path = path.unwrap_or("(unknown method)");
    tracing::error!(path, panic = message, "handler panicked; answered INTERNAL");
}
