//! [`Side`]: which side of a call the metrics (and spans) are of.

/// Which side of a call Keel observes: it decides the metric families
/// (`grpc_server_*` or `grpc_client_*`) and, for spans, the span kind and
/// which codes are errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The server answering the call.
    Server,
    /// A generated client making it.
    Client,
}
