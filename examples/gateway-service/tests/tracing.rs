//! One request traced across two Keel services, checked against a real OTLP
//! exporter.
//!
//! An in-process OTLP collector (a tonic `TraceService` built from the
//! opentelemetry-proto types) listens on 127.0.0.1. user-service and the
//! gateway each run on their own thread, with their own runtime and their own
//! `keel_rpc::telemetry` subscriber (so each exports under its own service name),
//! on ephemeral 127.0.0.1 ports, with the exporter pointed at the collector
//! and `sampling_ratio = 0`: only the caller's sampled `traceparent` makes
//! their spans sampled (parent-based sampling).
//!
//! The test calls the gateway three times with a `traceparent` of its own
//! (the "client span"): a profile that exists, one that does not, and one
//! after user-service has stopped. It then checks the exported spans: one
//! trace per call, parent links client → gateway server → gateway client →
//! user-service server, names `package.Service/Method`, the `rpc.*`
//! attributes, and the error statuses; the gateway's JSON log line carrying
//! the trace id; and the gateway's client metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_service::gateway_v1::GetProfileRequest;
use gateway_service::gateway_v1::profile_service_client::ProfileServiceClient;
use keel_rpc::config::{Config, Loader};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::Value as Json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use user_service::user_v1::CreateUserRequest;
use user_service::user_v1::user_service_client::UserServiceClient;

/// The whole test's time bound.
const LIMIT: Duration = Duration::from_secs(60);

