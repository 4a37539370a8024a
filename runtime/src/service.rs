//! [`KeelService`]: what a generated server is wrapped in. Tracing, metrics,
//! auth and panic recovery, in that order from the outside, fused into one
//! tower [`Service`].
//!
//! Each concern is also a layer of its own ([`TraceLayer`], [`MetricsLayer`],
//! [`AuthLayer`], [`RecoverLayer`]) for stacks composed by hand; stacked in
//! that order they behave as [`KeelService`] does. Fused, a call looks its
//! method up once and makes one future and one response-body wrapper rather
//! than four of each: that nesting cost about as much as auth or metrics
//! themselves (BENCHMARKS.md).
//!
//! Per call, for a method of the policy:
//! 1. the server span is opened (when telemetry is on), continuing the
//!    caller's trace, and attached while the handler runs, with the call's
//!    deadline (`grpc-timeout`) for the calls the handler makes
//!    ([`deadline`](crate::deadline));
//! 2. the call is counted as started and its clock started;
//! 3. the method's access rule is applied: a rejected call is answered
//!    `UNAUTHENTICATED` or `PERMISSION_DENIED` without reaching the handler;
//! 4. request messages are counted, and one longer than the limit fails with
//!    `RESOURCE_EXHAUSTED` before it is decoded;
//! 5. a panic of the handler, or of its response stream, is logged and
//!    answered `INTERNAL`;
//! 6. when the response ends (its trailers, or its headers for a
//!    trailers-only response, or the client going away) the code and latency
//!    are recorded and the span ended.
//!
//! Paths outside the policy go to the inner server untouched (it answers
//! `UNIMPLEMENTED`), with the message size limit and panic recovery only.
//!
//! [`TraceLayer`]: crate::telemetry::TraceLayer
//! [`MetricsLayer`]: crate::MetricsLayer
//! [`AuthLayer`]: crate::AuthLayer
//! [`RecoverLayer`]: crate::recover::RecoverLayer

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context as OtelContext, ContextGuard};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

use crate::auth::{self, Verifier};
use crate::body::Interruptible;
use crate::call_headers::CallHeaders;
use crate::clock;
use crate::deadline::Deadline;
use crate::metrics::ServiceMetrics;
use crate::metrics::body::{Call, CountingBody, Observer as _, Progress, Tallies, progress};
use crate::metrics::codes::status_code;
use crate::policy::{MethodKind, ServicePolicy};
use crate::recover::{internal, log_panic, poll_guarded};
use crate::telemetry::layer::{call_context, end_server_span};

/// The layer that makes a [`KeelService`]; built by
/// [`Keel::layer`](crate::Keel::layer).
#[derive(Clone, Debug)]
pub struct KeelLayer {
    shared: Arc<Shared>,
}

/// What every call of one service needs, behind one `Arc` (the router clones
/// the service for each request).
#[derive(Debug)]
struct Shared {
    policy: &'static ServicePolicy,
    verifier: Arc<Verifier>,
    metrics: Arc<ServiceMetrics>,
    /// Where each method's request messages are counted, and their limit.
    received: Tallies,
}

