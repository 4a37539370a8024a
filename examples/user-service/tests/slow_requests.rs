//! Requests that do not finish arriving (`server.request_body_timeout`), on
//! every surface: a REST body trickled a byte at a time over HTTP/1.1 (or
//! never sent, over HTTP/2), an HTTP/2 stream that sends a unary method's
//! headers and nothing more (a health check's too), a gRPC-Web body
//! trickled over HTTP/1.1, and all of them at once. Each is answered when
//! its time is up (408 with a Status JSON, or `DEADLINE_EXCEEDED`), its
//! connection or stream closed, and counted under its method; a body that
//! is slow but within the limit is served as usual; afterwards the server's
//! connections are back to what they were. Real sockets, with a short
//! limit so the tests are quick.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use prost::Message as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use user_service::user_v1::GetUserRequest;

/// The limit the servers here have.
const LIMIT: Duration = Duration::from_millis(600);

/// How long a test waits for what should come at once after the limit.
const PATIENCE: Duration = Duration::from_secs(5);

async fn start() -> Server {
    let mut config = config();
    config.server.request_body_timeout = LIMIT;
    config.http.grpc_web = true;
    Server::start(config).await
}

/// A request body that sends nothing until its sender is dropped.
type Silent = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// Sends a body's frames; `closed()` says when the server ended the stream.
type SilentSender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// An HTTP/2 (h2c) client for requests with a [`Silent`] body.
fn h2_client() -> Client<HttpConnector, Silent> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A POST of `path` on `server` with `headers` and a [`Silent`] body, and
/// the body's sender.
fn silent_post(
    server: &Server,
    path: &str,
    headers: &[(&str, String)],
) -> (http::Request<Silent>, SilentSender) {
    let (sender, receiver) = mpsc::channel(1);
    let mut request = http::Request::post(format!("http://{}{path}", server.grpc));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(StreamBody::new(ReceiverStream::new(receiver)))
        .unwrap();
    (request, sender)
}

/// The headers of a gRPC call, with a bearer `token` when given.
fn grpc_headers(token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
    ];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    headers
}

/// The gRPC status `response` ends with: in its trailers, or in its
/// headers when it is trailers-only.
async fn ending_status(response: http::Response<hyper::body::Incoming>) -> Option<tonic::Status> {
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.unwrap().trailers().cloned();
    tonic::Status::from_header_map(&trailers.unwrap_or(parts.headers))
}

fn writer() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read users:write"))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    (headers.iter())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Sends `head` and then `body` a byte every `pause` on `stream`, until
/// the server answers (or the body is all sent); returns the answer and
/// when it came.
async fn trickle(
    stream: TcpStream,
    head: String,
    body: Vec<u8>,
    pause: Duration,
) -> ((u16, Vec<(String, String)>, Vec<u8>), TcpStream, Duration) {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let sending = tokio::spawn(async move {
        for byte in body {
            tokio::time::sleep(pause).await;
            // The server may have answered and closed: stop there.
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
        }
        writer
    });
    let answer = tokio::time::timeout(PATIENCE * 4, common::read_answer(&mut reader, false))
        .await
        .expect("an answer in time");
    let took = started.elapsed();
    let writer = sending.await.unwrap();
    (answer, reader.reunite(writer).unwrap(), took)
}

/// Whether the server closes `stream` (reads end) within [`PATIENCE`].
async fn closed(stream: &mut TcpStream) -> bool {
    let mut chunk = [0; 1024];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.is_ok()
}

