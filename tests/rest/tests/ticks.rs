//! What a REST client sees when a call goes wrong after it started, over a
//! real socket with a real HTTP/1.1 client: a server stream that fails or
//! panics midway keeps the messages already sent and ends with the status
//! (an NDJSON `error` line, an SSE `error` event); a `timeout` query
//! parameter or header is the call's deadline, as `grpc-timeout` is; every
//! call is counted under its gRPC method with `protocol="rest"`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keel_rpc::testing::TestServer;
use rest_tests::Handler;
use rest_tests::ticks_v1::{self, WaitRequest};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[service]
name = "rest-tests"

[auth]
algorithm = "HS256"
hmac_secret = "rest-tests-secret-every-method-is-public-anyway"
"#;

struct Served {
    server: TestServer,
    keel: keel_rpc::Keel,
}

async fn serve() -> Served {
    let config = keel_rpc::config::Loader::new()
        .defaults_toml(CONFIG)
        .load()
        .unwrap();
    let keel = keel_rpc::Keel::new(&config, &[&ticks_v1::TICKER_POLICY]).unwrap();
    let service = ticks_v1::ticker(Handler, &keel).unwrap();
    let server = TestServer::start(keel.server(&config).add_service(service))
        .await
        .unwrap();
    Served { server, keel }
}

/// `GET path` with `headers`: the status, the content type and the body.
async fn get(served: &Served, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::get(format!("http://{}{path}", served.server.addr()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("an HTTP/1.1 answer");
    let status = response.status().as_u16();
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The lines of an NDJSON answer, as JSON.
fn ndjson(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The value of the sample `line` (name and labels) in the server's metrics.
fn sample(keel: &keel_rpc::Keel, line: &str) -> u64 {
    let text = keel.metrics().render();
    (text.lines())
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in:\n{text}"))
}

fn handled(method: &str, code: &str, kind: &str, protocol: &str) -> String {
    format!(
        r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",grpc_service="ticks.v1.Ticker",grpc_type="{kind}",protocol="{protocol}"}}"#
    )
}

#[tokio::test]
async fn a_stream_failing_midway_keeps_what_was_sent_and_ends_with_its_status() {
    let served = serve().await;

    // 3 ticks, then UNAVAILABLE (14).
    let (status, content_type, body) = get(&served, "/v1/ticks?count=3&failCode=14", &[]).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines = ndjson(&body);
    assert_eq!(
        lines[..3],
        [
            json!({"result": {"n": 1}}),
            json!({"result": {"n": 2}}),
            json!({"result": {"n": 3}})
        ],
        "{body}"
    );
    assert_eq!(lines.len(), 4, "{body}");
    assert_eq!(lines[3]["error"]["code"], 14, "{body}");
    assert_eq!(lines[3]["error"]["message"], "failed after 3 ticks");

    // The same as Server-Sent Events: the messages, then an `error` event.
    let (status, content_type, body) = get(
        &served,
        "/v1/ticks?count=2&fail_code=9",
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(events[0], r#"data: {"n":1}"#);
    assert_eq!(events[1], r#"data: {"n":2}"#);
    let error = events[2]
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("an error event: {body}"));
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(error["code"], 9, "FAILED_PRECONDITION: {error}");

    // A stream that ends well has no error line.
    let (_, _, body) = get(&served, "/v1/ticks?count=2", &[]).await;
    assert_eq!(ndjson(&body).len(), 2, "{body}");

    // Counted once each, under the gRPC method, as REST calls.
    let keel = &served.keel;
    let stream = "server_stream";
    assert_eq!(
        sample(keel, &handled("Tick", "Unavailable", stream, "rest")),
        1
    );
    assert_eq!(
        sample(keel, &handled("Tick", "FailedPrecondition", stream, "rest")),
        1
    );
    assert_eq!(sample(keel, &handled("Tick", "OK", stream, "rest")), 1);
    assert_eq!(
        sample(keel, &handled("Tick", "Unavailable", stream, "grpc")),
        0
    );
    let sent = r#"grpc_server_msg_sent_total{grpc_method="Tick",grpc_service="ticks.v1.Ticker",grpc_type="server_stream",protocol="rest"}"#;
    assert_eq!(sample(keel, sent), 7);
    served.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_panicking_midway_ends_internal_and_the_server_carries_on() {
    let served = serve().await;
    let (status, _, body) = get(&served, "/v1/ticks?count=5&panicAfter=2&intervalMs=20", &[]).await;
    assert_eq!(status, 200);
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 3, "two ticks, then the error: {body}");
    assert_eq!(lines[1], json!({"result": {"n": 2}}));
    assert_eq!(lines[2]["error"]["code"], 13, "INTERNAL: {body}");
    assert!(
        !body.contains("panicked"),
        "the panic's message is logged, not sent: {body}"
    );
    let (_, _, body) = get(&served, "/v1/ticks?count=1", &[]).await;
    assert_eq!(ndjson(&body).len(), 1, "{body}");
    let internal = handled("Tick", "Internal", "server_stream", "rest");
    assert_eq!(sample(&served.keel, &internal), 1);
    served.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_timeout_parameter_or_header_is_the_calls_deadline() {
    let served = serve().await;

    // Within its deadline: answered.
    let (status, _, body) = get(&served, "/v1/wait/10?timeout=5s", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"waitedMs":10}"#));

    // Past it: 504 with DEADLINE_EXCEEDED, from the query, the header, or
    // `grpc-timeout` when it is the shorter.
    for (path, headers) in [
        ("/v1/wait/5000?timeout=200ms", vec![]),
        ("/v1/wait/5000", vec![("timeout", "0.2")]),
        ("/v1/wait/5000?timeout=1h", vec![("grpc-timeout", "200m")]),
    ] {
        let started = Instant::now();
        let (status, content_type, body) = get(&served, path, &headers).await;
        assert_eq!(
            (status, content_type.as_str()),
            (504, "application/json"),
            "{path} {headers:?}: {body}"
        );
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["code"], 4, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "ended by the deadline, not the handler: {:?}",
            started.elapsed()
        );
    }

    // A stream past its deadline keeps what it sent and ends with it.
    let (_, _, body) = get(
        &served,
        "/v1/ticks?count=3&intervalMs=5000&timeout=300ms",
        &[],
    )
    .await;
    let lines = ndjson(&body);
    assert_eq!(lines[0], json!({"result": {"n": 1}}), "{body}");
    assert_eq!(lines.last().unwrap()["error"]["code"], 4, "{body}");

    // A timeout that is not one: 400 naming it. No call runs, and the
    // refusal is counted under the method it was meant for.
    let (status, _, body) = get(&served, "/v1/wait/1?timeout=soon", &[]).await;
    assert_eq!(status, 400, "{body}");
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .starts_with(r#"timeout: "soon" is not a duration"#),
        "{body}"
    );
    let refused = handled("Wait", "InvalidArgument", "unary", "rest");
    assert_eq!(sample(&served.keel, &refused), 1);
    let exceeded = handled("Wait", "DeadlineExceeded", "unary", "rest");
    assert_eq!(sample(&served.keel, &exceeded), 3);

    // The same method over gRPC is counted apart.
    let client = keel_rpc::testing::client();
    let mut ticker = ticks_v1::connect_ticker(served.server.url(), &client).unwrap();
    ticker.wait(WaitRequest { delay_ms: 1 }).await.unwrap();
    assert_eq!(
        sample(&served.keel, &handled("Wait", "OK", "unary", "grpc")),
        1
    );
    assert_eq!(
        sample(&served.keel, &handled("Wait", "OK", "unary", "rest")),
        1
    );
    served.server.stop().await.unwrap();
}
