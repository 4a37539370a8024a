//! The request headers Keel reads on every call, found in one pass.
//!
//! A call's `authorization` (auth), `grpc-timeout` (its deadline),
//! `traceparent` (its remote parent) and `keel-criticality` are read by
//! four concerns. Looking each up in the [`HeaderMap`] hashes its name and,
//! for those that are not standard HTTP headers, compares it byte for byte,
//! found or not. One walk over the few headers a gRPC request carries finds
//! them all for less than the lookups cost.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use super::metadata::{GRPC_TIMEOUT, KEEL_CRITICALITY, TRACEPARENT_HEADER};

/// What one call's request headers say to Keel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallHeaders<'a> {
    /// All of them.
    pub(crate) all: &'a HeaderMap,
    /// The first `authorization`.
    pub(crate) authorization: Option<&'a HeaderValue>,
    /// Whether `authorization` came more than once (auth then refuses it:
    /// `CallHeaders::authorization`, in `auth/admit.rs`).
    pub(crate) repeated_authorization: bool,
    /// The first `grpc-timeout`.
    pub(crate) grpc_timeout: Option<&'a HeaderValue>,
    /// Whether there is a `traceparent`.
    pub(crate) traceparent: bool,
    /// The first `keel-criticality`.
    pub(crate) criticality: Option<&'a HeaderValue>,
}

impl<'a> CallHeaders<'a> {
    /// Reads `headers`.
    pub(crate) fn read(headers: &'a HeaderMap) -> Self {
        let mut found = CallHeaders {
            all: headers,
            authorization: None,
            repeated_authorization: false,
            grpc_timeout: None,
            traceparent: false,
            criticality: None,
        };
        for (name, value) in headers {
            if *name == AUTHORIZATION {
                found.repeated_authorization |= found.authorization.is_some();
                found.authorization = found.authorization.or(Some(value));
            } else if *name == GRPC_TIMEOUT {
                found.grpc_timeout = found.grpc_timeout.or(Some(value));
            } else if *name == TRACEPARENT_HEADER {
                found.traceparent = true;
            } else if *name == KEEL_CRITICALITY {
                found.criticality = found.criticality.or(Some(value));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn finds_what_each_concern_reads_among_other_metadata() {
        let map = headers(&[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-request-id", "42"),
            ("grpc-timeout", "5S"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("authorization", "Bearer abc"),
            ("grpc-timeout", "1S"),
            ("keel-criticality", "SHEDDABLE"),
        ]);
        let found = CallHeaders::read(&map);
        assert_eq!(
            found.authorization,
            Some(&HeaderValue::from_static("Bearer abc"))
        );
        assert!(!found.repeated_authorization);
        // Like `HeaderMap::get`: the first of repeated values.
        assert_eq!(found.grpc_timeout, Some(&HeaderValue::from_static("5S")));
        assert!(found.traceparent);
        assert_eq!(
            found.criticality,
            Some(&HeaderValue::from_static("SHEDDABLE"))
        );
    }
}
