//! The limits of a REST request's head: its target (`server.max_uri_bytes`,
//! 414 past it) and its headers (`server.max_header_bytes`, 431 past them),
//! answered with a `google.rpc.Status` JSON as every other refusal.
//!
//! hyper has limits of its own (a request target of 64 KiB, 100 headers, a
//! head of ~400 KiB on HTTP/1.1; a 16 KiB header list on HTTP/2), and
//! answers past them itself with an empty body, before any service sees the
//! request. These are below them, so that a client that is merely
//! over-eager (a huge query string, a cookie jar) is told what is wrong.

use axum::body::Body;
use http::{Request, Response, StatusCode};
use tonic::Code;

use super::response::{json_response, status_json};

/// `server.max_uri_bytes` and `server.max_header_bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// The longest request target (path and query), in bytes.
    pub(crate) max_uri: usize,
    /// The most bytes of header names and values.
    pub(crate) max_headers: usize,
}

impl HeadLimits {
    /// The answer to `request` when its head is over a limit.
    pub(super) fn refuse<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        let target = (request.uri().path_and_query()).map_or(0, |p| p.as_str().len());
        if target > self.max_uri {
            return Some(refusal(
                StatusCode::URI_TOO_LONG,
                format!(
                    "the request target is {target} bytes, over server.max_uri_bytes ({})",
                    self.max_uri
                ),
            ));
        }
        let headers: usize = (request.headers().iter())
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if headers > self.max_headers {
            return Some(refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request headers are {headers} bytes, over server.max_header_bytes ({})",
                    self.max_headers
                ),
            ));
        }
        None
    }
}

/// A refusal of the head: `RESOURCE_EXHAUSTED` in the Status JSON, the
/// HTTP status saying which part.
fn refusal(status: StatusCode, message: String) -> Response<Body> {
    json_response(
        status,
        status_json(Code::ResourceExhausted, &message, Vec::new()),
    )
}