/// A REST `POST /v1/users` whose body comes a byte at a time.
fn rest_head(token: &str, length: usize) -> String {
    format!(
        "POST /v1/users HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         authorization: Bearer {token}\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// A `GetUser` request, as a length-prefixed frame.
fn web_frame() -> Vec<u8> {
    let message = GetUserRequest {
        id: "u-000001".into(),
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    body
}

/// A metric's value for `method` (and `extra` among its labels).
fn metric(metrics: &str, name: &str, method: &str, extra: &str) -> String {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains(&format!("grpc_method=\"{method}\""))
                && l.contains(extra)
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("absent")
        .to_owned()
}

#[tokio::test]
async fn a_rest_body_trickled_a_byte_a_second_is_answered_408_and_closed() {
    let server = start().await;
    let body = br#"{"name": "Ada Lovelace", "email": "ada@example.com"}"#.to_vec();
    let stream = TcpStream::connect(server.grpc).await.unwrap();
    let ((status, headers, answer), mut stream, took) = trickle(
        stream,
        rest_head(&writer(), body.len()),
        body,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert!(took >= LIMIT && took < LIMIT + PATIENCE, "{took:?}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "connection"), Some("close"));
    let json: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(json["code"], 4, "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("server.request_body_timeout"), "{message}");
    assert!(closed(&mut stream).await, "the connection stays open");

    let metrics = server.scrape().await;
    assert_eq!(
        metric(
            &metrics,
            "keel_server_request_body_timeouts_total",
            "CreateUser",
            ""
        ),
        "1"
    );
    // A stream of requests has no such limit, and no series.
    assert_eq!(
        metric(
            &metrics,
            "keel_server_request_body_timeouts_total",
            "ImportUsers",
            ""
        ),
        "absent"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_body_within_the_limit_is_served() {
    let server = start().await;
    let body = br#"{"name": "Ada Lovelace", "email": "ada@example.com"}"#;
    let mut stream = TcpStream::connect(server.grpc).await.unwrap();
    stream
        .write_all(rest_head(&writer(), body.len()).as_bytes())
        .await
        .unwrap();
    // Three pieces over a third of the limit.
    for piece in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(LIMIT / 9).await;
        stream.write_all(piece).await.unwrap();
    }
    let (status, _, answer) = common::read_answer(&mut stream, false).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let json: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(json["name"], "Ada Lovelace", "{json}");

    // And a gRPC call of a unary method, as usual.
    let mut client = server.client().await;
    let user = client
        .get_user(with_token(
            GetUserRequest {
                id: json["id"].as_str().unwrap().to_owned(),
            },
            &writer(),
        ))
        .await
        .expect("served");
    assert_eq!(user.into_inner().name, "Ada Lovelace");
    server.stop().await;
}

#[tokio::test]
async fn an_http2_stream_with_headers_only_ends_deadline_exceeded() {
    let server = start().await;
    let client = h2_client();
    // A body that never sends a byte (until the test drops its sender).
    let token = writer();
    let (request, sender) = silent_post(
        &server,
        "/user.v1.UserService/GetUser",
        &grpc_headers(Some(&token)),
    );
    let started = Instant::now();
    let response = tokio::time::timeout(PATIENCE * 2, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    let took = started.elapsed();
    assert!(took >= LIMIT && took < LIMIT + PATIENCE, "{took:?}");
    assert_eq!(response.status(), 200);
    let status = ending_status(response).await.expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("server.request_body_timeout"),
        "{status:?}"
    );
    // The stream is closed: the client stops taking its request body.
    tokio::time::timeout(PATIENCE, sender.closed())
        .await
        .expect("the stream is closed");

    let metrics = server.scrape().await;
    assert_eq!(
        metric(
            &metrics,
            "keel_server_request_body_timeouts_total",
            "GetUser",
            ""
        ),
        "1"
    );
    assert_eq!(
        metric(
            &metrics,
            "grpc_server_handled_total",
            "GetUser",
            "grpc_code=\"DeadlineExceeded\",grpc_method=\"GetUser\",grpc_service=\"user.v1.UserService\",grpc_type=\"unary\",protocol=\"grpc\""
        ),
        "1"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_grpc_web_body_trickled_ends_deadline_exceeded_and_closed() {
    let server = start().await;
    let body = web_frame();
    let head = format!(
        "POST /user.v1.UserService/GetUser HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        writer(),
        body.len()
    );
    let stream = TcpStream::connect(server.grpc).await.unwrap();
    let ((status, headers, _), mut stream, took) =
        trickle(stream, head, body, Duration::from_millis(200)).await;
    assert_eq!(status, 200);
    assert!(took >= LIMIT && took < LIMIT + PATIENCE, "{took:?}");
    assert_eq!(header(&headers, "grpc-status"), Some("4"), "{headers:?}");
    assert!(closed(&mut stream).await, "the connection stays open");

    let metrics = server.scrape().await;
    assert_eq!(
        metric(
            &metrics,
            "grpc_server_handled_total",
            "GetUser",
            "grpc_code=\"DeadlineExceeded\",grpc_method=\"GetUser\",grpc_service=\"user.v1.UserService\",grpc_type=\"unary\",protocol=\"grpc_web\""
        ),
        "1"
    );
    server.stop().await;
}

/// A gauge's value in a scrape.
fn gauge(metrics: &str, name: &str) -> i64 {
    (metrics.lines())
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// This process's resident memory (the server runs in it), in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The issue's attack at once, on every surface: REST bodies (with and
/// without a token) and gRPC-Web bodies trickled on connections of their
/// own, and HTTP/2 streams that send headers only. Every one is answered at the limit; afterwards the
/// server's open connections are back where they were, and its memory has
/// not grown with them.
#[tokio::test]
async fn a_swarm_of_slow_requests_leaves_nothing_behind() {
    const TRICKLES: usize = 150;
    const STREAMS: usize = 100;
    let server = start().await;
    let baseline = gauge(&server.scrape().await, "keel_server_connections");
    let rss_before = rss_kib();
    let token = writer();

    let mut trickles = Vec::new();
    for i in 0..TRICKLES {
        let addr = server.grpc;
        let token = token.clone();
        trickles.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let rest = br#"{"name": "Ada Lovelace", "email": "ada@example.com"}"#.to_vec();
            let (head, body) = match i % 3 {
                0 => (rest_head(&token, rest.len()), rest),
                // Without a token: refused before the body is read.
                1 => {
                    let head = rest_head(&token, rest.len()).replace(&token, "");
                    let head = head.replace("authorization: Bearer \r\n", "");
                    (head, rest)
                }
                _ => {
                    let body = web_frame();
                    let head = format!(
                        "POST /user.v1.UserService/GetUser HTTP/1.1\r\nhost: localhost\r\n\
                         content-type: application/grpc-web+proto\r\n\
                         authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    (head, body)
                }
            };
            let ((status, headers, _), mut stream, _) =
                trickle(stream, head, body, Duration::from_millis(100)).await;
            match i % 3 {
                0 => assert_eq!(status, 408),
                1 => assert_eq!(status, 401),
                _ => assert_eq!(header(&headers, "grpc-status"), Some("4")),
            }
            assert!(closed(&mut stream).await, "connection {i} stays open");
        }));
    }
    let client = h2_client();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let (request, sender) = silent_post(
            &server,
            "/user.v1.UserService/GetUser",
            &grpc_headers(Some(&token)),
        );
        let answer = client.request(request);
        streams.push(tokio::spawn(async move {
            let response = answer.await.expect("an HTTP/2 answer");
            let status = ending_status(response).await;
            assert_eq!(
                status.map(|s| s.code()),
                Some(tonic::Code::DeadlineExceeded)
            );
            tokio::time::timeout(PATIENCE, sender.closed())
                .await
                .expect("the stream is closed");
        }));
    }
    let all = async {
        for task in trickles.into_iter().chain(streams) {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE * 6, all)
        .await
        .expect("every slow request answered");
    drop(client);

    // Back to the baseline: the HTTP/1.1 connections were closed by the
    // server, the HTTP/2 one by the client that is gone.
    let mut open = i64::MAX;
    for _ in 0..50 {
        open = gauge(&server.scrape().await, "keel_server_connections");
        if open == baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, baseline, "connections left open");
    let metrics = server.scrape().await;
    let late: u64 = ["CreateUser", "GetUser"]
        .iter()
        .map(|m| {
            metric(&metrics, "keel_server_request_body_timeouts_total", m, "")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // The unauthenticated third of the trickles was refused before its
    // body was read, and is not counted as late.
    assert_eq!(late as usize, TRICKLES / 3 * 2 + STREAMS);
    if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
        println!("RSS before {before} KiB, after {after} KiB");
        // Loose: the test's own tasks and buffers live in this process too.
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} to {after} KiB"
        );
    }
    server.stop().await;
}

/// The standard health service is behind no pipeline, and its requests
/// have the same limit: a `Check` that sends its headers alone ends.
#[tokio::test]
async fn a_health_check_with_headers_only_ends_deadline_exceeded() {
    let server = start().await;
    let client = h2_client();
    let (request, sender) =
        silent_post(&server, "/grpc.health.v1.Health/Check", &grpc_headers(None));
    let response = tokio::time::timeout(PATIENCE * 2, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    let status = ending_status(response).await;
    assert_eq!(
        status.map(|s| s.code()),
        Some(tonic::Code::DeadlineExceeded)
    );
    tokio::time::timeout(PATIENCE, sender.closed())
        .await
        .expect("the stream is closed");
    server.stop().await;
}

/// REST over HTTP/2 (h2c): a body that never comes is answered 408 with
/// a Status JSON, and only its stream ends (no `connection: close`, which
/// HTTP/2 does not have).
#[tokio::test]
async fn a_rest_body_over_http2_that_never_comes_is_408() {
    let server = start().await;
    let client = h2_client();
    let (request, sender) = silent_post(
        &server,
        "/v1/users",
        &[
            ("content-type", "application/json".to_owned()),
            ("authorization", format!("Bearer {}", writer())),
        ],
    );
    let response = tokio::time::timeout(PATIENCE * 2, client.request(request))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    assert_eq!(response.status(), 408);
    assert!(!response.headers().contains_key("connection"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], 4, "{json}");
    tokio::time::timeout(PATIENCE, sender.closed())
        .await
        .expect("the stream is closed");
    server.stop().await;
}
