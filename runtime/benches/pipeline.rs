//! Micro-benchmarks of what Keel adds to each call:
//!
//! - `policy/*`: resolving a request path to its method policy (the generated
//!   `match`), for the first and last method and for an unknown path;
//! - `jwt/*`: verifying an HS256 access token, fully (`verify_uncached`) and
//!   from the verified-token cache (`verify`, `authenticate` with the header);
//! - `pipeline/*`: one whole unary call through a trivial inner tower
//!   service that reads the request body and answers an OK gRPC response
//!   (one message, `grpc-status: 0` in the trailers), driving the response
//!   body to its end: bare, and behind the pipeline the generated servers use
//!   (`Keel::wrap`; cached token). The pipeline's cost is the difference. No
//!   `tracing` subscriber is installed, so calls are not traced.
//!
//! These isolate Keel's own code; what a service costs as a whole is
//! `cargo xtask bench` (a real server, plain tonic beside it).
//!
//! Futures are driven by [`block_on`], which polls once with a no-op waker:
//! everything here is ready immediately, so no executor cost is measured.
//!
//! Run with `cargo bench -p keel-rpc --bench pipeline` (or `cargo xtask bench`).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
use keel_rpc::config::{Config, Loader};
use keel_rpc::{Keel, Verifier};
use tonic::body::Body;
use tower::{Service, ServiceExt};

/// Shaped like the generated `USER_SERVICE_POLICY`: a static table and a `match` route.
static POLICY: ServicePolicy = ServicePolicy {
    name: "user.v1.UserService",
    methods: &[
        method("GetUser", "/user.v1.UserService/GetUser", READ, CRITICAL),
        method(
            "CreateUser",
            "/user.v1.UserService/CreateUser",
            WRITE,
            CRITICAL,
        ),
        method("ListUsers", "/user.v1.UserService/ListUsers", READ, BATCH),
        method(
            "ImportUsers",
            "/user.v1.UserService/ImportUsers",
            WRITE,
            BATCH,
        ),
        method(
            "ExportUsers",
            "/user.v1.UserService/ExportUsers",
            READ,
            BATCH,
        ),
        MethodPolicy {
            labels: &[("team", "identity")],
            ..MethodPolicy::new(
                "HealthCheck",
                "/user.v1.UserService/HealthCheck",
                MethodKind::Unary,
                Access::Public,
            )
        },
    ],
    route: user_service_route,
};

const READ: &[&str] = &["users:read"];
const WRITE: &[&str] = &["users:write"];
const CRITICAL: &[(&str, &str)] = &[("team", "identity"), ("tier", "critical")];
const BATCH: &[(&str, &str)] = &[("team", "identity"), ("tier", "batch")];

const fn method(
    name: &'static str,
    path: &'static str,
    scopes: &'static [&'static str],
    labels: &'static [(&'static str, &'static str)],
) -> MethodPolicy {
    MethodPolicy {
        labels,
        ..MethodPolicy::new(name, path, MethodKind::Unary, Access::Token { scopes })
    }
}

fn user_service_route(path: &str) -> Option<usize> {
    match path {
        "/user.v1.UserService/GetUser" => Some(0),
        "/user.v1.UserService/CreateUser" => Some(1),
        "/user.v1.UserService/ListUsers" => Some(2),
        "/user.v1.UserService/ImportUsers" => Some(3),
        "/user.v1.UserService/ExportUsers" => Some(4),
        "/user.v1.UserService/HealthCheck" => Some(5),
        _ => None,
    }
}

const GET_USER: &str = "/user.v1.UserService/GetUser";
const HEALTH_CHECK: &str = "/user.v1.UserService/HealthCheck";
const UNKNOWN: &str = "/user.v1.UserService/DeleteUser";

/// `GetUserRequest { id: "u-000001" }`, gRPC-framed.
const REQUEST_FRAME: &[u8] = b"\x00\x00\x00\x00\x0a\x0a\x08u-000001";
/// A small `User`-sized response message, gRPC-framed.
const RESPONSE_FRAME: &[u8] =
    b"\x00\x00\x00\x00\x2d\x0a\x08u-000001\x12\x0aBench User\x1a\x11bench@example.com\x22\x00\x2a\x00";

const CONFIG: &str = r#"
    [auth]
    algorithm = "HS256"
    hmac_secret = "a-benchmark-secret-of-at-least-32-bytes"
    issuer = "keel-bench"
    audience = "keel-bench-clients"
"#;

fn config() -> Config {
    match Loader::new().defaults_toml(CONFIG).load() {
        Ok(config) => config,
        Err(e) => panic!("bench config: {e}"),
    }
}

