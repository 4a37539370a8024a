//! Every interop case against the interop server (TestService behind Keel's
//! layers) started in-process on 127.0.0.1:0, over a real socket; and, after
//! each case, Keel's metrics: every call Keel saw start is counted as handled
//! exactly once, with the code and message counts the case implies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use interop::client::{Client, TestCase};
use interop::server::{InteropServer, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound of a whole test: server start, case, metrics settling, shutdown.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server may take to record calls that ended on the client.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    addr: SocketAddr,
    keel: keel_rpc::Keel,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let server = InteropServer::new(addr).expect("interop server");
        let keel = server.keel().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            keel,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.addr.ip().to_string(), self.addr.port())
            .await
            .expect("connect")
    }

    /// Stops the server; it must stop cleanly once clients are gone.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The samples of `name` for `grpc.testing.TestService`, keyed by method and
/// code (`""` for metrics without a code).
fn samples(text: &str, name: &str) -> BTreeMap<(String, String), f64> {
    let mut found = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, labels)) = series.split_once('{') else {
            continue;
        };
        if metric != name {
            continue;
        }
        let labels: BTreeMap<&str, &str> = labels
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|pair| pair.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        if labels.get("grpc_service") != Some(&"grpc.testing.TestService") {
            continue;
        }
        let method = labels.get("grpc_method").copied().unwrap_or_default();
        let code = labels.get("grpc_code").copied().unwrap_or_default();
        let value: f64 = value.parse().expect("sample value");
        *found
            .entry((method.to_owned(), code.to_owned()))
            .or_default() += value;
    }
    found
}

fn value(text: &str, name: &str, method: &str, code: &str) -> f64 {
    samples(text, name)
        .get(&(method.to_owned(), code.to_owned()))
        .copied()
        .unwrap_or(0.0)
}

/// Per method: calls started minus calls handled (any code).
fn unfinished(text: &str) -> BTreeMap<String, f64> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    for ((method, _), v) in samples(text, "grpc_server_started_total") {
        *open.entry(method).or_default() += v;
    }
    for ((method, _), v) in samples(text, "grpc_server_handled_total") {
        *open.entry(method).or_default() -= v;
    }
    open.retain(|_, v| *v != 0.0);
    open
}

