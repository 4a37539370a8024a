//! The client layer around a plain tower service, without a network: token,
//! deadline, trace context and client metrics.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use keel_rpc::auth::{StaticToken, TokenError, TokenFuture, TokenSource};
use keel_rpc::client::Client;
use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
use keel_rpc::config::Loader;
use keel_rpc::metrics::ClientMetrics;
use tonic::body::Body;
use tower::{Service, ServiceExt};

static POLICY: ServicePolicy = ServicePolicy {
    name: "test.v1.Things",
    methods: &[MethodPolicy::new(
        "Read",
        "/test.v1.Things/Read",
        MethodKind::Unary,
        Access::Public,
    )],
    route: |path| match path {
        "/test.v1.Things/Read" => Some(0),
        _ => None,
    },
};

const READ: &str = "http://things/test.v1.Things/Read";

/// What the transport under the client layer saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

/// A transport that records each request's headers and answers after
/// `delay` with `grpc-status` `code` (trailers-only).
fn transport(
    seen: Seen,
    delay: Duration,
    code: &'static str,
) -> impl Service<
    Request<Body>,
    Response = Response<Empty<bytes::Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<Body>| {
        seen.0.lock().unwrap().push(request.headers().clone());
        async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Empty::new());
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static(code));
            Ok(response)
        }
    })
}

fn client(registry: &prometheus::Registry) -> Client {
    Client::from_parts(
        Duration::from_millis(200),
        ClientMetrics::new(registry).expect("register"),
    )
}

fn request(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request")
}

async fn call(
    service: impl Service<
        Request<Body>,
        Response = Response<impl http_body::Body>,
        Error = Box<dyn std::error::Error + Send + Sync>,
    >,
    request: Request<Body>,
) -> Result<(), tonic::Status> {
    match service.oneshot(request).await {
        Ok(response) => {
            let mut status = tonic::Status::from_header_map(response.headers());
            if let Ok(body) = response.into_body().collect().await
                && let Some(trailers) = body.trailers()
            {
                status = status.or_else(|| tonic::Status::from_header_map(trailers));
            }
            match status {
                Some(s) if s.code() != tonic::Code::Ok => Err(s),
                _ => Ok(()),
            }
        }
        Err(error) => Err(*error.downcast::<tonic::Status>().expect("a status")),
    }
}

#[tokio::test]
async fn sets_the_token_and_a_default_deadline_unless_the_caller_did() {
    let registry = prometheus::Registry::new();
    let seen = Seen::default();
    let client = client(&registry).with_token_source(StaticToken::new("t0ken"));
    let service = client.wrap(&POLICY, transport(seen.clone(), Duration::ZERO, "0"));

    call(service.clone(), request(READ)).await.expect("OK");
    let mut own = request(READ);
    own.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer mine"));
    own.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("5S"));
    call(service, own).await.expect("OK");

    let seen = seen.0.lock().unwrap();
    assert_eq!(seen[0]["authorization"], "Bearer t0ken");
    assert_eq!(seen[0]["grpc-timeout"], "200000u");
    assert_eq!(seen[1]["authorization"], "Bearer mine");
    assert_eq!(seen[1]["grpc-timeout"], "5S");
    // No tracing subscriber: nothing to propagate.
    assert!(!seen[0].contains_key("traceparent"));
}

#[tokio::test]
async fn a_late_answer_is_deadline_exceeded_and_counted() {
    let registry = prometheus::Registry::new();
    let service = client(&registry).wrap(
        &POLICY,
        transport(Seen::default(), Duration::from_secs(5), "0"),
    );
    let started = std::time::Instant::now();
    let status = call(service.clone(), request(READ))
        .await
        .expect_err("too late");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The caller's own, shorter deadline wins.
    let mut short = request(READ);
    short
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("20m"));
    let started = std::time::Instant::now();
    let status = call(service.clone(), short).await.expect_err("too late");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(190));

    let metrics = render(&registry);
    let labels = r#"grpc_method="Read",grpc_service="test.v1.Things",grpc_type="unary""#;
    for line in [
        format!("grpc_client_started_total{{{labels}}} 2"),
        format!("grpc_client_handled_total{{grpc_code=\"DeadlineExceeded\",{labels}}} 2"),
        format!("grpc_client_handled_total{{grpc_code=\"OK\",{labels}}} 0"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// A response body that ends, after `delay`, with `grpc-status` `code` in
/// its trailers: a server's answer to a call it ends mid-stream.
struct LateTrailers {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    code: Option<&'static str>,
}

impl http_body::Body for LateTrailers {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        std::task::Poll::Ready(self.code.take().map(|code| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(code));
            Ok(http_body::Frame::trailers(trailers))
        }))
    }
}

