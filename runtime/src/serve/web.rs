//! gRPC-Web and CORS on the gRPC port (`[http]`). When `http.grpc_web` is
//! set, the router is wrapped so that a gRPC-Web call (over HTTP/1.1 or
//! HTTP/2) is translated to gRPC before the services' pipelines see it, and
//! its answer back: the same auth, metrics, deadlines, validation and
//! handler as a gRPC call. With neither setting the router is left as it is,
//! so gRPC calls pay nothing for them.

use std::time::Duration;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{CorsConfig, HttpConfig};
use crate::metrics::Protocol;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The request headers gRPC-Web and REST calls send.
const ALLOWED_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
    "tracestate",
    "accept",
];

/// The response headers a page may read (a gRPC-Web call's status comes in
/// them when the answer has no body).
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// `router` with what `http` asks for.
pub(crate) fn wrap(mut router: axum::Router, http: &HttpConfig) -> axum::Router {
    if http.grpc_web {
        router = router
            .layer(tonic_web::GrpcWebLayer::new())
            // Outside the translation, which makes the call look like gRPC:
            // its metrics are gRPC-Web's.
            .layer(tower::util::MapRequestLayer::new(mark_grpc_web));
    }
    // Outermost: a preflight is answered before anything else looks at it.
    if !http.cors.allowed_origins.is_empty() {
        router = router.layer(cors(&http.cors));
    }
    router
}

/// Marks a gRPC-Web request as one for the metrics' `protocol` label.
fn mark_grpc_web(mut request: Request<Body>) -> Request<Body> {
    let web = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc-web"));
    if web {
        request.extensions_mut().insert(Protocol::GrpcWeb);
    }
    request
}

/// The CORS layer of `http.cors`: outermost on the router, and in front of
/// REST's service.
pub(super) fn cors(config: &CorsConfig) -> CorsLayer {
    // The configuration checked them (`http.cors.allowed_origins`).
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}
