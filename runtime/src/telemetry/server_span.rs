//! The server span of each call: made with the OpenTelemetry SDK directly
//! rather than through `tracing`, so that it is sampled before anything else
//! is built. An unsampled call costs an id, a sampling decision and a
//! context; a sampled one is named and attributed without allocating. The
//! span's context is what the pipeline attaches while the handler runs, so
//! `tracing` spans opened by the handler (and the generated clients' spans)
//! are its children, and log lines carry its ids.

use std::sync::atomic::Ordering;

use http::HeaderMap;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, Tracer as _,
};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::trace::IdGenerator as _;
use tonic::Code;

use super::client_span::span_name;
use super::deadline::with_deadline;
use super::propagation;
use super::status::error_description;
use super::tracer::{HANDLE_MADE, NEXT_TRACE_ID, TracerHandle};
use crate::metrics::Side;
use crate::policy::{MethodPolicy, ServicePolicy};
use crate::wire::CallHeaders;

/// Opens the server span of one call of `method`, a child of the request's
/// remote parent when it names one, and returns its context.
///
/// The sampler decides first, on the trace id the span will have. An
/// unsampled span (most of them) is only ids, which travel on to logs and
/// outgoing calls: nothing is built or boxed. A sampled one is built by the
/// SDK, which asks the same sampler again, on the same trace id (given to it
/// through [`SampledIds`](super::tracer::SampledIds) for a root span), so it agrees.
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
    let sampled = handle.sampler.samples(remote, trace_id);
    if !sampled || !handle.exporting {
        // Ids only: for log lines, and for the calls the handler makes,
        // which carry the sampling decision on.
        let flags = match sampled {
            true => TraceFlags::SAMPLED,
            false => TraceFlags::default(),
        };
        let ids = SpanContext::new(
            trace_id,
            handle.ids.new_span_id(),
            flags,
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
    with_deadline(span, method, call.grpc_timeout)
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
