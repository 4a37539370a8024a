//! `[telemetry]` and `[client]` configuration, the sampler it builds, and the
//! server span and log lines of calls through the pipeline, without a network.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
use keel_rpc::config::{Config, Loader, LogFormat, TelemetryConfig};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
use tower::ServiceExt;

/// The built-in defaults plus the secret they lack.
const BASE: &str = "[auth]\nhmac_secret = \"0123456789abcdef0123456789abcdef-test\"\n";

fn load(vars: &[(&str, &str)]) -> Result<Config, keel_rpc::config::ConfigError> {
    Loader::new()
        .defaults_toml(BASE)
        .env_from(vars.iter().copied())
        .load()
}

fn problems(vars: &[(&str, &str)]) -> Vec<String> {
    match load(vars) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn defaults_sample_everything_and_export_nothing() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config.telemetry, TelemetryConfig::default());
    assert_eq!(config.telemetry.sampling_ratio, 1.0);
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.log_format, LogFormat::Human);
    assert_eq!(config.telemetry.log_filter, "info");
    assert_eq!(config.telemetry.export_timeout, Duration::from_secs(10));
    assert_eq!(config.client.default_deadline, Duration::from_secs(10));
}

#[test]
fn telemetry_keys_come_from_toml_and_environment() {
    let config = Loader::new()
        .defaults_toml(BASE)
        .defaults_toml(
            r#"
            [telemetry]
            otlp_endpoint = "http://localhost:4317"
            sampling_ratio = 0.25
            log_format = "json"
            resource = { "deployment.environment" = "dev" }

            [client]
            default_deadline = "250ms"
            "#,
        )
        .env_from([
            ("KEEL_TELEMETRY__SAMPLING_RATIO", "0.01"),
            ("KEEL_TELEMETRY__LOG_FILTER", "info,keel_rpc=debug"),
            ("KEEL_TELEMETRY__EXPORT_TIMEOUT", "3s"),
        ])
        .load()
        .expect("valid");
    let t = &config.telemetry;
    assert_eq!(t.otlp_endpoint.as_deref(), Some("http://localhost:4317"));
    assert_eq!(t.sampling_ratio, 0.01);
    assert_eq!(t.log_format, LogFormat::Json);
    assert_eq!(t.log_filter, "info,keel_rpc=debug");
    assert_eq!(t.export_timeout, Duration::from_secs(3));
    assert_eq!(t.resource["deployment.environment"], "dev");
    assert_eq!(config.client.default_deadline, Duration::from_millis(250));

    // Whole numbers are ratios too.
    let config = load(&[("KEEL_TELEMETRY__SAMPLING_RATIO", "0")]).expect("valid");
    assert_eq!(config.telemetry.sampling_ratio, 0.0);
    let config = load(&[("KEEL_TELEMETRY__SAMPLING_RATIO", "1")]).expect("valid");
    assert_eq!(config.telemetry.sampling_ratio, 1.0);
}

#[test]
fn sampling_ratio_must_be_a_probability() {
    for bad in ["-0.1", "1.5", "2"] {
        let problems = problems(&[("KEEL_TELEMETRY__SAMPLING_RATIO", bad)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("telemetry.sampling_ratio: ")
                && problems[0].contains("is out of range; between 0.0 and 1.0")
                && problems[0].contains("KEEL_TELEMETRY__SAMPLING_RATIO"),
            "{bad}: {problems:?}"
        );
    }
    let problems = problems(&[("KEEL_TELEMETRY__SAMPLING_RATIO", "often")]);
    assert!(
        problems[0].starts_with("telemetry.sampling_ratio: invalid type"),
        "{problems:?}"
    );
    let nan = Loader::new()
        .defaults_toml(BASE)
        .defaults_toml("[telemetry]\nsampling_ratio = nan\n")
        .load()
        .expect_err("NaN is no probability");
    assert!(
        nan.problems()[0].starts_with("telemetry.sampling_ratio: NaN is out of range"),
        "{nan}"
    );
}

#[test]
fn every_telemetry_and_client_problem_is_reported_at_once() {
    let all = problems(&[
        ("KEEL_TELEMETRY__OTLP_ENDPOINT", "ftp://collector:4317"),
        ("KEEL_TELEMETRY__SAMPLING_RATIO", "3"),
        ("KEEL_TELEMETRY__EXPORT_TIMEOUT", "0s"),
        ("KEEL_TELEMETRY__LOG_FORMAT", "xml"),
        ("KEEL_TELEMETRY__LOG_FILTER", "info,keel_rpc=loud"),
        ("KEEL_CLIENT__DEFAULT_DEADLINE", "2h"),
    ]);
    let keys: Vec<&str> = all
        .iter()
        .map(|p| p.split(':').next().unwrap_or_default())
        .collect();
    for key in [
        "telemetry.otlp_endpoint",
        "telemetry.sampling_ratio",
        "telemetry.export_timeout",
        "telemetry.log_format",
        "telemetry.log_filter",
        "client.default_deadline",
    ] {
        assert!(keys.contains(&key), "{key} missing from {all:#?}");
    }
    assert_eq!(all.len(), 6, "{all:#?}");

    for (endpoint, says) in [
        ("localhost:4317", "must start with http://"),
        ("", "is empty"),
        ("http://", "not a URL"),
    ] {
        let problems = problems(&[("KEEL_TELEMETRY__OTLP_ENDPOINT", endpoint)]);
        assert!(problems[0].contains(says), "{endpoint:?}: {problems:?}");
    }
    let error = Loader::new()
        .defaults_toml(BASE)
        .defaults_toml("[telemetry.resource]\n\"service.name\" = \"x\"\n")
        .load()
        .expect_err("service.name belongs to [service]");
    assert!(
        error.problems()[0].starts_with("telemetry.resource: service.name"),
        "{error}"
    );
}

fn settings(ratio: f64) -> TelemetryConfig {
    TelemetryConfig {
        sampling_ratio: ratio,
        ..TelemetryConfig::default()
    }
}

fn decide(ratio: f64, parent: Option<TraceFlags>, trace_id: TraceId) -> SamplingDecision {
    let parent = parent.map(|flags| {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from(1),
            flags,
            true,
            TraceState::default(),
        ))
    });
    keel_rpc::telemetry::sampler(&settings(ratio))
        .should_sample(
            parent.as_ref(),
            trace_id,
            "test.v1.Things/Read",
            &SpanKind::Server,
            &[],
            &[],
        )
        .decision
}

