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
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};

use crate::interruptible::Interruptible;

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
    phases: Arc<Phases>,
}

impl DrainLayer {
    pub(crate) fn new(phases: Phases) -> Self {
        DrainLayer {
            phases: Arc::new(phases),
        }
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
    // Shared, not cloned per call: a `CancellationToken` clone takes its
    // tree's lock, twice per call (clone and drop) for each token.
    phases: Arc<Phases>,
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
        // A health `Watch` stream ends when draining starts; everything else
        // at the drain deadline.
        let end = match req.uri().path() == WATCH_PATH {
            true => Phase::Draining,
            false => Phase::Deadline,
        };
        DrainFuture {
            inner: self.inner.call(req),
            deadline: Some(Stop::new(self.phases.clone(), Phase::Deadline)),
            end,
        }
    }
}

/// Which of the [`Phases`] ends a call.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Draining,
    Deadline,
}

/// Waits for a phase, registering for its wake-up only once polled while
/// pending, so calls that complete at once cost one atomic load.
struct Stop {
    phases: Arc<Phases>,
    phase: Phase,
    waiting: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Stop {
    fn new(phases: Arc<Phases>, phase: Phase) -> Self {
        Stop {
            phases,
            phase,
            waiting: None,
        }
    }

    fn token(&self) -> &CancellationToken {
        match self.phase {
            Phase::Draining => &self.phases.draining,
            Phase::Deadline => &self.phases.deadline,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.token().is_cancelled() {
            return Poll::Ready(());
        }
        if self.waiting.is_none() {
            self.waiting = Some(Box::pin(self.token().clone().cancelled_owned()));
        }
        match &mut self.waiting {
            Some(waiting) => waiting.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

pin_project! {
    /// Response future of [`Drain`].
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        // Until the response: the drain deadline. After it, its phases go on
        // to the body, to wait for `end`.
        deadline: Option<Stop>,
        end: Phase,
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
            let end = this
                .deadline
                .take()
                .map(|stop| Stop::new(stop.phases, *this.end));
            return Poll::Ready(result.map(|res| res.map(|body| DrainBody::new(body, end))));
        }
        match this.deadline.as_mut() {
            Some(deadline) => ready!(deadline.poll(cx)),
            None => return Poll::Pending,
        }
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