#[tokio::test]
async fn a_call_the_server_cancels_past_its_deadline_is_deadline_exceeded() {
    // tonic's server ends a call at its deadline with `CANCELLED`; the
    // response headers had come in time, so the client's own timer did not fire.
    let registry = prometheus::Registry::new();
    let answer = |after: Duration| {
        tower::service_fn(move |_: Request<Body>| async move {
            let sleep = Box::pin(tokio::time::sleep(after));
            Ok::<_, Infallible>(Response::new(LateTrailers {
                sleep,
                code: Some("1"),
            }))
        })
    };
    let client = client(&registry);
    let late = client.wrap(&POLICY, answer(Duration::from_millis(300)));
    let status = call(late, request(READ)).await;
    // The caller sees what the server said, in the trailers…
    assert_eq!(status.unwrap_err().code(), tonic::Code::Cancelled);
    // …and before the deadline, `CANCELLED` is the caller's or the server's own choice.
    let early = client.wrap(&POLICY, answer(Duration::ZERO));
    let status = call(early, request(READ)).await;
    assert_eq!(status.unwrap_err().code(), tonic::Code::Cancelled);

    let metrics = render(&registry);
    let labels = r#"grpc_method="Read",grpc_service="test.v1.Things",grpc_type="unary""#;
    for line in [
        format!("grpc_client_handled_total{{grpc_code=\"DeadlineExceeded\",{labels}}} 1"),
        format!("grpc_client_handled_total{{grpc_code=\"Canceled\",{labels}}} 1"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn codes_from_headers_are_counted_and_unknown_paths_are_not() {
    let registry = prometheus::Registry::new();
    let service = client(&registry).wrap(&POLICY, transport(Seen::default(), Duration::ZERO, "5"));
    let status = call(service.clone(), request(READ))
        .await
        .expect_err("NotFound");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let _ = call(service, request("http://things/test.v1.Things/Delete")).await;
    let metrics = render(&registry);
    let labels = r#"grpc_method="Read",grpc_service="test.v1.Things",grpc_type="unary""#;
    for line in [
        format!("grpc_client_started_total{{{labels}}} 1"),
        format!("grpc_client_handled_total{{grpc_code=\"NotFound\",{labels}}} 1"),
        format!("grpc_client_msg_sent_total{{{labels}}} 0"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(!metrics.contains("Delete"), "{metrics}");
}

struct Broken;

impl TokenSource for Broken {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async { Err(TokenError::new("the auth service is down")) })
    }
}

#[tokio::test]
async fn a_token_source_failure_fails_the_call_unauthenticated() {
    let registry = prometheus::Registry::new();
    let seen = Seen::default();
    let service = client(&registry)
        .with_token_source(Broken)
        .wrap(&POLICY, transport(seen.clone(), Duration::ZERO, "0"));
    let status = call(service, request(READ)).await.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("the auth service is down"),
        "{status:?}"
    );
    assert!(seen.0.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "current_thread")]
async fn the_call_continues_the_current_trace() {
    let config = Loader::new()
        .defaults_toml("[auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef-test\"\n")
        .load()
        .expect("valid");
    let (dispatch, _guard) = keel_rpc::telemetry::builder(&config)
        .writer(std::io::sink)
        .build()
        .expect("telemetry");
    let _default = tracing::dispatcher::set_default(&dispatch);

    let registry = prometheus::Registry::new();
    let seen = Seen::default();
    let service = client(&registry).wrap(&POLICY, transport(seen.clone(), Duration::ZERO, "0"));
    let outer = tracing::info_span!("outer");
    let (trace_id, outer_id) = outer
        .in_scope(keel_rpc::telemetry::current_ids)
        .expect("ids inside a span");
    // Tests of this binary run on several threads, most with no subscriber:
    // one of them registering the client span's callsite while this thread
    // installs its dispatcher can leave the callsite cached as "never"
    // (tracing computes a callsite's interest once, over the dispatchers
    // registered then). Recomputing it now, with this dispatcher in place,
    // is what a process with one global subscriber always has.
    tracing::callsite::rebuild_interest_cache();
    tracing::Instrument::instrument(call(service, request(READ)), outer)
        .await
        .expect("OK");

    let seen = seen.0.lock().unwrap();
    let traceparent = seen[0]["traceparent"].to_str().expect("ASCII");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], trace_id.to_string(), "the same trace");
    // The parent named is the client span, a child of `outer`, not `outer` itself.
    assert_ne!(parts[2], outer_id.to_string());
    assert_eq!(parts[3], "01", "sampled (ratio 1.0)");
}

fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encode");
    String::from_utf8(out).expect("UTF-8")
}

/// A source that counts how often its token was refused.
#[derive(Default)]
struct Counting {
    invalidated: std::sync::atomic::AtomicUsize,
}

impl TokenSource for Counting {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async { Ok(Arc::from("t0ken")) })
    }

    fn invalidate(&self) {
        self.invalidated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn a_refused_token_is_invalidated_once_per_refusal() {
    let registry = prometheus::Registry::new();
    let source = Arc::new(Counting::default());
    let service = client(&registry)
        .with_token_source(source.clone())
        .wrap(&POLICY, transport(Seen::default(), Duration::ZERO, "16"));
    let status = call(service.clone(), request(READ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // The caller's own token is the caller's business.
    let mut own = request(READ);
    own.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer mine"));
    let _ = call(service, own).await;
    assert_eq!(
        source
            .invalidated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn an_unavailable_token_source_fails_the_call_unavailable() {
    struct Down;
    impl TokenSource for Down {
        fn token(&self) -> TokenFuture<'_> {
            Box::pin(async { Err(TokenError::unavailable("connection refused")) })
        }
    }
    let registry = prometheus::Registry::new();
    let service = client(&registry)
        .with_token_source(Down)
        .wrap(&POLICY, transport(Seen::default(), Duration::ZERO, "0"));
    let status = call(service, request(READ)).await.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

/// The `grpc-timeout` each request the transport saw carried.
fn sent_timeouts(seen: &Seen) -> Vec<String> {
    seen.0
        .lock()
        .unwrap()
        .iter()
        .map(|h| h["grpc-timeout"].to_str().unwrap().to_owned())
        .collect()
}

/// A handler that calls `POLICY` downstream through the client layer (over
/// a transport recording into `seen`) and answers with that call's code.
fn calling_downstream<B>(
    seen: &Seen,
) -> impl Service<Request<B>, Response = Response<Empty<bytes::Bytes>>, Error = Infallible>
+ Clone
+ use<B> {
    let registry = prometheus::Registry::new();
    let downstream = client(&registry).wrap(&POLICY, transport(seen.clone(), Duration::ZERO, "0"));
    tower::service_fn(move |_: Request<B>| {
        let downstream = downstream.clone();
        async move {
            let code = match call(downstream, request(READ)).await {
                Ok(()) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            let mut response = Response::new(Empty::<bytes::Bytes>::new());
            response.headers_mut().insert(
                "grpc-status",
                HeaderValue::from_str(&(code as i32).to_string()).unwrap(),
            );
            Ok::<_, Infallible>(response)
        }
    })
}

/// A call of `POLICY` with `grpc-timeout: timeout` (none for `None`).
fn incoming(timeout: Option<&str>) -> Request<Body> {
    let mut incoming = Request::builder().uri(READ);
    if let Some(timeout) = timeout {
        incoming = incoming.header("grpc-timeout", timeout);
    }
    incoming.body(Body::empty()).unwrap()
}

/// Serves one call of `POLICY` through Keel with `grpc-timeout: timeout`
/// (none for `None`); its handler calls `POLICY` downstream through the
/// client layer and answers with the code of that call.
async fn serve_and_call_downstream(timeout: Option<&str>, seen: &Seen) -> String {
    let config = Loader::new()
        .defaults_toml("[auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef-test\"\n")
        .load()
        .expect("config");
    let keel = keel_rpc::Keel::new(&config, &[&POLICY]).expect("keel");
    let server = keel.wrap(&POLICY, calling_downstream(seen)).expect("wrap");
    let response = server.oneshot(incoming(timeout)).await.expect("infallible");
    response.headers()["grpc-status"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The one call sent downstream carried a `grpc-timeout` in (0, 50 ms].
fn assert_sent_within_50ms(seen: &Seen) {
    let sent = sent_timeouts(seen);
    let timeout = sent[0].strip_suffix('n').expect("nanoseconds under 100 ms");
    let nanos: u64 = timeout.parse().unwrap();
    assert!(
        nanos > 0 && nanos <= 50_000_000,
        "sent {sent:?} for a call with 50 ms left"
    );
}

#[tokio::test]
async fn calls_made_while_serving_get_no_more_than_the_time_left() {
    let seen = Seen::default();
    assert_eq!(serve_and_call_downstream(Some("50m"), &seen).await, "0");
    assert_sent_within_50ms(&seen);

    // A caller's deadline longer than the client's default does not raise it.
    let seen = Seen::default();
    assert_eq!(serve_and_call_downstream(Some("10S"), &seen).await, "0");
    assert_eq!(sent_timeouts(&seen), ["200000u"], "the default, 200 ms");

    // No deadline at all: the client's default.
    let seen = Seen::default();
    assert_eq!(serve_and_call_downstream(None, &seen).await, "0");
    assert_eq!(sent_timeouts(&seen), ["200000u"]);
}

#[tokio::test]
async fn a_call_whose_deadline_has_passed_sends_nothing_downstream() {
    let seen = Seen::default();
    // One nanosecond: gone by the time the handler calls out.
    let code = serve_and_call_downstream(Some("1n"), &seen).await;
    assert_eq!(code, (tonic::Code::DeadlineExceeded as i32).to_string());
    assert!(sent_timeouts(&seen).is_empty(), "nothing was sent");
}

/// `Get` is retried: 3 attempts, pauses up to 10 ms then 20 ms, on
/// UNAVAILABLE. `Put` is not.
static RETRIED: ServicePolicy = ServicePolicy {
    name: "test.v1.Retried",
    methods: &[
        MethodPolicy {
            retry: Some(keel_rpc::codegen::RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
                backoff_multiplier: 2.0,
                retryable_codes: &[tonic::Code::Unavailable],
            }),
            ..MethodPolicy::new(
                "Get",
                "/test.v1.Retried/Get",
                MethodKind::Unary,
                Access::Public,
            )
        },
        MethodPolicy::new(
            "Put",
            "/test.v1.Retried/Put",
            MethodKind::Unary,
            Access::Public,
        ),
    ],
    route: |path| match path {
        "/test.v1.Retried/Get" => Some(0),
        "/test.v1.Retried/Put" => Some(1),
        _ => None,
    },
};

/// How the scripted transport answers one attempt.
#[derive(Clone, Copy)]
enum Answer {
    /// `grpc-status` alone, in the headers, with an optional
    /// `grpc-retry-pushback-ms`.
    Status(&'static str, Option<&'static str>),
    /// A message, then `grpc-status` in the trailers: committed.
    Message(&'static str),
    /// No response: the transport failed.
    Refused,
}

/// A transport answering each attempt as `script` says (the last answer
/// again once it runs out), recording each request body it was sent.
fn scripted(
    script: &'static [Answer],
    bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Box<dyn std::error::Error + Send + Sync>,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<Body>| {
        let bodies = bodies.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut bodies = bodies.lock().unwrap();
                bodies.push(body);
                bodies.len()
            };
            let answer = script[(n - 1).min(script.len() - 1)];
            let response = match answer {
                Answer::Refused => return Err("connection refused".into()),
                Answer::Status(code, pushback) => {
                    let mut response = Response::new(Body::empty());
                    let headers = response.headers_mut();
                    headers.insert("grpc-status", HeaderValue::from_static(code));
                    if let Some(ms) = pushback {
                        headers.insert("grpc-retry-pushback-ms", HeaderValue::from_static(ms));
                    }
                    response
                }
                Answer::Message(code) => {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static(code));
                    let body =
                        http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x01x"))
                            .with_trailers(async move { Some(Ok(trailers)) });
                    Response::new(Body::new(body))
                }
            };
            Ok(response)
        }
    })
}

/// A call of `method` of `RETRIED` carrying one message, and the bodies
/// the transport was sent.
async fn retried_call(
    client: &Client,
    method: &str,
    script: &'static [Answer],
) -> (Result<(), tonic::Status>, Vec<bytes::Bytes>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let service = client.wrap(&RETRIED, scripted(script, bodies.clone()));
    let request = Request::builder()
        .uri(format!("http://things/test.v1.Retried/{method}"))
        .body(Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"\0\0\0\0\x03abc"),
        )))
        .unwrap();
    let result = call(service, request).await;
    let bodies = bodies.lock().unwrap().clone();
    (result, bodies)
}

fn sample(registry: &prometheus::Registry, line: &str) -> String {
    let text = render(registry);
    (text.lines())
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{line} in:\n{text}"))
}

#[tokio::test]
async fn a_retryable_failure_is_sent_again_and_the_call_counted_once() {
    use Answer::*;
    let registry = prometheus::Registry::new();
    let client = client(&registry);
    static SCRIPT: &[Answer] = &[Refused, Status("14", None), Status("0", None)];
    let (result, bodies) = retried_call(&client, "Get", SCRIPT).await;
    result.expect("the third attempt succeeds");
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|b| &b[..] == b"\0\0\0\0\x03abc"),
        "{bodies:?}"
    );
    let labels = r#"grpc_method="Get",grpc_service="test.v1.Retried""#;
    assert_eq!(
        sample(&registry, &format!("keel_client_retries_total{{{labels}}}")),
        "2"
    );
    let handled =
        format!(r#"grpc_client_handled_total{{grpc_code="OK",{labels},grpc_type="unary"}}"#);
    assert_eq!(sample(&registry, &handled), "1");
    let sent = format!(r#"grpc_client_msg_sent_total{{{labels},grpc_type="unary"}}"#);
    assert_eq!(sample(&registry, &sent), "1", "the message counted once");
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_at_what_is_not_retryable() {
    use Answer::*;
    let registry = prometheus::Registry::new();
    let client = client(&registry);
    static DOWN: &[Answer] = &[Status("14", None)];
    let (result, bodies) = retried_call(&client, "Get", DOWN).await;
    assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(bodies.len(), 3, "max_attempts");
    // Another code, a committed response, a method without a policy, and
    // a server saying not to: one attempt each.
    static NOT_FOUND: &[Answer] = &[Status("5", None)];
    static COMMITTED: &[Answer] = &[Message("14"), Status("0", None)];
    static PUSHED_AWAY: &[Answer] = &[Status("14", Some("-1")), Status("0", None)];
    for (method, script, code) in [
        ("Get", NOT_FOUND, tonic::Code::NotFound),
        ("Get", COMMITTED, tonic::Code::Unavailable),
        ("Put", DOWN, tonic::Code::Unavailable),
        ("Get", PUSHED_AWAY, tonic::Code::Unavailable),
    ] {
        let (result, bodies) = retried_call(&client, method, script).await;
        assert_eq!(result.unwrap_err().code(), code);
        assert_eq!(bodies.len(), 1, "{method} {code:?}");
    }
    let labels = r#"grpc_method="Get",grpc_service="test.v1.Retried""#;
    assert_eq!(
        sample(&registry, &format!("keel_client_retries_total{{{labels}}}")),
        "2"
    );
    assert!(!render(&registry).contains(r#"keel_client_retries_total{grpc_method="Put""#));
}

#[tokio::test]
async fn the_server_pushback_sets_the_retry_pause_and_the_deadline_bounds_all_attempts() {
    use Answer::*;
    let registry = prometheus::Registry::new();
    let client = client(&registry);
    static PUSHBACK: &[Answer] = &[Status("14", Some("80")), Status("0", None)];
    let started = std::time::Instant::now();
    let (result, bodies) = retried_call(&client, "Get", PUSHBACK).await;
    result.expect("the second attempt succeeds");
    assert_eq!(bodies.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
    // A pause that would end past the deadline (200 ms) is not taken.
    static TOO_LATE: &[Answer] = &[Status("14", Some("500")), Status("0", None)];
    let started = std::time::Instant::now();
    let (result, bodies) = retried_call(&client, "Get", TOO_LATE).await;
    assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(bodies.len(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

/// Serves one call of `POLICY` in `environment`, asking for `criticality`;
/// its handler calls downstream. The `keel-criticality` the downstream
/// call carried, if any.
async fn criticality_sent_downstream(
    environment: &str,
    criticality: Option<&'static str>,
) -> Option<String> {
    let config = Loader::new()
        .defaults_toml(&format!(
            "[service]\nenvironment = \"{environment}\"\n\
             [auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef-test\"\n"
        ))
        .load()
        .expect("config");
    let keel = keel_rpc::Keel::new(&config, &[&POLICY]).expect("keel");
    let seen = Seen::default();
    let server = keel.wrap(&POLICY, calling_downstream(&seen)).expect("wrap");
    let mut incoming = incoming(None);
    if let Some(criticality) = criticality {
        incoming
            .headers_mut()
            .insert("keel-criticality", HeaderValue::from_static(criticality));
    }
    let response = server.oneshot(incoming).await.expect("infallible");
    assert_eq!(response.headers()["grpc-status"], "0");
    let sent = seen.0.lock().unwrap();
    assert_eq!(sent.len(), 1);
    sent[0]
        .get("keel-criticality")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_criticality_of_the_call_served_goes_downstream() {
    // A trusted caller's (development trusts all) goes on.
    assert_eq!(
        criticality_sent_downstream("development", Some("SHEDDABLE")).await,
        Some("SHEDDABLE".to_owned())
    );
    // The default, CRITICAL, is sent as nothing: the callee's own holds.
    assert_eq!(criticality_sent_downstream("development", None).await, None);
    assert_eq!(
        criticality_sent_downstream("development", Some("CRITICAL")).await,
        None
    );
    // An untrusted caller's (production, no client certificate) is not
    // the call's, so it does not go on either.
    assert_eq!(
        criticality_sent_downstream("production", Some("SHEDDABLE")).await,
        None
    );
}
