//! gRPC-Web and CORS on the gRPC port (`[http]`). When `http.grpc_web` is
//! set, the router is wrapped so that a gRPC-Web call (over HTTP/1.1 or
//! HTTP/2) is translated to gRPC before the services' pipelines see it, and
//! its answer back: the same auth, metrics, deadlines, validation and
//! handler as a gRPC call. A text call's body (`-text`, base64) may come in
//! pieces padded each (`web/text.rs`). With neither setting the router is
//! left as it is, so gRPC calls pay nothing for them.
//!
//! A CORS preflight is answered with the methods its path has: in front of
//! REST, each route's method (`HEAD` with `GET`) and, with gRPC-Web, `POST`
//! on the served services' method paths; on the router alone, `POST`, all a
//! gRPC-Web call is.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::Either;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use tower::layer::util::Stack;
use tower_http::cors::{AllowOrigin, CorsLayer};

mod text;

use super::rest::Routes;
use crate::config::{CorsConfig, HttpConfig};
use crate::metrics::Protocol;

/// The standard health service, which the router always serves.
const HEALTH: &str = "grpc.health.v1.Health";

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
    // The router only serves gRPC (and gRPC-Web): POST.
    if !http.cors.allowed_origins.is_empty() {
        router = router.layer(cors(&http.cors).allow_methods([Method::POST]));
    }
    router
}

/// Marks a gRPC-Web request as one for the metrics' `protocol` label; a
/// text one's body is made one base64 text (`web/text.rs`).
fn mark_grpc_web(mut request: Request<Body>) -> Request<Body> {
    let Some(kind) = (request.headers().get(header::CONTENT_TYPE))
        .and_then(|t| t.as_bytes().strip_prefix(b"application/grpc-web"))
    else {
        return request;
    };
    let text = kind == b"-text" || kind.starts_with(b"-text+");
    request.extensions_mut().insert(Protocol::GrpcWeb);
    match text {
        true => request.map(|body| Body::new(text::Requantized::new(body))),
        false => request,
    }
}

/// The CORS layer of `http.cors` in front of REST's service: a preflight
/// is allowed the methods of its path, as `routes` and, with `grpc_web`,
/// the gRPC paths of `grpc_services` have them.
pub(super) fn rest_cors(
    config: &CorsConfig,
    routes: Arc<Routes>,
    grpc_web: bool,
    grpc_services: &[&'static str],
) -> Stack<CorsLayer, PreflightLayer> {
    let mut grpc = Vec::new();
    if grpc_web {
        grpc.extend_from_slice(grpc_services);
        grpc.push(HEALTH);
    }
    let methods = PreflightLayer {
        paths: Arc::new(Paths { routes, grpc }),
    };
    // The CORS layer allows no method of its own: `Preflights` names them.
    Stack::new(cors(config), methods)
}

/// The CORS layer of `http.cors`, without the methods it allows: outermost
/// on the router, and in front of REST's service.
fn cors(config: &CorsConfig) -> CorsLayer {
    // The configuration checked them (`http.cors.allowed_origins`).
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Which methods each path has, for preflights.
#[derive(Debug)]
struct Paths {
    routes: Arc<Routes>,
    /// The services whose `/{service}/{method}` paths gRPC-Web calls POST
    /// to; none without gRPC-Web.
    grpc: Vec<&'static str>,
}

impl Paths {
    /// The `access-control-allow-methods` of a preflight of `path`; `None`
    /// when it has no method (the browser then sends no call).
    fn allowed(&self, path: &str) -> Option<HeaderValue> {
        let mut methods = self.routes.methods(path);
        let grpc = (path.strip_prefix('/').and_then(|p| p.split_once('/'))).is_some_and(
            |(service, method)| {
                !method.is_empty() && !method.contains('/') && self.grpc.contains(&service)
            },
        );
        if grpc && !methods.contains(&"POST") {
            methods.push("POST");
        }
        match methods.is_empty() {
            true => None,
            false => HeaderValue::from_str(&methods.join(", ")).ok(),
        }
    }
}

/// The layer of [`Preflights`].
#[derive(Clone, Debug)]
pub(super) struct PreflightLayer {
    paths: Arc<Paths>,
}

impl<S> tower::Layer<S> for PreflightLayer {
    type Service = Preflights<S>;

    fn layer(&self, inner: S) -> Preflights<S> {
        Preflights {
            paths: self.paths.clone(),
            inner,
        }
    }
}

/// In front of the CORS layer: the answer to a preflight it allowed (its
/// origin) gets the methods of the path. Any other request passes as it is.
#[derive(Clone, Debug)]
pub(super) struct Preflights<S> {
    paths: Arc<Paths>,
    inner: S,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for Preflights<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let preflight = request.method() == Method::OPTIONS
            && (request.headers()).contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return Either::Left(self.inner.call(request));
        }
        let methods = self.paths.allowed(request.uri().path());
        let answer = self.inner.call(request);
        Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            if let Some(methods) = methods
                && headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            {
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
            }
            Ok(response)
        }))
    }
}
