//! Ends what is still running when the drain deadline passes.
//!
//! [`DrainLayer`] wraps every service of a [`Server`](super::Server). Until
//! shutdown it only checks an atomic flag when a call is pending. When the
//! drain deadline passes, calls that have not answered yet get `UNAVAILABLE`,
//! and streaming responses end with `UNAVAILABLE` trailers, so clients see a
//! proper gRPC status and may retry elsewhere. Health `Watch` streams end as
//! soon as draining starts: they would otherwise hold the drain open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};

use crate::body::Interruptible;

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Shutdown phases the layer reacts to.
#[derive(Clone, Debug)]
pub(crate) struct Phases {
    /// Draining started: no new connections; health `Watch` streams end.
    pub(crate) draining: CancellationToken,
    /// The drain deadline passed: everything still running ends.
    pub(crate) deadline: CancellationToken,
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct DrainLayer {
    phases: Phases,
}

impl DrainLayer {
    pub(crate) fn new(phases: Phases) -> Self {
        DrainLayer { phases }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            phases: self.phases.clone(),
        }
    }
}

/// The service made by `DrainLayer`.
#[derive(Clone, Debug)]
pub struct Drain<S> {
    inner: S,
    phases: Phases,
}

impl<S, B, ResBody> Service<Request<B>> for Drain<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<DrainBody<ResBody>>;
    type Error = S::Error;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let end = if req.uri().path() == WATCH_PATH {
            self.phases.draining.clone()
        } else {
            self.phases.deadline.clone()
        };
        DrainFuture {
            inner: self.inner.call(req),
            deadline: Stop::new(self.phases.deadline.clone()),
            end: Some(end),
        }
    }
}

/// Waits for a token, registering for its wake-up only once polled while
/// pending, so calls that complete at once cost one atomic load.
struct Stop {
    token: CancellationToken,
    waiting: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Stop {
    fn new(token: CancellationToken) -> Self {
        Stop {
            token,
            waiting: None,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        let token = &self.token;
        self.waiting
            .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()))
            .as_mut()
            .poll(cx)
    }
}

pin_project! {
    /// Response future of [`Drain`].
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        deadline: Stop,
        end: Option<CancellationToken>,
    }
}

impl<F, ResBody, E> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<DrainBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let end = this.end.take().map(Stop::new);
            return Poll::Ready(result.map(|res| res.map(|body| DrainBody::new(body, end))));
        }
        ready!(this.deadline.poll(cx));
        Poll::Ready(Ok(unavailable().into_http()))
    }
}

pin_project! {
    /// Response body of [`Drain`]: ends with `UNAVAILABLE` trailers when its
    /// phase ends first. The default is an empty body.
    pub struct DrainBody<B> {
        #[pin]
        body: Interruptible<B>,
        end: Option<Stop>,
    }
}

impl<B> DrainBody<B> {
    fn new(inner: B, end: Option<Stop>) -> Self {
        DrainBody {
            body: Interruptible::new(inner),
            end,
        }
    }
}

impl<B> Default for DrainBody<B> {
    fn default() -> Self {
        DrainBody {
            body: Interruptible::default(),
            end: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for DrainBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.as_mut().poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.end.as_mut().map(|end| end.poll(cx)) {
            Some(Poll::Ready(())) => this.body.interrupt(&unavailable()),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn unavailable() -> tonic::Status {
    tonic::Status::unavailable("server is shutting down")
}