fn token(config: &Config) -> String {
    keel_rpc::auth::mint_access_token(
        &config.auth,
        "bench",
        &["users:read"],
        Duration::from_secs(3600),
    )
    .expect("minting the bench token")
}

/// Drives a future that is ready at once (nothing here waits on I/O).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("bench future unexpectedly pending"),
    }
}

/// A trivial gRPC server: reads the request body, answers one message and
/// `grpc-status: 0` in the trailers. Boxes its future, as tonic's generated
/// servers do.
#[derive(Clone, Copy)]
struct OkService;

impl<B> Service<Request<B>> for OkService
where
    B: http_body::Body<Data = Bytes> + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(async move {
            let _ = black_box(request.into_body().collect().await.is_ok());
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = Full::new(Bytes::from_static(RESPONSE_FRAME))
                .with_trailers(std::future::ready(Some(Ok(trailers))));
            let mut response = Response::new(Body::new(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        })
    }
}

/// The request h2load sends in `cargo xtask bench`: same path, headers and body.
fn request(bearer: &HeaderValue) -> Request<Body> {
    let mut request = Request::new(Body::new(Full::new(Bytes::from_static(REQUEST_FRAME))));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(GET_USER);
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(http::header::AUTHORIZATION, bearer.clone());
    request
}

/// One call through `service`, response body drained; returns the `grpc-status` trailer.
fn call<S, ResBody>(service: &S, bearer: &HeaderValue) -> Option<HeaderValue>
where
    S: Service<Request<Body>, Response = Response<ResBody>, Error = Infallible> + Clone,
    ResBody: http_body::Body,
{
    block_on(async {
        let Ok(response) = service.clone().oneshot(request(bearer)).await;
        let collected = response.into_body().collect().await.ok()?;
        collected.trailers()?.get("grpc-status").cloned()
    })
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    group.bench_function("method_first", |b| {
        b.iter(|| POLICY.method(black_box(GET_USER)).map(|(i, _)| i))
    });
    group.bench_function("method_last", |b| {
        b.iter(|| POLICY.method(black_box(HEALTH_CHECK)).map(|(i, _)| i))
    });
    group.bench_function("method_unknown", |b| {
        b.iter(|| POLICY.method(black_box(UNKNOWN)).map(|(i, _)| i))
    });
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let config = config();
    let token = token(&config);
    let verifier = Verifier::from_config(&config.auth).expect("verifier");
    assert!(
        verifier.verify_uncached(&token).is_ok(),
        "bench token rejected"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).expect("header value"),
    );

    let mut group = c.benchmark_group("jwt");
    group.bench_function("verify_uncached", |b| {
        b.iter(|| verifier.verify_uncached(black_box(&token)).is_ok())
    });
    group.bench_function("verify_cached", |b| {
        b.iter(|| verifier.verify(black_box(&token)).is_ok())
    });
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| verifier.authenticate(black_box(&headers)).is_ok())
    });
    // Each call with another token than the last: every hit is in the
    // shared cache, none in the thread's last hit (which it then replaces).
    let tokens: Vec<String> = (0..64)
        .map(|i| {
            keel_rpc::auth::mint_access_token(
                &config.auth,
                &format!("bench-{i}"),
                &["users:read"],
                Duration::from_secs(3600),
            )
            .expect("minting a bench token")
        })
        .collect();
    let mut next = tokens.iter().cycle();
    group.bench_function("verify_cached_64_tokens", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(next.next().expect("cycle")))
                .is_ok()
        })
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let config = config();
    let bearer = HeaderValue::try_from(format!("Bearer {}", token(&config))).expect("header");
    let keel = Keel::new(&config, &[&POLICY]).expect("keel");

    let bare = OkService;
    let full = keel.wrap(&POLICY, OkService).expect("declared");

    // Both must answer OK, and the metrics must have seen the call.
    let ok = Some(HeaderValue::from_static("0"));
    assert_eq!(call(&bare, &bearer), ok, "bare");
    assert_eq!(call(&full, &bearer), ok, "pipeline");
    let rendered = keel.metrics().render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("grpc_server_handled_total")
                && l.contains(r#"grpc_code="OK""#)
                && l.contains(r#"grpc_method="GetUser""#)
                && l.ends_with(" 1")),
        "metrics did not record the OK call:\n{rendered}"
    );

    let mut group = c.benchmark_group("pipeline");
    group.bench_function("bare", |b| b.iter(|| call(&bare, &bearer)));
    group.bench_function("get_user", |b| b.iter(|| call(&full, &bearer)));
    group.finish();
}

criterion_group!(benches, policy, jwt, pipeline);
criterion_main!(benches);
