//! Bounding what a call's metadata sends back: its status message, and the
//! metadata a handler adds, whatever the handler wrote in them.
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
//! The metadata a handler adds (its response headers and trailers) is
//! bounded too: a client refuses response headers over the
//! `SETTINGS_MAX_HEADER_LIST_SIZE` it announced (grpc core's default is
//! 8 KiB soft, 16 KiB hard), which hyper does not expose to a server (h2
//! keeps the peer's value to itself, and does not check it when sending).
//! So each header block of a response is kept within [`MAX_METADATA_BYTES`]
//! as HTTP/2 counts a header list (name, value and 32 bytes an entry):
//! gRPC's own entries (`content-type`, `grpc-status`, `grpc-message`,
//! `grpc-status-details-bin`, the encodings) are always kept, then the
//! handler's entries in order while they fit; the rest are dropped, and
//! logged. A handler that writes a few headers pays a sum over them.
//! (`grpc-status-details-bin` is the handler's details, sent as written.)

use std::task::Poll;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use crate::wire::{GRPC_MESSAGE, cut_message};

/// The longest status message a call is answered with, in bytes of UTF-8
/// before percent-encoding.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// The most bytes of one header block of a response (its headers, or its
/// trailers), counted as HTTP/2 counts a header list.
pub(crate) const MAX_METADATA_BYTES: usize = 8 * 1024;

/// What HTTP/2 adds to each entry of a header list (RFC 9113 §6.5.2).
const ENTRY_OVERHEAD: usize = 32;

/// Bounds the status message in `headers` (the trailers, or the headers of
/// a trailers-only response, that end a call) and the metadata in them (any
/// header block of a response).
///
/// Free for a call whose metadata is small: no hashing, copying or
/// allocation, only a sum of each entry's lengths (which the map keeps),
/// over the few headers of a call (an OK call's trailers are `grpc-status`
/// alone). A percent-encoded value is never shorter than the message it
/// encodes, so no value over the bound means no message over it; only then
/// is the message looked at, out of line; so are entries over the bound.
#[inline]
pub(super) fn bound_metadata(headers: &mut HeaderMap) {
    let (mut total, mut longest) = (0, 0);
    for (name, value) in headers.iter() {
        total += name.as_str().len() + value.len() + ENTRY_OVERHEAD;
        longest = longest.max(value.len());
    }
    if longest > MAX_MESSAGE_BYTES {
        cut(headers);
    }
    if total > MAX_METADATA_BYTES {
        trim(headers);
    }
}

/// gRPC's own entries of a response's header blocks, always kept.
fn is_grpcs_own(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
            | "grpc-encoding"
            | "grpc-accept-encoding"
    )
}

/// Keeps the handler's entries of `headers` in order while they fit within
/// [`MAX_METADATA_BYTES`] beside gRPC's own; drops the others.
#[cold]
#[inline(never)]
fn trim(headers: &mut HeaderMap) {
    let size = |name: &http::HeaderName, value: &http::HeaderValue| {
        name.as_str().len() + value.len() + ENTRY_OVERHEAD
    };
    let mut total: usize = (headers.iter())
        .filter(|(name, _)| is_grpcs_own(name))
        .map(|(name, value)| size(name, value))
        .sum();
    let mut kept = HeaderMap::with_capacity(headers.len());
    let mut dropped = 0usize;
    for (name, value) in headers.iter() {
        if !is_grpcs_own(name) {
            if total + size(name, value) > MAX_METADATA_BYTES {
                dropped += 1;
                continue;
            }
            total += size(name, value);
        }
        kept.append(name.clone(), value.clone());
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            limit = MAX_METADATA_BYTES,
            "response metadata over the limit: entries dropped"
        );
    }
    *headers = kept;
}

/// [`bound_metadata`] for the trailers of `polled`, when it is a trailers
/// frame; they are returned, bounded.
#[inline]
pub(super) fn bound_trailers<E>(
    polled: &mut Poll<Option<Result<Frame<Bytes>, E>>>,
) -> Option<&HeaderMap> {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.trailers_mut().map(|trailers| {
            bound_metadata(trailers);
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
    fn metadata_over_the_bound_keeps_grpcs_own_and_what_fits_in_order() {
        let mut headers = ending("not here");
        headers.insert("x-small", HeaderValue::from_static("kept"));
        let before = headers.clone();
        bound_metadata(&mut headers);
        assert_eq!(headers, before, "small metadata is left as it is");

        for i in 0..64 {
            let name = http::HeaderName::try_from(format!("x-big-{i:02}")).unwrap();
            headers.insert(name, HeaderValue::from_str(&"v".repeat(1000)).unwrap());
        }
        bound_metadata(&mut headers);
        let total: usize = (headers.iter())
            .map(|(n, v)| n.as_str().len() + v.len() + ENTRY_OVERHEAD)
            .sum();
        assert!(total <= MAX_METADATA_BYTES, "{total}");
        assert!(headers.contains_key("x-small"));
        assert!(headers.contains_key("x-big-00") && headers.contains_key("x-big-06"));
        assert!(
            !headers.contains_key("x-big-08"),
            "in order: the later ones go"
        );
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::NotFound, "not here")
        );
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
            bound_metadata(&mut headers);
            assert_eq!(headers, before, "{message:?}");
        }
        let mut headers = ending(&"é".repeat(MAX_MESSAGE_BYTES / 2 + 1));
        bound_metadata(&mut headers);
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with(CUT_MARK));
    }
}