/// Span ids the test's own "client span" uses as the parent of each call.
const CALLS: [(&str, &str); 4] = [
    ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ("5cf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"),
    ("6df92f3577b34da6a3ce929d0e0e4738", "20f067aa0ba902b9"),
    // Over REST: `GET /v1/profiles/{user_id}` with a `traceparent` header.
    ("7ef92f3577b34da6a3ce929d0e0e4739", "30f067aa0ba902ba"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_two_services() {
    tokio::time::timeout(LIMIT, scenario())
        .await
        .expect("the scenario finishes in time");
}

async fn scenario() {
    let collector = Collector::start().await;

    // user-service, exporting to the collector.
    let users_config = loader(
        (
            user_service::DEFAULT_CONFIG,
            user_service::DEVELOPMENT_CONFIG,
        ),
        &collector.endpoint(),
        &[],
    )
    .load()
    .expect("valid configuration");
    let token = keel_rpc::auth::mint_access_token(
        &users_config.auth,
        "ada",
        &["users:read", "users:write"],
        Duration::from_secs(600),
    )
    .expect("mint a token");
    let user_store = user_service::Users::in_memory()
        .await
        .expect("in-memory user store");
    let users = Service::start(users_config, None, move |keel, config| {
        Ok(keel
            .server(config)
            .add_service(user_service::user_v1::user_service(
                user_store.clone(),
                keel,
            )?))
    })
    .await;

    // The gateway, calling user-service, logging JSON into `logs`.
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let upstream = format!("http://{}", users.addr);
    let gateway_config = gateway_service::Settings::from_loader(&loader(
        (
            gateway_service::DEFAULT_CONFIG,
            gateway_service::DEVELOPMENT_CONFIG,
        ),
        &collector.endpoint(),
        &[
            ("KEEL_UPSTREAM__USER_SERVICE", upstream.as_str()),
            ("KEEL_TELEMETRY__LOG_FORMAT", "json"),
        ],
    ))
    .expect("valid configuration");
    let upstream = gateway_config.app.upstream.clone();
    let gateway = Service::start(
        gateway_config.keel(),
        Some(logs.clone()),
        move |keel, config| gateway_service::server(keel, config, &upstream),
    )
    .await;

    // A user to read.
    let mut users_client = UserServiceClient::new(channel(users.addr).await);
    let ada = users_client
        .create_user(authorized(
            CreateUserRequest {
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            &token,
            None,
        ))
        .await
        .expect("create a user")
        .into_inner();

    let mut profiles = ProfileServiceClient::new(channel(gateway.addr).await);
    let call = |user_id: &str, parent: (&str, &str)| {
        authorized(
            GetProfileRequest {
                user_id: user_id.into(),
            },
            &token,
            Some(parent),
        )
    };

    // 1. OK.
    let profile = profiles
        .get_profile(call(&ada.id, CALLS[0]))
        .await
        .expect("GetProfile")
        .into_inner();
    assert_eq!(profile.display_name, "Ada");
    // 2. NOT_FOUND from user-service, passed on.
    let missing = profiles
        .get_profile(call("u-999999", CALLS[1]))
        .await
        .expect_err("no such user");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // 2b. The same method over REST: the same trace shape, continued from
    // the request's `traceparent`.
    let rest = rest_get(
        gateway.addr,
        &format!("/v1/profiles/{}", ada.id),
        &token,
        CALLS[3],
    )
    .await;
    assert_eq!(rest["displayName"], "Ada", "{rest}");
    // 3. user-service gone: UNAVAILABLE.
    users.stop().await;
    let gone = profiles
        .get_profile(call(&ada.id, CALLS[2]))
        .await
        .expect_err("user-service is down");
    assert_eq!(gone.code(), Code::Unavailable, "{gone:?}");
    let client_metrics = gateway.stop().await;

    let spans = collector.spans();
    check_ok_trace(&spans, CALLS[0]);
    check_not_found_trace(&spans, CALLS[1]);
    check_unavailable_trace(&spans, CALLS[2]);
    check_ok_trace(&spans, CALLS[3]);
    check_logs(&logs, &spans, CALLS[0]);
    check_client_metrics(&client_metrics);
}

/// A call that succeeded: three spans, linked, all `OK`.
fn check_ok_trace(spans: &[Span], (trace_id, parent): (&str, &str)) {
    let trace = Trace::of(spans, trace_id, 3);
    let gateway = trace.child_of(parent);
    gateway.check(
        "gateway-service",
        SpanKind::Server,
        "gateway.v1.ProfileService",
        "GetProfile",
        0,
    );
    assert_eq!(gateway.status, StatusCode::Unset, "{gateway:#?}");

    let client = trace.child_of(&gateway.span_id);
    client.check(
        "gateway-service",
        SpanKind::Client,
        "user.v1.UserService",
        "GetUser",
        0,
    );
    assert_eq!(client.status, StatusCode::Unset, "{client:#?}");

    let users = trace.child_of(&client.span_id);
    users.check(
        "user-service",
        SpanKind::Server,
        "user.v1.UserService",
        "GetUser",
        0,
    );
    assert_eq!(users.status, StatusCode::Unset, "{users:#?}");
    // Each span lies within its parent.
    assert!(gateway.start <= client.start && client.end <= gateway.end);
    assert!(client.start <= users.start && users.end <= client.end);
}

/// NOT_FOUND: a caller's mistake. The client span fails (every non-OK code
/// fails a client span); the server spans record the code without failing.
fn check_not_found_trace(spans: &[Span], (trace_id, parent): (&str, &str)) {
    let trace = Trace::of(spans, trace_id, 3);
    let gateway = trace.child_of(parent);
    gateway.check(
        "gateway-service",
        SpanKind::Server,
        "gateway.v1.ProfileService",
        "GetProfile",
        5,
    );
    assert_eq!(gateway.status, StatusCode::Unset, "{gateway:#?}");
    let client = trace.child_of(&gateway.span_id);
    client.check(
        "gateway-service",
        SpanKind::Client,
        "user.v1.UserService",
        "GetUser",
        5,
    );
    assert_eq!(client.status, StatusCode::Error, "{client:#?}");
    assert!(client.status_message.starts_with("NotFound"), "{client:#?}");
    let users = trace.child_of(&client.span_id);
    users.check(
        "user-service",
        SpanKind::Server,
        "user.v1.UserService",
        "GetUser",
        5,
    );
    assert_eq!(users.status, StatusCode::Unset, "{users:#?}");
}

/// UNAVAILABLE: user-service is down, so its span is missing, and both the
/// gateway's spans fail (UNAVAILABLE is a server failure too).
fn check_unavailable_trace(spans: &[Span], (trace_id, parent): (&str, &str)) {
    let trace = Trace::of(spans, trace_id, 2);
    let gateway = trace.child_of(parent);
    gateway.check(
        "gateway-service",
        SpanKind::Server,
        "gateway.v1.ProfileService",
        "GetProfile",
        14,
    );
    assert_eq!(gateway.status, StatusCode::Error, "{gateway:#?}");
    assert!(
        gateway
            .status_message
            .starts_with("Unavailable: user-service"),
        "{gateway:#?}"
    );
    let client = trace.child_of(&gateway.span_id);
    client.check(
        "gateway-service",
        SpanKind::Client,
        "user.v1.UserService",
        "GetUser",
        14,
    );
    assert_eq!(client.status, StatusCode::Error, "{client:#?}");
}

/// The handler's log line is JSON and names the trace and the server span.
fn check_logs(logs: &Mutex<Vec<u8>>, spans: &[Span], (trace_id, parent): (&str, &str)) {
    let gateway = Trace::of(spans, trace_id, 3).child_of(parent).clone();
    let text = String::from_utf8(logs.lock().unwrap().clone()).expect("UTF-8 logs");
    let lines: Vec<Json> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["message"] == "reading the user from user-service" && l["trace_id"] == trace_id)
        .unwrap_or_else(|| panic!("no log line of trace {trace_id} in:\n{text}"));
    assert_eq!(line["span_id"], gateway.span_id.as_str(), "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["target"], "gateway_service::profiles", "{line}");
    assert_eq!(line["fields"]["caller"], "ada", "{line}");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Lines outside any span carry no ids.
    assert!(
        lines
            .iter()
            .any(|l| l.get("trace_id").is_none() && l["message"] == "serving gRPC"),
        "{text}"
    );
}

/// The gateway's client metrics saw the three calls.
fn check_client_metrics(text: &str) {
    let labels = r#"grpc_method="GetUser",grpc_service="user.v1.UserService",grpc_type="unary""#;
    for expected in [
        // Four calls: OK, NotFound, OK over REST, Unavailable.
        format!("grpc_client_started_total{{{labels}}} 4"),
        format!("grpc_client_handled_total{{grpc_code=\"OK\",{labels}}} 2"),
        format!("grpc_client_handled_total{{grpc_code=\"NotFound\",{labels}}} 1"),
        format!("grpc_client_handled_total{{grpc_code=\"Unavailable\",{labels}}} 1"),
        // The last request never reached a connection, but GetUser is
        // retried (`idempotency_level`), so its one message is counted as
        // the client layer takes it, once, as go-grpc-prometheus counts it.
        format!("grpc_client_msg_sent_total{{{labels}}} 4"),
        format!("grpc_client_msg_received_total{{{labels}}} 2"),
        format!("grpc_client_handling_seconds_count{{{labels}}} 4"),
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing `{expected}` in:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Spans as exported

/// One exported span, flattened with its resource's service name.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: SpanKind,
    attributes: BTreeMap<String, Value>,
    status: StatusCode,
    status_message: String,
    start: u64,
    end: u64,
}

impl Span {
    fn check(&self, service: &str, kind: SpanKind, rpc_service: &str, method: &str, code: i64) {
        assert_eq!(self.service, service, "{self:#?}");
        assert_eq!(self.kind, kind, "{self:#?}");
        assert_eq!(self.name, format!("{rpc_service}/{method}"), "{self:#?}");
        let attr = |key: &str| self.attributes.get(key).cloned();
        assert_eq!(
            attr("rpc.system"),
            Some(Value::StringValue("grpc".into())),
            "{self:#?}"
        );
        assert_eq!(
            attr("rpc.service"),
            Some(Value::StringValue(rpc_service.into())),
            "{self:#?}"
        );
        assert_eq!(
            attr("rpc.method"),
            Some(Value::StringValue(method.into())),
            "{self:#?}"
        );
        assert_eq!(
            attr("rpc.grpc.status_code"),
            Some(Value::IntValue(code)),
            "{self:#?}"
        );
    }
}

/// The spans of one trace.
struct Trace<'a> {
    spans: Vec<&'a Span>,
}

impl<'a> Trace<'a> {
    /// The trace `trace_id`, which must have exactly `count` spans.
    fn of(spans: &'a [Span], trace_id: &str, count: usize) -> Self {
        let spans: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        assert_eq!(
            spans.len(),
            count,
            "trace {trace_id} should have {count} spans: {spans:#?}"
        );
        Trace { spans }
    }

    /// The one span whose parent is `parent`.
    fn child_of(&self, parent: &str) -> &'a Span {
        let children: Vec<&&Span> = self
            .spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        assert_eq!(children.len(), 1, "children of {parent}: {:#?}", self.spans);
        children[0]
    }
}

// ---------------------------------------------------------------------------
// The collector

/// An OTLP/gRPC trace collector on 127.0.0.1 that keeps what it receives.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> Collector {
        Collector::start_with(tonic::transport::Server::builder()).await
    }

    /// A collector serving TLS with `identity` (tonic's own TLS).
    async fn start_tls(identity: tonic::transport::Identity) -> Collector {
        let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        let builder = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("TLS");
        Collector::start_with(builder).await
    }

    async fn start_with(mut builder: tonic::transport::Server) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let sink = Sink::default();
        let received = sink.0.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            builder
                .add_service(TraceServiceServer::new(sink))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Collector {
            addr,
            received,
            _stop: stop,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.clone());
                let Some(Value::StringValue(service)) = service else {
                    panic!("a resource without service.name: {resource_spans:?}");
                };
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        let status = span.status.clone().unwrap_or_default();
                        spans.push(Span {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                            attributes: span
                                .attributes
                                .iter()
                                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
                                .collect(),
                            status: StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
                            status_message: status.message,
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                        });
                    }
                }
            }
        }
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Services in-process

