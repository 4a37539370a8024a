//! The server pipeline around a plain tower service, without a network:
//! auth, metrics, panics, and the token cache behind auth.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
use keel_rpc::config::{AuthConfig, Loader, Secret};
use keel_rpc::{RequestExt, Verifier};
use tower::ServiceExt;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

static POLICY: ServicePolicy = ServicePolicy {
    name: "test.v1.Things",
    methods: &[
        MethodPolicy::new(
            "Open",
            "/test.v1.Things/Open",
            MethodKind::Unary,
            Access::Public,
        ),
        MethodPolicy::new(
            "Read",
            "/test.v1.Things/Read",
            MethodKind::Unary,
            Access::Token {
                scopes: &["things:read"],
            },
        ),
    ],
    route: |path| match path {
        "/test.v1.Things/Open" => Some(0),
        "/test.v1.Things/Read" => Some(1),
        _ => None,
    },
};

fn auth_config() -> AuthConfig {
    AuthConfig {
        hmac_secret: Some(Secret::new(SECRET)),
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    }
}

fn token(scope: &str, ttl: Duration) -> String {
    keel_rpc::auth::mint_access_token(&auth_config(), "alice", &[scope], ttl).unwrap()
}

fn request(path: &str, token: Option<&str>) -> http::Request<tonic::body::Body> {
    let mut builder = http::Request::post(path).header("content-type", "application/grpc");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(tonic::body::Body::empty()).unwrap()
}

/// The request body the pipeline hands the server.
type Counted = keel_rpc::pipeline::CountingBody<tonic::body::Body>;

/// The pipeline of `POLICY` over `server`, with the test key.
fn pipeline<S>(server: S) -> (keel_rpc::Keel, keel_rpc::Pipeline<S>) {
    let config = keel_rpc::config::Config {
        auth: auth_config(),
        ..keel_rpc::config::Config::<()>::default()
    };
    let keel = keel_rpc::Keel::new(&config, &[&POLICY]).unwrap();
    let service = keel.wrap(&POLICY, server).unwrap();
    (keel, service)
}

/// A handler stand-in: counts calls and echoes the verified subject in `x-sub`.
fn handler(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<Counted>,
    Response = http::Response<tonic::body::Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: http::Request<Counted>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let req = tonic::Request::from_http(req);
        let sub = req
            .claims()
            .map(|c| c.sub.clone())
            .unwrap_or_else(|| "-".into());
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("x-sub", sub)
                    .header("grpc-status", "0")
                    .body(tonic::body::Body::empty())
                    .unwrap(),
            )
        }
    })
}

#[tokio::test]
async fn handlers_see_verified_claims_and_rejections_never_reach_them() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (_keel, service) = pipeline(handler(calls.clone()));
    let good = token("things:read", Duration::from_secs(60));

    let res = service
        .clone()
        .oneshot(request("/test.v1.Things/Read", Some(&good)))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-sub"], "alice");

    // Public: the token is not even read, so no claims.
    let res = service
        .clone()
        .oneshot(request("/test.v1.Things/Open", Some(&good)))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-sub"], "-");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let res = service
        .clone()
        .oneshot(request("/test.v1.Things/Read", None))
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "16");
    let wrong_scope = token("things:write", Duration::from_secs(60));
    let res = service
        .clone()
        .oneshot(request("/test.v1.Things/Read", Some(&wrong_scope)))
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "7");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "rejected requests never reach the handler"
    );

    // A path the policy does not know goes to the server, which answers UNIMPLEMENTED.
    service
        .clone()
        .oneshot(request("/test.v1.Things/Other", None))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn cached_tokens_never_outlive_their_expiry() {
    let verifier = Verifier::from_config(&auth_config()).unwrap();
    let short = token("things:read", Duration::from_secs(2));
    assert!(verifier.verify(&short).is_ok());
    assert_eq!(verifier.cached_tokens(), 1);
    assert!(verifier.verify(&short).is_ok(), "served from the cache");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Sleep past `exp` (whole seconds) with leeway 0.
    let exp = now + 2;
    std::thread::sleep(Duration::from_millis((exp + 1 - now) * 1000));
    assert_eq!(
        verifier.verify(&short).unwrap_err(),
        keel_rpc::auth::AuthError::Expired
    );
}