impl KeelLayer {
    pub(crate) fn new(
        metrics: Arc<ServiceMetrics>,
        verifier: Arc<Verifier>,
        max_message_bytes: usize,
    ) -> Self {
        let shared = Shared {
            policy: metrics.policy(),
            verifier,
            received: Tallies::received(&metrics, max_message_bytes),
            metrics,
        };
        KeelLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for KeelLayer {
    type Service = KeelService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeelService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A generated server wrapped in Keel's tracing, metrics, auth and panic
/// recovery; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct KeelService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for KeelService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for KeelService<S>
where
    S: Service<Request<CountingBody<B>>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<KeelBody<ResBody>>;
    type Error = S::Error;
    type Future = KeelFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let Some(index) = shared.policy.route_index(req.uri().path()) else {
            return self.call_outside_policy(req);
        };
        let method = &shared.policy.methods[index];
        let headers = CallHeaders::read(req.headers());
        let call = KeelCall {
            cx: call_context(shared.policy, method, &headers),
            metrics: Call::start(&shared.metrics, index, clock::now()),
            path: method.path,
            streams: matches!(
                method.kind,
                MethodKind::ServerStreaming | MethodKind::BidiStreaming
            ),
            unary_sent: false,
        };
        match auth::admit(
            &shared.verifier,
            method.access,
            &headers,
            req.extensions(),
            call.metrics.start,
        ) {
            Ok(admitted) => admitted.insert_into(req.extensions_mut()),
            Err(error) => {
                return KeelFuture::answer(auth::reject(method.path, &error), Some(call));
            }
        }
        let received = shared.received.get(Some(index));
        let req = req.map(|body| CountingBody::new(body, received));
        KeelFuture::call(&mut self.inner, req, Some(call))
    }
}

impl<S> KeelService<S> {
    /// A path outside the policy: passed to the inner server (which answers
    /// `UNIMPLEMENTED`) with the message size limit and panic recovery only.
    /// Out of line, as it is rare: the path of a method stays short.
    #[cold]
    #[inline(never)]
    fn call_outside_policy<B>(&mut self, req: Request<B>) -> KeelFuture<S::Future>
    where
        S: Service<Request<CountingBody<B>>>,
    {
        let received = self.shared.received.get(None);
        let req = req.map(|body| CountingBody::new(body, received));
        KeelFuture::call(&mut self.inner, req, None)
    }
}

/// A call of a method of the policy, from its start until its response ends:
/// its metrics, its span and its path.
pub struct KeelCall {
    metrics: Call,
    /// The context the handler runs in: the server span, when telemetry is
    /// on, and the call's deadline, when it has one.
    cx: Option<OtelContext>,
    path: &'static str,
    /// Whether the response is a stream the handler produces, which then
    /// runs inside the span too.
    streams: bool,
    /// Whether a unary response's data went by: its one message, counted
    /// when the call ends rather than parsed as it goes.
    unary_sent: bool,
}

impl KeelCall {
    /// Marks the call's handler as having answered: an unsampled span (or
    /// none) records nothing and needs no ending, so its context is let go,
    /// unless the handler's stream still runs in it.
    fn handled(&mut self) {
        if !self.streams && self.cx.as_ref().is_some_and(|cx| !cx.span().is_recording()) {
            self.cx = None;
        }
    }

    /// Attaches the call's context, when it has one, until the guard drops.
    fn enter(&self) -> Option<ContextGuard> {
        self.cx.as_ref().map(attach)
    }

    /// Ends a call that stopped before its answer did: `DEADLINE_EXCEEDED`
    /// when its deadline has passed (tonic's timer dropped it, and answers
    /// the client `CANCELLED`; go-grpc-prometheus counts such calls as
    /// `DeadlineExceeded`), else `CANCELLED` (the client went away). Out of
    /// line: it is the rare end of a call.
    #[cold]
    #[inline(never)]
    fn abandon(&self) {
        let expired = (self.cx.as_ref())
            .and_then(|cx| cx.get::<Deadline>())
            .is_some_and(|deadline| deadline.remaining().is_zero());
        let code = if expired {
            Code::DeadlineExceeded
        } else {
            Code::Cancelled
        };
        self.finish(code, None);
    }

    /// Records how the call ended; `carrier` is the headers or trailers that
    /// said so, when it was them. Out of line: each call ends once, in one
    /// of several places, and the paths that poll stay short. By reference:
    /// a body that ends clears its call in place rather than moving it out.
    #[inline(never)]
    fn finish(&self, code: Code, carrier: Option<&HeaderMap>) {
        self.metrics.end(code, self.unary_sent.into());
        if let Some(cx) = &self.cx {
            end_server_span(cx, code, carrier);
        }
    }
}

pin_project! {
    /// The response body of a [`KeelService`], observed until it ends: with
    /// its trailers' `grpc-status` (`UNKNOWN` without one), `INTERNAL` on a
    /// body error, or `CANCELLED` when it is dropped before (the client went
    /// away).
    ///
    /// A streamed response (server or bidi streaming) is produced by handler
    /// code as it is polled: each poll runs inside the call's context, its
    /// messages are counted, and a panic ends it with `INTERNAL` trailers. A
    /// unary response is tonic encoding the handler's one message, so only
    /// its end is watched. A response with no call (answered trailers-only,
    /// or a path outside the policy) is passed through.
    pub struct KeelBody<B> {
        #[pin]
        inner: Interruptible<B>,
        // `None` once the call has ended, or when there is none.
        call: Option<KeelCall>,
    }

    impl<B> PinnedDrop for KeelBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.abandon();
            }
        }
    }
}

