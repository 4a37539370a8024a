//! The tower layer that opens one OpenTelemetry server span per RPC.
//!
//! Server spans are made with the OpenTelemetry SDK directly rather than
//! through `tracing`: the span is sampled before anything else is built, so
//! an unsampled call costs an id, a sampling decision and a context, and a
//! sampled one is named and attributed without allocating. The span's context
//! is attached while the inner service runs, so `tracing` spans opened by the
//! handler (and the generated clients' spans) are its children, and log lines
//! carry its ids.

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Request, Response};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    Tracer as _,
};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Span;

use super::propagation;
use super::sampler::RatioSampler;
use crate::call_headers::CallHeaders;
use crate::deadline::with_deadline;
use crate::metrics::body::{ObservedBody, Observer};
use crate::metrics::code_name;
use crate::metrics::codes::status_code;
use crate::policy::{MethodPolicy, ServicePolicy};

/// Target of the client layer's per-call `tracing` spans. They are at
/// `DEBUG` level, so a plain `info` log filter does not print them;
/// [`init`](super::init) exports them whatever the log filter says.
pub const RPC_TARGET: &str = "keel::rpc";

/// The tracer of the subscriber Keel's telemetry installed, and the sampler
/// it was configured with, found through the current `tracing` dispatcher
/// (so each dispatcher, and each service name, has its own): a layer that
/// does nothing but hold them.
#[derive(Debug)]
pub(crate) struct TracerHandle {
    tracer: SdkTracer,
    /// The provider's sampler, to decide before building anything.
    sampler: RatioSampler,
    ids: RandomIdGenerator,
}

/// Whether a [`TracerHandle`] was ever made in this process. Until one is, no
/// dispatcher holds one, and [`call_context`] does not look for it: the
/// lookup (the current dispatcher, and a downcast through each of its
/// layers) is most of what a call costs Keel's telemetry when it is off.
static HANDLE_MADE: AtomicBool = AtomicBool::new(false);

