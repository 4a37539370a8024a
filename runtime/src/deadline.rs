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

use http::{HeaderName, HeaderValue};
use opentelemetry::Context;
use quanta::Instant;

use crate::clock;
use crate::policy::MethodPolicy;

/// The gRPC deadline header.
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

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

/// `grpc-timeout` for `timeout`: the gRPC spec allows at most 8 digits, so
/// the finest unit that fits is used.
pub(crate) fn encode_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let units = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
        (u128::from(timeout.as_secs() / 3600), 'H'),
    ];
    let (value, unit) = units
        .into_iter()
        .find(|(value, _)| *value <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::try_from(format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("99999999H"))
}

/// The timeout a `grpc-timeout` value says, if it is well-formed.
pub(crate) fn decode_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_within_eight_digits() {
        for (timeout, text) in [
            (Duration::from_millis(1), "1000000n"),
            (Duration::from_secs(10), "10000000u"),
            (Duration::from_secs(3600), "3600000m"),
            (Duration::from_secs(200_000), "200000S"),
        ] {
            let header = encode_timeout(timeout);
            assert_eq!(header, text);
            assert_eq!(decode_timeout(&header), Some(timeout));
        }
    }

    #[test]
    fn malformed_timeouts_are_ignored() {
        for text in ["", "m", "10", "123456789m", "10x", "-1S", "1.5S"] {
            let value = HeaderValue::from_str(text).unwrap();
            assert_eq!(decode_timeout(&value), None, "{text:?}");
        }
    }
}
