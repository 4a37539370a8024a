//! The tower layer that opens one OpenTelemetry server span per RPC.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;
use crate::metrics::body::{ObservedBody, Observer};
use crate::metrics::code_name;
use crate::metrics::codes::parse_status;
use crate::policy::{MethodPolicy, ServicePolicy};

/// Target of the per-RPC spans of [`TraceLayer`] and the client layer. The
/// spans are at `DEBUG` level, so a plain `info` log filter does not print
/// them; [`init`](super::init) exports them whatever the log filter says.
pub const RPC_TARGET: &str = "keel::rpc";

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

/// Opens the span of one call of `method` on `side`, named
/// `package.Service/Method` without allocating the name. Returns `None` when
/// no subscriber wants it (telemetry not initialized).
pub(crate) fn rpc_span(
    side: Side,
    policy: &'static ServicePolicy,
    method: &'static MethodPolicy,
) -> Option<Span> {
    // The path is `/package.Service/Method`; the span name drops the slash.
    let name = method.path.strip_prefix('/').unwrap_or(method.path);
    let span = match side {
        Side::Server => tracing::debug_span!(
            target: RPC_TARGET,
            parent: None,
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = policy.name,
            rpc.method = method.name,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
        Side::Client => tracing::debug_span!(
            target: RPC_TARGET,
            "grpc.client",
            otel.name = name,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = policy.name,
            rpc.method = method.name,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
    };
    (!span.is_disabled()).then_some(span)
}

/// Records how the call of `span` ended and ends it: `rpc.grpc.status_code`,
/// and an error status (with the code and `grpc-message` from `carrier`, the
/// headers or trailers that carried the status) when `side` counts `code` as
/// a failure.
pub(crate) fn end_span(span: Span, side: Side, code: Code, carrier: Option<&HeaderMap>) {
    // Entering and leaving stamps the span's end time now, not at the last
    // poll of the handler.
    let _entered = span.enter();
    span.record("rpc.grpc.status_code", code as i64);
    if side.is_error(code) {
        span.record("otel.status_code", "error");
        let message = carrier
            .and_then(tonic::Status::from_header_map)
            .map(|s| s.message().to_owned())
            .filter(|m| !m.is_empty());
        match message {
            Some(message) => span.record(
                "otel.status_description",
                format!("{}: {message}", code_name(code)).as_str(),
            ),
            None => span.record("otel.status_description", code_name(code)),
        };
    }
}

/// Ends a span when its response body ends: the [`Observer`] of a traced call.
pub struct SpanEnd {
    pub(crate) span: Span,
    pub(crate) side: Side,
}

impl Observer for SpanEnd {
    fn header_code(&self) -> Option<Code> {
        None
    }

    fn finish(self, code: Code, carrier: Option<&HeaderMap>) {
        end_span(self.span, self.side, code, carrier);
    }
}

/// Opens one OpenTelemetry server span per RPC of one service; see the
/// [module docs](super).
///
/// The span is named `package.Service/Method` (`user.v1.UserService/GetUser`)
/// and carries `rpc.system = "grpc"`, `rpc.service`, `rpc.method` and, when the
/// call ends, `rpc.grpc.status_code`, read from the response headers or
/// trailers. Its parent is the W3C `traceparent`/`tracestate` of the request,
/// when it has a valid one. The handler runs inside the span, so its logs
/// carry the trace id. Paths outside the policy are passed through untraced.
///
/// Keel puts it outermost, so the span covers auth rejections, metrics and
/// panics turned into `INTERNAL`.
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
        let span = self
            .policy
            .method(req.uri().path())
            .and_then(|(_, method)| rpc_span(Side::Server, self.policy, method));
        let Some(span) = span else {
            return TraceFuture {
                inner: self.inner.call(req),
                span: None,
            };
        };
        if let Some(parent) = propagation::extract(req.headers()) {
            // Only fails when the span has started, which it has not.
            let _ = span.set_parent(parent);
        }
        let inner = span.in_scope(|| self.inner.call(req));
        TraceFuture {
            inner,
            span: Some(span),
        }
    }
}

pin_project! {
    /// Response future of [`TraceService`]: polls the inner service inside
    /// the call's span.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
    }

    impl<F> PinnedDrop for TraceFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the handler answered: the client went away.
            if let Some(span) = this.project().span.take() {
                end_span(span, Side::Server, Code::Cancelled, None);
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
        let result = match this.span.as_ref() {
            Some(span) => {
                let _entered = span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        let span = this.span.take();
        Poll::Ready(match result {
            Ok(response) => {
                let observer = span.and_then(|span| {
                    match response.headers().get("grpc-status").map(parse_status) {
                        // Trailers-only response: the call ended here.
                        Some(code) => {
                            end_span(span, Side::Server, code, Some(response.headers()));
                            None
                        }
                        None => Some(SpanEnd {
                            span,
                            side: Side::Server,
                        }),
                    }
                });
                Ok(response.map(|body| ObservedBody::new(body, observer)))
            }
            Err(error) => {
                if let Some(span) = span {
                    end_span(span, Side::Server, Code::Internal, None);
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
