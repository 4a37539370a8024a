//! Deadline propagation, as grpc-go and grpc-java do it: a call that a
//! handler makes while serving a call with a deadline (`grpc-timeout`) gets
//! no more than the time left.
//!
//! The server [pipeline](crate::pipeline) reads the deadline of each
//! request and keeps it in the OpenTelemetry context it attaches while the
//! handler runs; the generated clients' layer reads it from there. A handler can ask how
//! much time it has left with [`remaining`].
//!
//! ```
//! // Outside a call with a deadline there is none.
//! assert_eq!(keel_rpc::deadline::remaining(), None);
//! ```

use std::time::Duration;

use http::HeaderValue;
use opentelemetry::Context;
use quanta::Instant;

use crate::clock;
use crate::policy::MethodPolicy;
use crate::wire::decode_timeout;

/// When the call being served must be answered by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Instant);

/// The context a handler runs in, `cx` (its server span, if any), with the
/// deadline of its request added when the request has a well-formed
/// `grpc-timeout`.
pub(crate) fn with_deadline(
    cx: Option<Context>,
    method: &MethodPolicy,
    grpc_timeout: Option<&HeaderValue>,
) -> Option<Context> {
    match Deadline::of_request(method, grpc_timeout) {
        Some(deadline) => Some(cx.unwrap_or_default().with_value(deadline)),
        None => cx,
    }
}

impl Deadline {
    /// The deadline of a call of `method` arriving now with `grpc_timeout`
    /// (ignored when malformed), as [`MethodPolicy::deadline`] resolves it.
    fn of_request(method: &MethodPolicy, grpc_timeout: Option<&HeaderValue>) -> Option<Self> {
        let timeout = method.deadline(grpc_timeout.and_then(decode_timeout))?;
        clock::now().checked_add(timeout).map(Deadline)
    }

    /// The deadline of the call the current task serves, if it has one.
    pub(crate) fn current() -> Option<Self> {
        opentelemetry::Context::map_current(|cx| cx.get::<Deadline>().copied())
    }

    /// The time left; zero once it has passed.
    pub(crate) fn remaining(self) -> Duration {
        self.0.saturating_duration_since(clock::now())
    }
}

/// The time left before the deadline of the call the current task serves, or
/// `None` when the caller set no deadline (or this is not a handler of a Keel
/// service). Zero once it has passed.
pub fn remaining() -> Option<Duration> {
    Deadline::current().map(Deadline::remaining)
}