/// A Keel service on its own thread, with its own current-thread runtime and
/// its own telemetry subscriber.
struct Service {
    addr: SocketAddr,
    stop: mpsc::Sender<()>,
    done: oneshot::Receiver<String>,
}

impl Service {
    /// Starts the server `make` builds, on 127.0.0.1, with `config`'s
    /// telemetry (logs into `logs` when given, else nowhere).
    async fn start(
        config: Config,
        logs: Option<Arc<Mutex<Vec<u8>>>>,
        make: impl FnOnce(&keel_rpc::Keel, &Config) -> Result<keel_rpc::Server, keel_rpc::Error>
        + Send
        + 'static,
    ) -> Service {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop, stop_rx) = mpsc::channel(2);
        let (done_tx, done) = oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let logs = logs.unwrap_or_default();
                let (dispatch, mut telemetry) = keel_rpc::telemetry::builder(&config)
                    .writer(move || LogWriter(logs.clone()))
                    .build()
                    .expect("telemetry");
                let _default = tracing::dispatcher::set_default(&dispatch);
                let keel = keel_rpc::Keel::new(&config, &services(&config)).expect("keel");
                let server = make(&keel, &config).expect("server");
                let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(grpc.local_addr().expect("address")).ok();
                let listeners = keel_rpc::serve::Listeners {
                    grpc,
                    metrics: None,
                };
                server
                    .serve_on(listeners, ReceiverStream::new(stop_rx))
                    .await
                    .expect("serve");
                telemetry.shutdown().await.expect("flush the spans");
                done_tx.send(keel.metrics().render()).ok();
            });
        });
        let addr = addr_rx.await.expect("the service starts");
        Service { addr, stop, done }
    }

    /// Shuts the service down (which flushes its spans); returns its metrics.
    async fn stop(self) -> String {
        self.stop.send(()).await.expect("signal the service");
        self.done.await.expect("the service stops cleanly")
    }
}