/// Waits until every call Keel saw start has been recorded as handled, and
/// returns the metrics text then.
async fn settled(keel: &keel_rpc::Keel) -> String {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let text = keel.metrics().render();
        let open = unfinished(&text);
        if open.is_empty() {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls started but never counted as handled (started - handled): {open:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What Keel's metrics must show after a case: (metric, method, code, value).
type Expected = &'static [(&'static str, &'static str, &'static str, f64)];

const HANDLED: &str = "grpc_server_handled_total";
const STARTED: &str = "grpc_server_started_total";
const RECEIVED: &str = "grpc_server_msg_received_total";
const SENT: &str = "grpc_server_msg_sent_total";

/// Runs `case` on a fresh server, then checks the metrics.
async fn run_case(case: TestCase, expected: Expected) {
    let test = async {
        let server = Running::start().await;
        let client = server.client().await;
        let outcome = client.run(case).await;
        drop(client);
        if let Err(e) = outcome {
            panic!("{case} failed: {e}");
        }
        let text = settled(&server.keel).await;
        let mismatches: Vec<String> = expected
            .iter()
            .filter_map(|&(metric, method, code, want)| {
                let got = value(&text, metric, method, code);
                (got != want).then(|| {
                    format!("{metric}{{grpc_method={method:?}, grpc_code={code:?}}} = {got}, want {want}")
                })
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{case}: Keel's metrics differ:\n  {}\nhandled: {:?}",
            mismatches.join("\n  "),
            samples(&text, HANDLED)
                .into_iter()
                .filter(|(_, v)| *v != 0.0)
                .collect::<Vec<_>>()
        );
        server.stop().await;
    };
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("{case}: test did not finish within {TEST_TIMEOUT:?}"));
}

#[tokio::test]
async fn empty_unary() {
    run_case(
        TestCase::EmptyUnary,
        &[
            (STARTED, "EmptyCall", "", 1.0),
            (HANDLED, "EmptyCall", "OK", 1.0),
            (RECEIVED, "EmptyCall", "", 1.0),
            (SENT, "EmptyCall", "", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn large_unary() {
    run_case(
        TestCase::LargeUnary,
        &[
            (HANDLED, "UnaryCall", "OK", 1.0),
            (RECEIVED, "UnaryCall", "", 1.0),
            (SENT, "UnaryCall", "", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn client_streaming() {
    run_case(
        TestCase::ClientStreaming,
        &[
            (HANDLED, "StreamingInputCall", "OK", 1.0),
            (RECEIVED, "StreamingInputCall", "", 4.0),
            (SENT, "StreamingInputCall", "", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn server_streaming() {
    run_case(
        TestCase::ServerStreaming,
        &[
            (HANDLED, "StreamingOutputCall", "OK", 1.0),
            (RECEIVED, "StreamingOutputCall", "", 1.0),
            (SENT, "StreamingOutputCall", "", 4.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn ping_pong() {
    run_case(
        TestCase::PingPong,
        &[
            (STARTED, "FullDuplexCall", "", 1.0),
            (HANDLED, "FullDuplexCall", "OK", 1.0),
            (RECEIVED, "FullDuplexCall", "", 4.0),
            (SENT, "FullDuplexCall", "", 4.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn empty_stream() {
    run_case(
        TestCase::EmptyStream,
        &[
            (HANDLED, "FullDuplexCall", "OK", 1.0),
            (RECEIVED, "FullDuplexCall", "", 0.0),
            (SENT, "FullDuplexCall", "", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn timeout_on_sleeping_server() {
    // With a 1 ms deadline the client may give up before its headers reach
    // the server (then the server sees nothing); otherwise the server sees
    // the client's reset (tonic's server does not end a streaming call at its
    // deadline once the handler has returned). Either way, no call ends OK.
    run_case(
        TestCase::TimeoutOnSleepingServer,
        &[
            (HANDLED, "FullDuplexCall", "OK", 0.0),
            (SENT, "FullDuplexCall", "", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn cancel_after_begin() {
    run_case(
        TestCase::CancelAfterBegin,
        &[
            (STARTED, "StreamingInputCall", "", 1.0),
            (HANDLED, "StreamingInputCall", "Canceled", 1.0),
            (RECEIVED, "StreamingInputCall", "", 0.0),
            (SENT, "StreamingInputCall", "", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn cancel_after_first_response() {
    run_case(
        TestCase::CancelAfterFirstResponse,
        &[
            (STARTED, "FullDuplexCall", "", 1.0),
            (HANDLED, "FullDuplexCall", "Canceled", 1.0),
            (RECEIVED, "FullDuplexCall", "", 1.0),
            (SENT, "FullDuplexCall", "", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn custom_metadata() {
    run_case(
        TestCase::CustomMetadata,
        &[
            (HANDLED, "UnaryCall", "OK", 1.0),
            (HANDLED, "FullDuplexCall", "OK", 1.0),
            (SENT, "FullDuplexCall", "", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn status_code_and_message() {
    run_case(
        TestCase::StatusCodeAndMessage,
        &[
            (HANDLED, "UnaryCall", "Unknown", 1.0),
            (HANDLED, "FullDuplexCall", "Unknown", 1.0),
            (SENT, "UnaryCall", "", 0.0),
            (SENT, "FullDuplexCall", "", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn special_status_message() {
    run_case(
        TestCase::SpecialStatusMessage,
        &[(HANDLED, "UnaryCall", "Unknown", 1.0)],
    )
    .await;
}

#[tokio::test]
async fn unimplemented_method() {
    run_case(
        TestCase::UnimplementedMethod,
        &[(HANDLED, "UnimplementedCall", "Unimplemented", 1.0)],
    )
    .await;
}

#[tokio::test]
async fn unimplemented_service() {
    // Outside TestService's policy: not counted under TestService at all.
    run_case(TestCase::UnimplementedService, &[]).await;
}

/// Every case in turn on one connection to one server: a case that leaves
/// the connection or the server in a bad state fails the ones after it.
#[tokio::test]
async fn all_cases_on_one_connection() {
    let test = async {
        let server = Running::start().await;
        let client = server.client().await;
        let mut failed = Vec::new();
        for case in TestCase::ALL {
            if let Err(e) = client.run(case).await {
                failed.push(format!("{case}: {e}"));
            }
        }
        drop(client);
        assert!(
            failed.is_empty(),
            "failed cases:\n  {}",
            failed.join("\n  ")
        );
        settled(&server.keel).await;
        server.stop().await;
    };
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("all cases finish within the test timeout");
}

/// A service with neither gRPC-Web nor REST routes: its port speaks HTTP/2
/// only, and an HTTP/1.1 request gets no HTTP/1.1 answer.
#[tokio::test]
async fn the_port_speaks_no_http1_without_grpc_web_or_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let running = Running::start().await;
    let mut tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    tcp.write_all(b"GET /grpc.testing.TestService/EmptyCall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    running.stop().await;
}
