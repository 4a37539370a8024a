//! The HTTP `/metrics` endpoint Prometheus scrapes.

use axum::Router;
use axum::http::header;
use axum::routing::get;

use super::Metrics;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An axum router answering `GET /metrics` with the registry's contents.
/// Serve it on its own address, apart from the gRPC port.
pub fn router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }
        }),
    )
}