impl TracerHandle {
    pub(crate) fn new(tracer: SdkTracer, sampler: RatioSampler) -> Self {
        HANDLE_MADE.store(true, Ordering::Release);
        TracerHandle {
            tracer,
            sampler,
            ids: RandomIdGenerator::default(),
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TracerHandle {}

thread_local! {
    /// The trace id [`KeelIdGenerator`] gives the next root span started on
    /// this thread: the one [`server_span`] already sampled.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The tracer provider's id generator: random ids, except that a root server
/// span gets the trace id its sampling was decided on.
#[derive(Debug, Default)]
pub(crate) struct KeelIdGenerator(RandomIdGenerator);

impl IdGenerator for KeelIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Which side of a call a span describes: it decides the span kind and which
/// codes are errors (OpenTelemetry's gRPC semantic conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

impl Side {
    /// Whether a call ending with `code` marks the span as failed. A client
    /// span fails on any code but `OK`; a server span only on the codes that
    /// say the server failed, not the caller.
    pub(crate) fn is_error(self, code: Code) -> bool {
        match self {
            Side::Client => code != Code::Ok,
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        }
    }
}

/// The span name of a method: its path without the leading slash
/// (`package.Service/Method`), a slice of a static string.
fn span_name(method: &'static MethodPolicy) -> &'static str {
    method.path.strip_prefix('/').unwrap_or(method.path)
}

/// Opens the client span of one call of `method`, a child of the current
/// span. Returns `None` when no subscriber wants it (telemetry not
/// initialized).
pub(crate) fn client_span(
    policy: &'static ServicePolicy,
    method: &'static MethodPolicy,
) -> Option<Span> {
    let span = tracing::debug_span!(
        target: RPC_TARGET,
        "grpc.client",
        otel.name = span_name(method),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = policy.name,
        rpc.method = method.name,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    (!span.is_disabled()).then_some(span)
}

/// The error description of a call that ended with `code`: the code's name,
/// and `grpc-message` from `carrier` (the headers or trailers that carried
/// the status) when there is one.
fn error_description(code: Code, carrier: Option<&HeaderMap>) -> Cow<'static, str> {
    let message = carrier
        .and_then(tonic::Status::from_header_map)
        .map(|s| s.message().to_owned())
        .filter(|m| !m.is_empty());
    match message {
        Some(message) => Cow::Owned(format!("{}: {message}", code_name(code))),
        None => Cow::Borrowed(code_name(code)),
    }
}

/// Records how the call of a client `span` ended and ends it:
/// `rpc.grpc.status_code`, and an error status when the code is not `OK`.
pub(crate) fn end_client_span(span: Span, code: Code, carrier: Option<&HeaderMap>) {
    // Entering and leaving stamps the span's end time now, not at the last
    // poll of the caller.
    let _entered = span.enter();
    span.record("rpc.grpc.status_code", code as i64);
    if Side::Client.is_error(code) {
        span.record("otel.status_code", "error");
        span.record(
            "otel.status_description",
            error_description(code, carrier).as_ref(),
        );
    }
}

/// Opens the server span of one call of `method`, a child of the request's
/// remote parent when it names one, and returns its context.
///
/// The sampler decides first, on the trace id the span will have. An
/// unsampled span (most of them) is only ids, which travel on to logs and
/// outgoing calls: nothing is built or boxed. A sampled one is built by the
/// SDK, which asks the same sampler again, on the same trace id (given to it
/// through [`KeelIdGenerator`] for a root span), so it agrees.
fn server_span(
    handle: &TracerHandle,
    policy: &'static ServicePolicy,
    method: &'static MethodPolicy,
    call: &CallHeaders<'_>,
) -> OtelContext {
    let parent = propagation::extract_from(call).unwrap_or_default();
    let parent_span = parent.span();
    let remote = parent_span.span_context();
    let root = !remote.is_valid();
    let trace_id = match root {
        true => handle.ids.new_trace_id(),
        false => remote.trace_id(),
    };
    if !handle.sampler.samples(remote, trace_id) {
        let ids = SpanContext::new(
            trace_id,
            handle.ids.new_span_id(),
            TraceFlags::default(),
            false,
            remote.trace_state().clone(),
        );
        return parent.with_remote_span_context(ids);
    }
    let name = span_name(method);
    let tracer = &handle.tracer;
    let builder = tracer.span_builder(name).with_kind(SpanKind::Server);
    if root {
        NEXT_TRACE_ID.with(|next| next.set(Some(trace_id)));
    }
    let mut span = tracer.build_with_context(builder, &parent);
    // Unused when the provider is shut down: never leave it for another span.
    NEXT_TRACE_ID.with(|next| next.set(None));
    if !span.is_recording() {
        return parent.with_remote_span_context(span.span_context().clone());
    }
    span.set_attributes([
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", policy.name),
        KeyValue::new("rpc.method", method.name),
    ]);
    parent.with_span(span)
}

/// The context a call of `method` runs in: its server span (see
/// [`server_span`]), when the current `tracing` dispatcher was built by
/// Keel's telemetry, and its deadline, when it has one.
pub(crate) fn call_context(
    policy: &'static ServicePolicy,
    method: &'static MethodPolicy,
    call: &CallHeaders<'_>,
) -> Option<OtelContext> {
    // A call served while telemetry is being initialized on another thread
    // may miss the new handle: it is then not traced, like the calls before.
    let span = match HANDLE_MADE.load(Ordering::Acquire) {
        false => None,
        true => tracing::dispatcher::get_default(|d| {
            let handle = d.downcast_ref::<TracerHandle>()?;
            Some(server_span(handle, policy, method, call))
        }),
    };
    with_deadline(span, call.grpc_timeout)
}

/// Records how the call of the server span in `cx` ended and ends it:
/// `rpc.grpc.status_code`, and an error status when the code says the
/// server failed.
pub(crate) fn end_server_span(cx: &OtelContext, code: Code, carrier: Option<&HeaderMap>) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        if Side::Server.is_error(code) {
            span.set_status(Status::error(error_description(code, carrier)));
        }
    }
    span.end();
}

/// Ends a server span when its response body ends: the [`Observer`] of a
/// traced call.
pub struct SpanEnd {
    cx: OtelContext,
}

impl Observer for SpanEnd {
    fn header_code(&self) -> Option<Code> {
        None
    }

    fn finish(self, code: Code, carrier: Option<&HeaderMap>) {
        end_server_span(&self.cx, code, carrier);
    }
}

/// Opens one OpenTelemetry server span per RPC of one service; see the
/// [module docs](super).
///
/// The span is named `package.Service/Method` (`user.v1.UserService/GetUser`)
/// and carries `rpc.system = "grpc"`, `rpc.service`, `rpc.method` and, when the
/// call ends, `rpc.grpc.status_code`, read from the response headers or
/// trailers. Its parent is the W3C `traceparent`/`tracestate` of the request,
/// when it has a valid one. The handler runs inside the span's context, so
/// its logs carry the trace id and its calls continue the trace; the context
/// also carries the request's deadline to the calls the handler makes
/// ([`deadline`](crate::deadline)). Paths outside the policy, and every call
/// when the current `tracing` dispatcher was not built by
/// [`builder`](super::builder) / [`init`](super::init), are passed through
/// untraced.
///
/// Stack it outermost, as [`KeelService`](crate::KeelService) does, so the
/// span covers auth rejections, metrics and panics turned into `INTERNAL`.
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    policy: &'static ServicePolicy,
}

impl TraceLayer {
    /// A layer tracing the calls of `policy`'s methods.
    pub fn new(policy: &'static ServicePolicy) -> Self {
        TraceLayer { policy }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            policy: self.policy,
        }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    policy: &'static ServicePolicy,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for TraceService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for TraceService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody, SpanEnd>>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cx = self
            .policy
            .method(req.uri().path())
            .and_then(|(_, method)| {
                call_context(self.policy, method, &CallHeaders::read(req.headers()))
            });
        // The inner layers' `call` only inspects headers and builds the
        // future; the handler runs when it is polled, context attached.
        TraceFuture {
            inner: self.inner.call(req),
            cx,
        }
    }
}

pin_project! {
    /// Response future of [`TraceService`]: polls the inner service with the
    /// call's span context attached.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        cx: Option<OtelContext>,
    }

