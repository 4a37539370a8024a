//! [`ClientCall`]: what a generated client knows of one call in flight.

use std::sync::Arc;

use http::HeaderMap;
use quanta::Instant;
use tonic::Code;
use tracing::Span;

use super::dependency::{Dependency, Ticket};
use crate::auth::TokenSource;
use crate::clock;
use crate::metrics::CallRecord;
use crate::telemetry::end_client_span;

/// What is known of a call in flight: its metrics (with its start), its
/// deadline, its span, and the token source whose token it sent.
pub struct ClientCall {
    pub(super) metrics: Option<CallRecord>,
    /// When the call's deadline passes.
    pub(super) expires: Instant,
    pub(super) span: Option<Span>,
    /// `grpc-status` of the response headers (a trailers-only response).
    pub(super) header_code: Option<Code>,
    pub(super) sent_token: Option<Arc<dyn TokenSource>>,
    /// The service called, told how the call ended (its retry budget and
    /// breaker), with what its breaker let the call through as.
    pub(super) dependency: Option<(Arc<Dependency>, Option<Ticket>)>,
}

impl std::fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCall")
            .field("expires", &self.expires)
            .field("header_code", &self.header_code)
            .finish_non_exhaustive()
    }
}

impl ClientCall {
    /// A data frame of the response went by.
    pub(super) fn on_data(&mut self, data: &[u8]) {
        if let Some(call) = &mut self.metrics {
            call.received_data(data);
        }
    }

    /// The call ended with `code`; `carrier` is the headers or trailers that
    /// said so, when it was them.
    pub(super) fn finish(self, code: Code, carrier: Option<&HeaderMap>) {
        // A server that drops a call at its deadline answers `CANCELLED`
        // (tonic: "Timeout expired"), and a caller that gives up at it drops
        // the call: both are the deadline, as go-grpc-prometheus counts them.
        let code = match code {
            Code::Cancelled if clock::now() >= self.expires => Code::DeadlineExceeded,
            code => code,
        };
        // The server refused the source's token: the next call gets a new one.
        if code == Code::Unauthenticated
            && let Some(tokens) = &self.sent_token
        {
            tokens.invalidate();
        }
        if let Some((dependency, ticket)) = &self.dependency {
            dependency.ended(*ticket, code);
        }
        if let Some(call) = &self.metrics {
            // A client's sent messages are all counted as they go.
            call.end(code, 0);
        }
        if let Some(span) = self.span {
            end_client_span(span, code, carrier);
        }
    }
}