#[test]
fn the_sampler_follows_the_parent_then_the_ratio() {
    use SamplingDecision::{Drop, RecordAndSample};
    let any = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
    // A parent decides, whatever the ratio.
    assert_eq!(decide(0.0, Some(TraceFlags::SAMPLED), any), RecordAndSample);
    assert_eq!(decide(1.0, Some(TraceFlags::default()), any), Drop);
    // Without one, the ratio does.
    assert_eq!(decide(0.0, None, any), Drop);
    assert_eq!(decide(1.0, None, any), RecordAndSample);
    // At 1%, about 1% of random trace ids (the ratio sampler reads their low 64 bits).
    let sampled = (0..10_000u128)
        .map(|i| TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
        .filter(|id| decide(0.01, None, *id) == RecordAndSample)
        .count();
    assert!((50..=150).contains(&sampled), "{sampled} of 10000 sampled");
}

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

/// Telemetry at sampling ratio 0 whose log lines, in `format`, go to memory.
struct CapturedLogs {
    config: Config,
    logs: Arc<Mutex<Vec<u8>>>,
    dispatch: tracing::Dispatch,
    _guard: keel_rpc::telemetry::TelemetryGuard,
}

impl CapturedLogs {
    fn new(format: &str) -> Self {
        let config = load(&[
            ("KEEL_TELEMETRY__LOG_FORMAT", format),
            ("KEEL_TELEMETRY__SAMPLING_RATIO", "0"),
        ])
        .expect("valid");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let (dispatch, _guard) = keel_rpc::telemetry::builder(&config)
            .writer(move || Writer(writer.clone()))
            .build()
            .expect("telemetry");
        CapturedLogs {
            config,
            logs,
            dispatch,
            _guard,
        }
    }

    fn text(&self) -> String {
        String::from_utf8(self.logs.lock().unwrap().clone()).expect("UTF-8")
    }
}

/// The request body the pipeline hands the server.
type Counted = keel_rpc::pipeline::CountingBody<Empty<bytes::Bytes>>;

/// `server` behind the pipeline of `POLICY` (a public method).
fn pipeline<S>(server: S) -> keel_rpc::Pipeline<S> {
    let config = load(&[]).expect("valid");
    let keel = keel_rpc::Keel::new(&config, &[&POLICY]).expect("runtime");
    keel.wrap(&POLICY, server).expect("declared")
}

/// Log lines written by the handler of a call through the pipeline.
async fn handler_logs(format: &str, traceparent: Option<&str>) -> String {
    let captured = CapturedLogs::new(format);
    let _default = tracing::dispatcher::set_default(&captured.dispatch);

    let service = pipeline(tower::service_fn(|_: http::Request<Counted>| async {
        tracing::info!(answer = 42, "handling");
        let mut response = http::Response::new(Empty::<bytes::Bytes>::new());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        Ok::<_, Infallible>(response)
    }));
    let mut request = http::Request::builder().uri("http://localhost/test.v1.Things/Read");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = service.oneshot(request).await.expect("infallible");
    response.into_body().collect().await.expect("body");
    tracing::info!("outside");
    captured.text()
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "current_thread")]
async fn json_log_lines_carry_the_trace_of_the_call() {
    let text = handler_logs("json", Some(PARENT)).await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let inside = &lines[0];
    assert_eq!(inside["message"], "handling", "{text}");
    assert_eq!(inside["fields"]["answer"], 42, "{text}");
    assert_eq!(
        inside["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{text}"
    );
    let span_id = inside["span_id"].as_str().expect("span_id");
    assert_eq!(span_id.len(), 16, "{text}");
    assert_ne!(span_id, "00f067aa0ba902b7", "the server span's own id");
    assert_eq!(lines[1]["message"], "outside", "{text}");
    assert!(lines[1].get("trace_id").is_none(), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn human_log_lines_carry_the_trace_of_the_call() {
    // Without a parent, a new (unsampled, at ratio 0) trace still has ids.
    let text = handler_logs("human", None).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(" INFO ")
            && lines[0].contains("telemetry: handling answer=42 trace_id=")
            && lines[0].contains(" span_id="),
        "{text}"
    );
    assert!(!lines[1].contains("trace_id="), "{text}");
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the span a handler runs in is sampled, for `calls` root calls
/// (no `traceparent`) at `ratio`.
async fn sampled_roots(ratio: &str, calls: usize) -> usize {
    let config = load(&[("KEEL_TELEMETRY__SAMPLING_RATIO", ratio)]).expect("valid");
    let (dispatch, _guard) = keel_rpc::telemetry::builder(&config)
        .writer(std::io::sink)
        .build()
        .expect("telemetry");
    let _default = tracing::dispatcher::set_default(&dispatch);
    let service = pipeline(tower::service_fn(|_: http::Request<Counted>| async {
        let (sc, recording) = opentelemetry::Context::map_current(|cx| {
            (cx.span().span_context().clone(), cx.span().is_recording())
        });
        assert!(sc.is_valid() && !sc.is_remote(), "{sc:?}");
        // No exporter is configured: nothing is recorded, sampled or not.
        assert!(!recording, "a span recorded for no exporter");
        let mut response = http::Response::new(Empty::<bytes::Bytes>::new());
        if sc.is_sampled() {
            response
                .headers_mut()
                .insert("x-sampled", http::HeaderValue::from_static("1"));
        }
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        Ok::<_, Infallible>(response)
    }));
    let mut sampled = 0;
    for _ in 0..calls {
        let request = http::Request::builder()
            .uri("http://localhost/test.v1.Things/Read")
            .body(Empty::new())
            .expect("request");
        let response = service.clone().oneshot(request).await.expect("infallible");
        sampled += usize::from(response.headers().contains_key("x-sampled"));
    }
    sampled
}

#[tokio::test(flavor = "current_thread")]
async fn root_spans_are_sampled_at_the_configured_ratio_and_recorded_only_for_an_exporter() {
    assert_eq!(sampled_roots("0", 200).await, 0);
    assert_eq!(sampled_roots("1", 200).await, 200);
    // Decided once per trace: at 0.5 about half, not a quarter.
    let half = sampled_roots("0.5", 1000).await;
    assert!((400..=600).contains(&half), "{half} of 1000 sampled");
}

static STREAMING_POLICY: ServicePolicy = ServicePolicy {
    name: "test.v1.Feed",
    methods: &[MethodPolicy::new(
        "Watch",
        "/test.v1.Feed/Watch",
        MethodKind::ServerStreaming,
        Access::Public,
    )],
    route: |path| match path {
        "/test.v1.Feed/Watch" => Some(0),
        _ => None,
    },
};

/// A server stream whose producer logs as it is polled: one empty message,
/// then `grpc-status: 0` trailers.
#[derive(Default)]
struct LoggingStream(u8);

impl http_body::Body for LoggingStream {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        self.0 += 1;
        std::task::Poll::Ready(match self.0 {
            1 => {
                tracing::info!("producing");
                Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(&[
                    0, 0, 0, 0, 0,
                ]))))
            }
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_streamed_response_is_produced_inside_the_span_of_its_call() {
    let captured = CapturedLogs::new("json");
    let _default = tracing::dispatcher::set_default(&captured.dispatch);

    let keel = keel_rpc::Keel::new(&captured.config, &[&STREAMING_POLICY]).expect("keel");
    let handler = tower::service_fn(|_: http::Request<_>| async {
        Ok::<_, Infallible>(http::Response::new(LoggingStream::default()))
    });
    let service = keel.wrap(&STREAMING_POLICY, handler).expect("wrap");
    let request = http::Request::builder()
        .uri("http://localhost/test.v1.Feed/Watch")
        .header("traceparent", PARENT)
        .body(tonic::body::Body::empty())
        .expect("request");
    let response = service.oneshot(request).await.expect("infallible");
    // The stream is polled after the handler's future is done, as hyper does.
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(body.trailers().expect("trailers")["grpc-status"], "0");

    let text = captured.text();
    let line: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a log line")).expect("JSON line");
    assert_eq!(line["message"], "producing", "{text}");
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{text}"
    );
}
