//! The names of the gRPC metadata Keel reads or writes itself, beside what
//! tonic reads and writes (`grpc-status` is with its parsing, in
//! `status.rs`). Those looked up on every call are pre-parsed
//! [`HeaderName`]s: a lookup by `&str` parses the name each time.

use http::HeaderName;

/// The gRPC deadline header.
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A call's criticality, as its caller says it (`Criticality`).
pub(crate) static KEEL_CRITICALITY: HeaderName = HeaderName::from_static("keel-criticality");

/// Name of the W3C header that carries the trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";

/// Name of the W3C header that carries vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// [`TRACEPARENT`] as a header name, for lookups that need not parse it.
pub(crate) static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);

/// The server's say on a retry (gRFC A6): a pause in milliseconds, or,
/// when it is not one, no retry.
pub(crate) const PUSHBACK: &str = "grpc-retry-pushback-ms";
