//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata.
//!
//! gRPC metadata travels as HTTP/2 headers, so the extractor and injector work
//! on an [`http::HeaderMap`]; Keel's server pipeline extracts with them and its
//! client layer injects with them.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::wire::CallHeaders;
pub use crate::wire::{TRACEPARENT, TRACESTATE};

/// Reads propagation fields from request headers (an [`Extractor`]).
#[derive(Clone, Copy, Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation fields into request headers (an [`Injector`]). Values
/// that are not valid header values are skipped.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent a request names in `traceparent`/`tracestate`, if it
/// carries a valid one.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    extract_from(&CallHeaders::read(headers))
}

/// [`extract`] from headers already read: only a request with a
/// `traceparent` is handed to the propagator.
pub(crate) fn extract_from(call: &CallHeaders<'_>) -> Option<Context> {
    if !call.traceparent {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(call.all));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `cx`'s span as the parent of an outgoing request, replacing any
/// `traceparent`/`tracestate` already there. Does nothing when `cx` has no
/// valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_a_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        headers.insert(TRACESTATE, HeaderValue::from_static("keel=1"));
        let cx = extract(&headers).expect("valid parent");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("keel"), Some("1"));

        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], PARENT);
        assert_eq!(out[TRACESTATE], "keel=1");
    }

    #[test]
    fn ignores_absent_or_invalid_parents() {
        assert!(extract(&HeaderMap::new()).is_none());
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-00-01"));
        assert!(extract(&headers).is_none());

        let mut out = HeaderMap::new();
        inject(&Context::new(), &mut out);
        assert!(out.is_empty());
        let unsampled = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::default(),
            true,
            TraceState::default(),
        ));
        inject(&unsampled, &mut out);
        assert_eq!(
            out[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }
}