impl<B> Default for KeelBody<B> {
    /// An empty body, observing nothing.
    fn default() -> Self {
        KeelBody {
            inner: Interruptible::default(),
            call: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for KeelBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let Some(call) = this.call.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let polled = match call.streams {
            false => this.inner.as_mut().poll_frame(cx),
            true => {
                let _entered = call.enter();
                poll_guarded(this.inner.as_mut(), Some(call.path), cx)
            }
        };
        match progress(&polled) {
            Progress::Data(_) if !call.streams => call.unary_sent = true,
            Progress::Data(data) => call.metrics.on_data(data),
            Progress::End(code, carrier) => {
                call.finish(code.unwrap_or(Code::Unknown), carrier);
                *this.call = None;
            }
            Progress::Nothing => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Response future of [`KeelService`].
    pub struct KeelFuture<F> {
        // `None` when the call is answered without the server: rejected,
        // or the server panicked.
        #[pin]
        inner: Option<F>,
        // `None` for paths outside the policy, and once the response is out.
        call: Option<KeelCall>,
        // The answer when `inner` is `None` (boxed: it is rare, and large).
        status: Option<Box<tonic::Status>>,
    }

    impl<F> PinnedDrop for KeelFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the server answered: the client went away, or
            // the deadline passed.
            if let Some(call) = this.project().call.take() {
                call.abandon();
            }
        }
    }
}

impl<F> KeelFuture<F> {
    /// Calls `inner`, catching a panic.
    fn call<S, R>(inner: &mut S, req: R, call: Option<KeelCall>) -> Self
    where
        S: Service<R, Future = F>,
    {
        match catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(inner) => KeelFuture {
                inner: Some(inner),
                call,
                status: None,
            },
            Err(panic) => {
                log_panic(call.as_ref().map(|c| c.path), panic.as_ref());
                KeelFuture::answer(internal(), call)
            }
        }
    }

    /// Answers with `status`, without the server: a rejection or a panic.
    #[cold]
    fn answer(status: tonic::Status, call: Option<KeelCall>) -> Self {
        KeelFuture {
            inner: None,
            call,
            status: Some(Box::new(status)),
        }
    }
}

impl<F, ResBody, E> Future for KeelFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<KeelBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let status = this.status.take().map_or_else(internal, |status| *status);
            return Poll::Ready(Ok(trailers_only(status, this.call.take())));
        };
        let attached = this.call.as_ref().and_then(KeelCall::enter);
        let result = match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result,
            Err(panic) => {
                log_panic(this.call.as_ref().map(|c| c.path), panic.as_ref());
                drop(attached);
                this.inner.set(None);
                return Poll::Ready(Ok(trailers_only(internal(), this.call.take())));
            }
        };
        drop(attached);
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => Ok(observe(response, call)),
            Err(error) => {
                if let Some(call) = call {
                    call.finish(Code::Internal, None);
                }
                Err(error)
            }
        })
    }
}

/// The trailers-only response of a call answered with `status` by Keel
/// (a rejection or a panic: rare, so out of line).
#[cold]
#[inline(never)]
fn trailers_only<B>(status: tonic::Status, call: Option<KeelCall>) -> Response<KeelBody<B>> {
    let code = status.code();
    let response = status.into_http();
    if let Some(call) = call {
        call.finish(code, Some(response.headers()));
    }
    response
}

/// `cx` attached until the guard drops (out of line: most calls have no
/// context to attach).
#[inline(never)]
fn attach(cx: &OtelContext) -> ContextGuard {
    cx.clone().attach()
}

/// Wraps the server's response to a call: a trailers-only response (no
/// body, its `grpc-status` in the headers) ends the call now; otherwise the
/// body ends it.
fn observe<B: Body>(response: Response<B>, mut call: Option<KeelCall>) -> Response<KeelBody<B>> {
    if let Some(call) = &mut call {
        call.handled();
    }
    // Only a response without a body can be trailers-only: the common
    // response, with a body, is not searched for a `grpc-status` header.
    let trailers_only = match response.body().is_end_stream() {
        true => status_code(response.headers()),
        false => None,
    };
    let call = match trailers_only {
        Some(code) => {
            if let Some(call) = call {
                call.finish(code, Some(response.headers()));
            }
            None
        }
        None => call,
    };
    response.map(|body| KeelBody {
        inner: Interruptible::new(body),
        call,
    })
}
