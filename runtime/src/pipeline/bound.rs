//! Bounding what a call's status sends back: its message, whatever the
//! handler wrote in it.
//!
//! A handler that quotes its input in a status (`user "…" not found`) turns
//! a request of a few MiB into response headers of three times that
//! (percent-encoded), which gRPC clients refuse (grpc core's: "received
//! metadata size exceeds hard limit") and proxies may not pass. So the status a
//! call ends with, in its trailers or in the headers of a trailers-only
//! response, is sent with a message of at most [`MAX_MESSAGE_BYTES`] of
//! UTF-8 (before percent-encoding): a longer one is cut on a character
//! boundary and ends in `…`. Every status of a call passes here (the
//! handler's, a streaming response's, and Keel's own), and gRPC-Web and
//! REST calls are gRPC calls by the time they reach the pipeline, so each
//! protocol's answer is bounded too; so is what the call's span records.
//!
//! The rest of the metadata is the handler's own (headers and trailers it
//! sets, `grpc-status-details-bin` from its details) and is sent as it
//! wrote it: a handler that puts a caller's input there bounds it itself.

use std::task::Poll;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use crate::wire::{GRPC_MESSAGE, cut_message};

/// The longest status message a call is answered with, in bytes of UTF-8
/// before percent-encoding.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// Bounds the status message in `headers`: the trailers, or the headers of
/// a trailers-only response, that end a call.
///
/// Free for a call whose message is short: no hashing, copying or
/// allocation, only a comparison of each value's length (which the map
/// keeps) with the bound, over the few headers that end a call (an OK
/// call's trailers are `grpc-status` alone). A percent-encoded value is
/// never shorter than the message it encodes, so no value over the bound
/// means no message over it; only then is the message looked at, out of
/// line.
#[inline]
pub(super) fn bound_status(headers: &mut HeaderMap) {
    if headers
        .values()
        .any(|value| value.len() > MAX_MESSAGE_BYTES)
    {
        cut(headers);
    }
}

/// [`bound_status`] for the trailers of `polled`, when it is a trailers
/// frame; they are returned, bounded.
#[inline]
pub(super) fn bound_trailers<E>(
    polled: &mut Poll<Option<Result<Frame<Bytes>, E>>>,
) -> Option<&HeaderMap> {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.trailers_mut().map(|trailers| {
            bound_status(trailers);
            &*trailers
        }),
        _ => None,
    }
}

/// Cuts the message in `headers` when it is over the bound (some value is
/// long: it may be another header's).
#[cold]
#[inline(never)]
fn cut(headers: &mut HeaderMap) {
    let Some(message) = headers.get(&GRPC_MESSAGE) else {
        return;
    };
    if let Some(cut) = cut_message(message, MAX_MESSAGE_BYTES) {
        // One value, as a client reads only the first.
        headers.insert(&GRPC_MESSAGE, cut);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::wire::CUT_MARK;

    fn ending(message: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        tonic::Status::not_found(message)
            .add_header(&mut headers)
            .unwrap();
        headers
    }

    #[test]
    fn only_a_message_over_the_bound_is_cut() {
        for message in [
            "",
            "user \"u-1\" not found",
            &"é".repeat(MAX_MESSAGE_BYTES / 2),
        ] {
            let mut headers = ending(message);
            // Another long header is not the message, and not cut.
            headers.insert("x-long", HeaderValue::from_str(&"v".repeat(4096)).unwrap());
            let before = headers.clone();
            bound_status(&mut headers);
            assert_eq!(headers, before, "{message:?}");
        }
        let mut headers = ending(&"é".repeat(MAX_MESSAGE_BYTES / 2 + 1));
        bound_status(&mut headers);
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with(CUT_MARK));
    }
}
