//! The client span of each call a generated client makes: a `tracing` span,
//! so it nests under whatever span the caller is in.

use http::HeaderMap;
use tonic::Code;
use tracing::Span;

use super::status::error_description;
use crate::metrics::Side;
use crate::policy::{MethodPolicy, ServicePolicy};

/// Target of the client layer's per-call `tracing` spans. They are at
/// `DEBUG` level, so a plain `info` log filter does not print them;
/// [`init`](super::init) exports them whatever the log filter says.
pub const RPC_TARGET: &str = "keel_rpc::rpc";

/// The span name of a method: its path without the leading slash
/// (`package.Service/Method`), a slice of a static string.
pub(super) fn span_name(method: &'static MethodPolicy) -> &'static str {
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