    impl<F> PinnedDrop for TraceFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the handler answered: the client went away.
            if let Some(cx) = this.project().cx.take() {
                end_server_span(&cx, Code::Cancelled, None);
            }
        }
    }
}

impl<F, ResBody, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ObservedBody<ResBody, SpanEnd>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.cx.as_ref() {
            Some(otel) => {
                let _attached = otel.clone().attach();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        // An unsampled span records nothing: it needs no ending, and the
        // response body no observer.
        let otel = this.cx.take().filter(|otel| otel.span().is_recording());
        Poll::Ready(match result {
            Ok(response) => {
                let observer = otel.and_then(|otel| {
                    match status_code(response.headers()) {
                        // Trailers-only response: the call ended here.
                        Some(code) => {
                            end_server_span(&otel, code, Some(response.headers()));
                            None
                        }
                        None => Some(SpanEnd { cx: otel }),
                    }
                });
                Ok(response.map(|body| ObservedBody::new(body, observer)))
            }
            Err(error) => {
                if let Some(otel) = otel {
                    end_server_span(&otel, Code::Internal, None);
                }
                Err(error)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Side;
    use tonic::Code;

    #[test]
    fn error_codes_follow_the_semantic_conventions() {
        for code in (0..=16).map(Code::from_i32) {
            assert_eq!(Side::Client.is_error(code), code != Code::Ok, "{code:?}");
        }
        let server: Vec<Code> = (0..=16)
            .map(Code::from_i32)
            .filter(|c| Side::Server.is_error(*c))
            .collect();
        assert_eq!(
            server,
            [
                Code::Unknown,
                Code::DeadlineExceeded,
                Code::Unimplemented,
                Code::Internal,
                Code::Unavailable,
                Code::DataLoss
            ]
        );
    }
}