#[test]
fn the_cache_is_bounded() {
    let config = AuthConfig {
        cache_capacity: 16,
        ..auth_config()
    };
    let verifier = Verifier::from_config(&config).unwrap();
    for i in 0..200 {
        let token = keel_rpc::auth::mint_access_token(
            &config,
            &format!("user-{i}"),
            &[],
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(verifier.verify(&token).is_ok());
    }
    assert!(
        verifier.cached_tokens() <= 16,
        "{} cached",
        verifier.cached_tokens()
    );

    let uncached = Verifier::from_config(&AuthConfig {
        cache_capacity: 0,
        ..auth_config()
    })
    .unwrap();
    assert!(
        uncached
            .verify(&token("x", Duration::from_secs(60)))
            .is_ok()
    );
    assert_eq!(uncached.cached_tokens(), 0);
}

/// A handler stand-in for any request body: answers OK, or panics when the
/// request has `x-panic`.
#[derive(Clone)]
struct Panicky;

impl<B> tower::Service<http::Request<B>> for Panicky {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        assert!(!req.headers().contains_key("x-panic"), "handler panics");
        std::future::ready(Ok(http::Response::builder()
            .header("grpc-status", "0")
            .body(tonic::body::Body::empty())
            .unwrap()))
    }
}

/// `grpc-status` of a response, from its headers or else its trailers.
async fn grpc_status<B>(res: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    if let Some(status) = res.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let trailers = res.into_body().collect().await.unwrap().trailers().cloned();
    trailers.unwrap()["grpc-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The metrics text without the latency buckets and sums, which depend on
/// timing (a panic that captures a backtrace takes a while).
fn untimed(metrics: &keel_rpc::Metrics) -> String {
    metrics
        .render()
        .lines()
        .filter(|line| !line.contains("_seconds_sum") && !line.contains("_seconds_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn each_outcome_is_answered_and_counted_once_under_its_code() {
    let (keel, service) = pipeline(Panicky);
    let good = token("things:read", Duration::from_secs(60));
    let wrong_scope = token("things:write", Duration::from_secs(60));
    let calls = [
        ("/test.v1.Things/Read", Some(good.as_str()), false, "0"),
        ("/test.v1.Things/Read", None, false, "16"),
        ("/test.v1.Things/Read", Some("not-a-jwt"), false, "16"),
        (
            "/test.v1.Things/Read",
            Some(wrong_scope.as_str()),
            false,
            "7",
        ),
        ("/test.v1.Things/Open", None, false, "0"),
        ("/test.v1.Things/Open", None, true, "13"),
        ("/test.v1.Things/Other", None, false, "0"),
    ];
    for (path, token, panics, expected) in calls {
        let mut req = request(path, token);
        if panics {
            req.headers_mut().insert("x-panic", "1".parse().unwrap());
        }
        let status = grpc_status(service.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(status, expected, "{path} {token:?} panics: {panics}");
    }

    let metrics = untimed(keel.metrics());
    let series = |code: &str, method: &str, count: u32| {
        format!(
            r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",grpc_service="test.v1.Things",grpc_type="unary",protocol="grpc"}} {count}"#
        )
    };
    for line in [
        series("OK", "Read", 1),
        series("Unauthenticated", "Read", 2),
        series("PermissionDenied", "Read", 1),
        series("OK", "Open", 1),
        series("Internal", "Open", 1),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("Other"),
        "a path outside the policy is not counted:\n{metrics}"
    );
}

#[test]
fn the_cache_compares_whole_tokens() {
    let verifier = Verifier::from_config(&auth_config()).unwrap();
    let good = token("things:read", Duration::from_secs(60));
    assert!(verifier.verify(&good).is_ok());
    // Same length and same signature (the part the cache hashes), another
    // payload: it must be verified, not served from the cache.
    let payload = good.find('.').unwrap() + 5;
    let mut forged = good.clone().into_bytes();
    forged[payload] = if forged[payload] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(verifier.verify(&forged).is_err());
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {forged}").parse().unwrap());
    assert!(verifier.authenticate(&headers).is_err());
    assert_eq!(verifier.cached_tokens(), 1);
    assert!(verifier.verify(&good).is_ok());
}

/// A service no runtime below was built for.
static UNDECLARED: ServicePolicy = ServicePolicy {
    name: "test.v1.Undeclared",
    methods: &[],
    route: |_| None,
};

#[test]
fn only_services_given_to_the_runtime_can_be_wrapped() {
    let metrics = keel_rpc::Metrics::new(&[&POLICY]).unwrap();
    assert!(metrics.service(&POLICY).is_some());
    assert!(metrics.service(&UNDECLARED).is_none());

    let verifier = Arc::new(Verifier::from_config(&auth_config()).unwrap());
    let keel = keel_rpc::Keel::from_parts(verifier, metrics, 4 << 20);
    assert!(keel.layer(&POLICY).is_ok());
    let error = keel.layer(&UNDECLARED).unwrap_err();
    assert!(
        matches!(
            error,
            keel_rpc::Error::UndeclaredService("test.v1.Undeclared")
        ),
        "{error}"
    );
}

/// A service whose methods set deadlines of their own: `Quick` a default of
/// 100 ms and a cap of 300 ms; `Feed`, streaming, a default of 100 ms.
static DEADLINES: ServicePolicy = ServicePolicy {
    name: "test.v1.Deadlines",
    methods: &[
        MethodPolicy {
            timeout: Some(Duration::from_millis(100)),
            max_timeout: Some(Duration::from_millis(300)),
            ..MethodPolicy::new(
                "Quick",
                "/test.v1.Deadlines/Quick",
                MethodKind::Unary,
                Access::Public,
            )
        },
        MethodPolicy {
            timeout: Some(Duration::from_millis(100)),
            ..MethodPolicy::new(
                "Feed",
                "/test.v1.Deadlines/Feed",
                MethodKind::ServerStreaming,
                Access::Public,
            )
        },
    ],
    route: |path| match path {
        "/test.v1.Deadlines/Quick" => Some(0),
        "/test.v1.Deadlines/Feed" => Some(1),
        _ => None,
    },
};

/// Answers after `x-sleep-ms` (a response body that never ends for `Feed`),
/// with the time the handler saw left in `x-left-ms`.
fn sleepy(
    req: http::Request<Counted>,
) -> impl std::future::Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> {
    let sleep: u64 = (req.headers().get("x-sleep-ms"))
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let streams = req.uri().path().ends_with("/Feed");
    async move {
        let left = keel_rpc::deadline::remaining().map_or(u128::MAX, |d| d.as_millis());
        tokio::time::sleep(Duration::from_millis(sleep)).await;
        let body = match streams {
            // One message, then nothing more: the stream stalls.
            true => tonic::body::Body::new(http_body_util::StreamBody::new(
                futures_stream_of_one_frame(),
            )),
            false => tonic::body::Body::empty(),
        };
        let mut response = http::Response::new(body);
        response
            .headers_mut()
            .insert("x-left-ms", left.to_string().parse().unwrap());
        if !streams {
            response
                .headers_mut()
                .insert("grpc-status", "0".parse().unwrap());
        }
        Ok(response)
    }
}

/// A body stream: one empty gRPC message, then pending forever.
fn futures_stream_of_one_frame()
-> impl tokio_stream::Stream<Item = Result<http_body::Frame<bytes::Bytes>, tonic::Status>> + Send {
    use tokio_stream::StreamExt as _;
    let first = tokio_stream::once(Ok(http_body::Frame::data(bytes::Bytes::from_static(&[
        0, 0, 0, 0, 0,
    ]))));
    first.chain(tokio_stream::pending())
}

fn deadline_request(
    path: &str,
    sleep_ms: u64,
    grpc_timeout: Option<&str>,
) -> http::Request<tonic::body::Body> {
    let mut builder = http::Request::post(path)
        .header("content-type", "application/grpc")
        .header("x-sleep-ms", sleep_ms.to_string());
    if let Some(timeout) = grpc_timeout {
        builder = builder.header("grpc-timeout", timeout);
    }
    builder.body(tonic::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn a_methods_timeout_and_cap_end_calls_deadline_exceeded() {
    let config = keel_rpc::config::Config {
        auth: auth_config(),
        ..keel_rpc::config::Config::<()>::default()
    };
    let keel = keel_rpc::Keel::new(&config, &[&DEADLINES]).unwrap();
    let service = keel.wrap(&DEADLINES, tower::service_fn(sleepy)).unwrap();
    let quick = "/test.v1.Deadlines/Quick";
    let outcome = |request| {
        let service = service.clone();
        async move {
            let started = std::time::Instant::now();
            let response = service.oneshot(request).await.unwrap();
            let left = response.headers().get("x-left-ms").cloned();
            (grpc_status(response).await, started.elapsed(), left)
        }
    };

    // Fast enough: answered; the handler saw the default deadline.
    let (status, _, left) = outcome(deadline_request(quick, 0, None)).await;
    assert_eq!(status, "0");
    let left: u128 = left.unwrap().to_str().unwrap().parse().unwrap();
    assert!(left <= 100, "{left} ms left of a 100 ms default");
    // No grpc-timeout: the method's 100 ms.
    let (status, elapsed, _) = outcome(deadline_request(quick, 2_000, None)).await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    assert!(elapsed < Duration::from_millis(1_000), "{elapsed:?}");
    // A caller asking for 5 s gets the 300 ms cap.
    let (status, elapsed, _) = outcome(deadline_request(quick, 2_000, Some("5S"))).await;
    assert_eq!(status, "4");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1_500),
        "{elapsed:?}"
    );
    // A caller asking for less gets less.
    let (status, elapsed, _) = outcome(deadline_request(quick, 2_000, Some("20m"))).await;
    assert_eq!(status, "4");
    assert!(elapsed < Duration::from_millis(250), "{elapsed:?}");
    // A stream still running at the deadline ends there, in its trailers.
    let (status, elapsed, _) = outcome(deadline_request("/test.v1.Deadlines/Feed", 0, None)).await;
    assert_eq!(status, "4");
    assert!(elapsed < Duration::from_millis(1_000), "{elapsed:?}");

    let metrics = untimed(keel.metrics());
    for (method, kind, count) in [("Quick", "unary", 3), ("Feed", "server_stream", 1)] {
        let line = format!(
            r#"grpc_server_handled_total{{grpc_code="DeadlineExceeded",grpc_method="{method}",grpc_service="test.v1.Deadlines",grpc_type="{kind}",protocol="grpc"}} {count}"#
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// `One` lets two calls run at once.
static LIMITED: ServicePolicy = ServicePolicy {
    name: "test.v1.Limited",
    methods: &[MethodPolicy {
        max_concurrency: Some(2),
        ..MethodPolicy::new(
            "One",
            "/test.v1.Limited/One",
            MethodKind::Unary,
            Access::Public,
        )
    }],
    route: |path| match path {
        "/test.v1.Limited/One" => Some(0),
        _ => None,
    },
};

#[tokio::test]
async fn calls_over_max_concurrency_are_refused_at_once_and_slots_come_back() {
    let config = keel_rpc::config::Config {
        auth: auth_config(),
        ..keel_rpc::config::Config::<()>::default()
    };
    let keel = keel_rpc::Keel::new(&config, &[&LIMITED]).unwrap();
    let service = keel.wrap(&LIMITED, tower::service_fn(sleepy)).unwrap();
    let one = "/test.v1.Limited/One";
    let call = |sleep_ms: u64| {
        let service = service.clone();
        async move {
            let response = service
                .oneshot(deadline_request(one, sleep_ms, None))
                .await
                .unwrap();
            grpc_status(response).await
        }
    };
    let first = tokio::spawn(call(400));
    let second = tokio::spawn(call(400));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(call(0).await, "8", "RESOURCE_EXHAUSTED while two run");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "refused at once, not queued"
    );
    assert_eq!(first.await.unwrap(), "0");
    assert_eq!(second.await.unwrap(), "0");
    // Their slots are back; so is that of a call whose client went away.
    let abandoned = tokio::spawn(call(5_000));
    tokio::time::sleep(Duration::from_millis(50)).await;
    abandoned.abort();
    let _ = abandoned.await;
    let (a, b) = tokio::join!(call(10), call(10));
    assert_eq!((a.as_str(), b.as_str()), ("0", "0"));

    let metrics = untimed(keel.metrics());
    for (code, count) in [("ResourceExhausted", 1), ("OK", 4), ("Canceled", 1)] {
        let line = format!(
            r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="One",grpc_service="test.v1.Limited",grpc_type="unary",protocol="grpc"}} {count}"#
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// Each method of `Rated` is limited to 2 calls per second, bursts of 3, by
/// another key.
static RATED: ServicePolicy = ServicePolicy {
    name: "test.v1.Rated",
    methods: &[
        rated(
            "Everyone",
            "/test.v1.Rated/Everyone",
            keel_rpc::codegen::RateKey::Global,
        ),
        rated(
            "ByAddress",
            "/test.v1.Rated/ByAddress",
            keel_rpc::codegen::RateKey::Peer,
        ),
        rated(
            "BySubject",
            "/test.v1.Rated/BySubject",
            keel_rpc::codegen::RateKey::Subject,
        ),
        rated(
            "ByTenant",
            "/test.v1.Rated/ByTenant",
            keel_rpc::codegen::RateKey::Claim("tenant"),
        ),
    ],
    route: |path| match path {
        "/test.v1.Rated/Everyone" => Some(0),
        "/test.v1.Rated/ByAddress" => Some(1),
        "/test.v1.Rated/BySubject" => Some(2),
        "/test.v1.Rated/ByTenant" => Some(3),
        _ => None,
    },
};

const fn rated(
    name: &'static str,
    path: &'static str,
    key: keel_rpc::codegen::RateKey,
) -> MethodPolicy {
    let access = match key {
        keel_rpc::codegen::RateKey::Global | keel_rpc::codegen::RateKey::Peer => Access::Public,
        _ => Access::Token { scopes: &[] },
    };
    MethodPolicy {
        rate_limit: Some(keel_rpc::codegen::RateLimit {
            per_second: 2.0,
            burst: 3,
            key,
        }),
        ..MethodPolicy::new(name, path, MethodKind::Unary, access)
    }
}

/// A token of `sub` with extra claims, signed with the test key.
fn token_with(sub: &str, extra: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({ "sub": sub, "exp": now + 60, "token_use": "access" });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A request of `path` with a bearer token and the connection's address,
/// as tonic's server puts it in the extensions.
fn rated_request(
    path: &str,
    token: Option<&str>,
    from: [u8; 4],
) -> http::Request<tonic::body::Body> {
    let mut req = request(path, token);
    let remote = std::net::SocketAddr::from((from, 40_000));
    req.extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(remote),
        });
    req
}

#[tokio::test]
async fn calls_over_a_rate_limit_are_refused_with_when_to_retry_per_key() {
    use tonic_types::StatusExt;
    let calls = Arc::new(AtomicUsize::new(0));
    let config = keel_rpc::config::Config {
        auth: auth_config(),
        ..keel_rpc::config::Config::<()>::default()
    };
    let keel = keel_rpc::Keel::new(&config, &[&RATED]).unwrap();
    let service = keel.wrap(&RATED, handler(calls.clone())).unwrap();
    let status_of = |req| {
        let service = service.clone();
        async move {
            let response = service.oneshot(req).await.unwrap();
            tonic::Status::from_header_map(response.headers())
                .filter(|s| s.code() != tonic::Code::Ok)
        }
    };
    // Each call's outcome: `None` for one that passed.
    let outcomes = |make: &dyn Fn() -> http::Request<tonic::body::Body>, n: usize| {
        let reqs: Vec<_> = (0..n).map(|_| make()).collect();
        async move {
            let mut out = Vec::new();
            for req in reqs {
                out.push(status_of(req).await);
            }
            out
        }
    };

    // global: the burst passes, the next is refused with a RetryInfo.
    let everyone = || rated_request("/test.v1.Rated/Everyone", None, [10, 0, 0, 1]);
    let got = outcomes(&everyone, 4).await;
    assert!(got[..3].iter().all(Option::is_none), "{got:?}");
    let refused = got[3].clone().expect("the fourth call is over the burst");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().starts_with(
            "/test.v1.Rated/Everyone is over its rate limit of 2 calls per second (burst 3); retry in"
        ),
        "{refused:?}"
    );
    let retry = refused
        .get_details_retry_info()
        .expect("a RetryInfo detail");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_millis(500),
        "{delay:?}"
    );
    // Another address changes nothing for a global limit…
    let other = rated_request("/test.v1.Rated/Everyone", None, [10, 0, 0, 2]);
    assert!(status_of(other).await.is_some());
    // …and after the delay one call's share is back.
    tokio::time::sleep(delay).await;
    assert!(status_of(everyone()).await.is_none());

    // peer: an address has its own bucket.
    let from = |ip| move || rated_request("/test.v1.Rated/ByAddress", None, ip);
    let got = outcomes(&from([10, 0, 0, 1]), 4).await;
    assert!(
        got[3].is_some() && got[..3].iter().all(Option::is_none),
        "{got:?}"
    );
    assert!(
        status_of(from([10, 0, 0, 2])()).await.is_none(),
        "another address passes"
    );
    assert!(
        status_of(from([10, 0, 0, 1])()).await.is_some(),
        "still refused"
    );

    // subject: a token's `sub`.
    let alice = token_with("alice", serde_json::json!({}));
    let bob = token_with("bob", serde_json::json!({}));
    let as_user = |token: &str| {
        let token = token.to_owned();
        move || rated_request("/test.v1.Rated/BySubject", Some(&token), [10, 0, 0, 1])
    };
    let got = outcomes(&as_user(&alice), 4).await;
    assert!(
        got[3].is_some() && got[..3].iter().all(Option::is_none),
        "{got:?}"
    );
    assert!(
        status_of(as_user(&bob)()).await.is_none(),
        "bob has a bucket of his own"
    );
    let unauthenticated = status_of(rated_request(
        "/test.v1.Rated/BySubject",
        None,
        [10, 0, 0, 1],
    ))
    .await
    .unwrap();
    assert_eq!(
        unauthenticated.code(),
        tonic::Code::Unauthenticated,
        "auth comes first"
    );

    // claim: two users of one tenant share its bucket; another tenant, and
    // tokens without the claim (one bucket between them), do not.
    let of_tenant = |sub: &str, tenant: &str| {
        let token = token_with(sub, serde_json::json!({ "tenant": tenant }));
        move || rated_request("/test.v1.Rated/ByTenant", Some(&token), [10, 0, 0, 1])
    };
    let got = outcomes(&of_tenant("alice", "acme"), 2).await;
    assert!(got.iter().all(Option::is_none), "{got:?}");
    let got = outcomes(&of_tenant("bob", "acme"), 2).await;
    assert_eq!(
        (got[0].is_none(), got[1].is_some()),
        (true, true),
        "{got:?}"
    );
    assert!(status_of(of_tenant("carol", "globex")()).await.is_none());
    let no_tenant = token_with("dave", serde_json::json!({}));
    let req = rated_request("/test.v1.Rated/ByTenant", Some(&no_tenant), [10, 0, 0, 1]);
    assert!(status_of(req).await.is_none());

    let metrics = untimed(keel.metrics());
    for (method, count) in [
        ("Everyone", 2),
        ("ByAddress", 2),
        ("BySubject", 1),
        ("ByTenant", 1),
    ] {
        let line = format!(
            r#"keel_server_rate_limited_total{{grpc_method="{method}",grpc_service="test.v1.Rated"}} {count}"#
        );
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let line = r#"grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Everyone",grpc_service="test.v1.Rated",grpc_type="unary",protocol="grpc"} 2"#;
    assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    // 4 + 4 + 4 + 5 calls passed (and one was refused by auth, before the limit).
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3 + 1 + 3 + 1 + 3 + 1 + 3 + 1 + 1
    );
}

/// `Batch` is sheddable and `Serve` critical, each at most 4 calls at once.
static SHEDDING: ServicePolicy = ServicePolicy {
    name: "test.v1.Shedding",
    methods: &[
        MethodPolicy {
            max_concurrency: Some(4),
            criticality: keel_rpc::codegen::Criticality::Sheddable,
            ..MethodPolicy::new(
                "Batch",
                "/test.v1.Shedding/Batch",
                MethodKind::Unary,
                Access::Public,
            )
        },
        MethodPolicy {
            max_concurrency: Some(4),
            ..MethodPolicy::new(
                "Serve",
                "/test.v1.Shedding/Serve",
                MethodKind::Unary,
                Access::Public,
            )
        },
    ],
    route: |path| match path {
        "/test.v1.Shedding/Batch" => Some(0),
        "/test.v1.Shedding/Serve" => Some(1),
        _ => None,
    },
};

/// A call's `grpc-status` and message, to come.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = (String, String)> + Send>>;

/// A pipeline of `SHEDDING` in `environment`, and a caller of it: a call
/// of `method` sleeping `sleep_ms`, asking for `criticality` if any.
fn shedding(environment: &str) -> impl Fn(&'static str, u64, Option<&'static str>) -> Answer {
    let config = Loader::new()
        .defaults_toml(&format!(
            "[service]\nenvironment = \"{environment}\"\n[auth]\nhmac_secret = \"{SECRET}\"\n"
        ))
        .load()
        .expect("config");
    let keel = keel_rpc::Keel::new(&config, &[&SHEDDING]).unwrap();
    let service = keel.wrap(&SHEDDING, tower::service_fn(sleepy)).unwrap();
    move |method, sleep_ms, criticality| {
        let service = service.clone();
        Box::pin(async move {
            let mut request = deadline_request(method, sleep_ms, None);
            if let Some(criticality) = criticality {
                request
                    .headers_mut()
                    .insert("keel-criticality", criticality.parse().unwrap());
            }
            let response = service.oneshot(request).await.unwrap();
            let message = tonic::Status::from_header_map(response.headers())
                .map(|status| status.message().to_owned())
                .unwrap_or_default();
            (grpc_status(response).await, message)
        })
    }
}

#[tokio::test]
async fn sheddable_calls_leave_room_for_critical_ones() {
    let call = shedding("production");
    let (batch, serve) = ("/test.v1.Shedding/Batch", "/test.v1.Shedding/Serve");
    // Two sheddable calls fill the half of the limit they may take.
    let running: Vec<_> = (0..2)
        .map(|_| tokio::spawn(call(batch, 300, None)))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, message) = call(batch, 0, None).await;
    assert_eq!(code, "8", "a third sheddable call is refused");
    assert!(
        message.contains(
            "already runs 2 calls, what SHEDDABLE calls may fill of its max_concurrency of 4"
        ),
        "{message}"
    );
    // A caller outside the fleet (no client certificate) cannot promote
    // its call in production: the method's own criticality holds.
    assert_eq!(call(batch, 0, Some("CRITICAL_PLUS")).await.0, "8");
    // Critical calls of the other method are not held back by them.
    let critical: Vec<_> = (0..4)
        .map(|_| tokio::spawn(call(serve, 300, None)))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... and an untrusted caller cannot demote one either: a fifth
    // critical call is over the limit whatever it says.
    assert_eq!(call(serve, 0, Some("SHEDDABLE")).await.0, "8");
    for done in running.into_iter().chain(critical) {
        assert_eq!(done.await.unwrap().0, "0");
    }
}

#[tokio::test]
async fn a_trusted_callers_criticality_is_the_calls() {
    // Development trusts every caller.
    let call = shedding("development");
    let serve = "/test.v1.Shedding/Serve";
    let running: Vec<_> = (0..2)
        .map(|_| tokio::spawn(call(serve, 300, Some("SHEDDABLE"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The caller's SHEDDABLE holds for `Serve`: half of its limit.
    assert_eq!(call(serve, 0, Some("SHEDDABLE")).await.0, "8");
    // Its critical calls still get the rest.
    let (code, _) = call(serve, 0, None).await;
    assert_eq!(code, "0");
    // A value that is no criticality is the method's own.
    assert_eq!(call(serve, 0, Some("URGENT!!")).await.0, "0");
    for done in running {
        assert_eq!(done.await.unwrap().0, "0");
    }
}