/// Appends log lines to a shared buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The policies a service's Keel needs, by its name.
fn services(config: &Config) -> Vec<&'static keel_rpc::codegen::ServicePolicy> {
    match config.service.name.as_str() {
        "user-service" => user_service::SERVICES.to_vec(),
        _ => gateway_service::SERVICES.to_vec(),
    }
}

/// An example's configuration (its embedded defaults and development
/// credentials, in development), exporting to `endpoint`, sampling only what
/// a caller samples, shutting down at once.
fn loader((defaults, development): (&str, &str), endpoint: &str, extra: &[(&str, &str)]) -> Loader {
    let mut vars = vec![
        ("KEEL_SERVICE__ENVIRONMENT", "development"),
        ("KEEL_TELEMETRY__OTLP_ENDPOINT", endpoint),
        ("KEEL_TELEMETRY__SAMPLING_RATIO", "0"),
        ("KEEL_TELEMETRY__LOG_FILTER", "info"),
        ("KEEL_SERVER__LAME_DUCK", "0s"),
        ("KEEL_SERVER__DRAIN_TIMEOUT", "2s"),
        ("KEEL_METRICS__ENABLED", "false"),
    ];
    vars.extend_from_slice(extra);
    Loader::new()
        .defaults_toml(defaults)
        .development_toml(development)
        .env_from(vars)
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// `message` with a bearer token and, when given, a sampled `traceparent`.
/// `GET path` over HTTP/1.1 with the token and a `traceparent`, as JSON.
async fn rest_get(
    addr: SocketAddr,
    path: &str,
    token: &str,
    (trace_id, span_id): (&str, &str),
) -> Json {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("traceparent", format!("00-{trace_id}-{span_id}-01"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request");
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

fn authorized<T>(message: T, token: &str, parent: Option<(&str, &str)>) -> Request<T> {
    let mut request = Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("header value");
    request.metadata_mut().insert("authorization", bearer);
    if let Some((trace_id, span_id)) = parent {
        let traceparent: MetadataValue<_> = format!("00-{trace_id}-{span_id}-01")
            .parse()
            .expect("header value");
        request.metadata_mut().insert("traceparent", traceparent);
    }
    request
}

/// `telemetry.otlp_endpoint = "https://…"`: spans go to the collector over
/// TLS, its certificate checked against `client.tls.ca_file`; a collector
/// whose certificate that CA did not issue gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_tls_to_a_collector_the_configured_ca_vouches_for() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let identity = |ca: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, ca)
            .unwrap();
        tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem())
    };
    let trusted = ca("collector CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, trusted.pem()).unwrap();

    let export = |collector: &Collector, span: &'static str| {
        let endpoint = format!("https://{}", collector.addr);
        let ca_file = ca_file.display().to_string();
        async move {
            let config = Loader::new()
                .defaults_toml("[service]\nname = \"tls-export\"\n")
                .env_from([
                    (
                        "KEEL_AUTH__HMAC_SECRET",
                        "a-secret-of-this-test-0123456789abcdef",
                    ),
                    ("KEEL_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
                    ("KEEL_TELEMETRY__EXPORT_TIMEOUT", "3s"),
                    ("KEEL_CLIENT__TLS__CA_FILE", ca_file.as_str()),
                ])
                .load()
                .expect("configuration");
            let (dispatch, guard) = keel_rpc::telemetry::builder(&config)
                .build()
                .expect("telemetry");
            tracing::dispatcher::with_default(&dispatch, || {
                let _span = tracing::info_span!("exported", name = span).entered();
            });
            let _ = guard.flush().await;
        }
    };
    let collector = Collector::start_tls(identity(&trusted)).await;
    export(&collector, "over-tls").await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].service, "tls-export");

    let impostor = Collector::start_tls(identity(&ca("another CA"))).await;
    export(&impostor, "refused").await;
    assert!(
        impostor.spans().is_empty(),
        "an untrusted collector got spans"
    );
}
