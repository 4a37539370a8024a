//! REST/JSON on the gRPC port: the `google.api.http` routes of the served
//! methods. A request that is not gRPC and matches a route becomes the
//! method's request message (path variables, then the body, then query
//! parameters for the fields left, in the proto3 JSON mapping), is sent as
//! a gRPC call to the same router, so the method's pipeline (auth,
//! metrics, deadline, limits, validation, recovery) and handler run as for
//! any gRPC call, and the answer comes back as JSON: the response message,
//! or a `google.rpc.Status` with the usual HTTP status.
//!
//! A server-streaming method answers newline-delimited JSON (`{"result":
//! …}` a line per message, `{"error": …}` if the stream ends with one), or
//! Server-Sent Events when the client accepts `text/event-stream`. A route
//! of a client- or bidi-streaming method answers 501. `HEAD` of a `GET`
//! route is the `GET` without its body.
//!
//! Here is the service and how it is built (CORS in front, when configured);
//! `head.rs` refuses request targets and headers over their limits (414,
//! 431) with a Status JSON, as hyper's own answers past its limits have no
//! body; `routes.rs` has the routes and how a request finds one,
//! `request.rs` the gRPC call a request becomes, `response.rs` its answer as
//! JSON (and each code's HTTP status), `stream.rs` a server stream's
//! messages as NDJSON or SSE.

mod head;
mod request;
mod response;
mod routes;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use tonic::Code;

use crate::config::{Config, HttpConfig};
use crate::metrics::Metrics;
use crate::policy::ServicePolicy;
use head::HeadLimits;
use request::Reading;
use response::{bounded, json_response, status_json};
pub use routes::RestError;
pub(crate) use routes::Routes;
use routes::{Bound, Route};

/// The service of requests that are not gRPC when some service has REST
/// routes (CORS, then REST transcoding, then the router).
pub(crate) type HttpService = tower::util::BoxCloneSyncService<
    Request<axum::body::Body>,
    Response<axum::body::Body>,
    Infallible,
>;

/// The REST routes of `services`, read as `config` says (`server.max_message_bytes`,
/// `server.request_body_timeout`, `server.max_uri_bytes`, `server.max_header_bytes`,
/// `http.discard_unknown_fields`), each method's late requests counted in `metrics`; `None`
/// when none has any.
pub(crate) fn routes(
    services: &[&'static ServicePolicy],
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<Arc<Routes>>, RestError> {
    let reading = Reading {
        max_body: config.server.max_message_bytes,
        body_timeout: config.server.request_body_timeout,
        discard_unknown: config.http.discard_unknown_fields,
    };
    let head = HeadLimits {
        max_uri: config.server.max_uri_bytes,
        max_headers: config.server.max_header_bytes,
    };
    Routes::new(services, reading, head, metrics)
}

/// The service of the requests that are not gRPC when some service has REST
/// routes: CORS (preflights of REST paths too, allowing each path's own
/// methods, and POST on the gRPC paths of `grpc_services` for gRPC-Web),
/// then REST transcoding into calls of `router`. gRPC calls never pass here.
pub(crate) fn service(
    routes: Arc<Routes>,
    router: axum::Router,
    http: &HttpConfig,
    grpc_services: &[&'static str],
) -> HttpService {
    let cors = (!http.cors.allowed_origins.is_empty())
        .then(|| super::web::rest_cors(&http.cors, routes.clone(), http.grpc_web, grpc_services));
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .option_layer(cors)
            .service(Rest::new(routes, router)),
    )
}

/// The service of requests that are not gRPC: those matching a route are
/// transcoded into calls of the router, the others answered 404.
#[derive(Clone, Debug)]
struct Rest<S> {
    routes: Arc<Routes>,
    inner: S,
}

impl<S> Rest<S> {
    fn new(routes: Arc<Routes>, inner: S) -> Self {
        Rest { routes, inner }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for Rest<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Only requests that are not gRPC come here: the connection's service
    /// sends gRPC calls straight to the router.
    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // `HEAD` is `GET` without the body (RFC 9110 §9.3.2): the GET route
        // answers, the same status and headers.
        let head = request.method() == Method::HEAD;
        let method = match head {
            true => &Method::GET,
            false => request.method(),
        };
        // A head over the limits is refused before anything reads it.
        if let Some(refused) = self.routes.head.refuse(&request) {
            return Box::pin(std::future::ready(Ok(without_body_if(head, refused))));
        }
        let found = self.routes.find(method, request.uri().path());
        let Some((index, vars)) = found else {
            // No route: a REST client's mistake, answered as one.
            let message = format!(
                "no route for {} {}",
                bounded(request.method().as_str()),
                bounded(request.uri().path())
            );
            let answer = json_response(
                StatusCode::NOT_FOUND,
                status_json(Code::NotFound, &message, Vec::new()),
            );
            return Box::pin(std::future::ready(Ok(without_body_if(head, answer))));
        };
        let routes = self.routes.clone();
        // Take the readied service; the clone is readied next time.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let route = &routes.routes[index];
            let answer = transcode(route, vars, request, inner, routes.reading)
                .await
                .unwrap_or_else(|refused| refused);
            Ok(without_body_if(head, answer))
        })
    }
}

/// `answer` without its body when it answers a `HEAD` request: its length,
/// when known, stays in `content-length`. (A server stream's answer is
/// dropped, which ends its call.)
fn without_body_if(head: bool, answer: Response<Body>) -> Response<Body> {
    if !head {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Body::empty())
}

/// Runs one REST call through the gRPC router.
async fn transcode<S>(
    route: &Route,
    vars: Bound,
    request: Request<Body>,
    mut inner: S,
    reading: Reading,
) -> Result<Response<Body>, Response<Body>>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let (call, events) = request::grpc_call(route, vars, request, reading)
        .await
        .inspect_err(|refused| route.count_refusal(refused))?;
    let Ok(answer) = inner.call(call).await;
    response::answer(route, answer, events).await
}
