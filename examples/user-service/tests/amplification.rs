//! Amplification through the status message: whatever a handler writes in
//! a status, a call is answered with a message of at most 1 KiB (cut on a
//! character boundary, ending in `…`), over gRPC and gRPC-Web, in trailers
//! and in trailers-only answers; a short message goes out byte for byte as
//! the handler wrote it. Real sockets, with hyper's clients told to accept
//! headers of any size, so that what comes back is measured, not refused.

mod common;

use std::pin::Pin;

use bytes::Bytes;
use common::*;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use keel_rpc::testing::TestServer;
use prost::Message as _;
use tonic::{Code, Request, Response, Status, Streaming};
use user_service::user_v1::user_service_server::UserService;
use user_service::user_v1::*;
use user_service::{SERVICES, Users, user_v1};

/// The most a status message may be, in bytes of UTF-8.
const BOUND: usize = 1024;

/// What a bounded message ends with.
const MARK: &str = "…";

/// What a whole answer's metadata may come to once its message is bounded:
/// the message percent-encoded (at most three bytes per byte), and a few
/// short headers.
const SMALL_ANSWER: usize = 3 * BOUND + 1024;

/// A short message with characters that are percent-encoded.
const SHORT: &str = "no user \"é 100%\" here";

/// The status the [`Loud`] handler answers with, chosen by the request's
/// `x-say` metadata.
fn said<T>(request: &Request<T>) -> Status {
    let say = request.metadata().get("x-say").map(|v| v.to_str().unwrap());
    match say {
        // 3 MB of UTF-8, 9 MB percent-encoded.
        Some("huge") => Status::not_found("é".repeat(1_500_000)),
        // Exactly the bound.
        Some("bound") => Status::not_found("é".repeat(BOUND / 2)),
        // A short status with 64 KiB of the handler's metadata.
        Some("metadata") => Status::with_metadata(Code::NotFound, SHORT, huge_metadata()),
        _ => Status::not_found(SHORT),
    }
}

/// 64 entries of 1000 bytes each (and a small one first), as a handler
/// that echoes its input might write.
fn huge_metadata() -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("x-small", "kept".parse().unwrap());
    for i in 0..64 {
        let key = format!("x-echo-{i:02}");
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()).unwrap();
        metadata.insert(key, "e".repeat(1000).parse().unwrap());
    }
    metadata
}

/// `Users`, but `GetUser` fails with [`said`] (a trailers-only answer), and
/// `ExportUsers` sends one user and then ends with it (in trailers).
#[derive(Clone)]
struct Loud(Users);

#[tonic::async_trait]
impl UserService for Loud {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        // The answer itself with huge metadata.
        if request
            .metadata()
            .get("x-say")
            .is_some_and(|v| v == "answer-metadata")
        {
            let mut answer = Response::new(User::default());
            *answer.metadata_mut() = huge_metadata();
            return Ok(answer);
        }
        Err(said(&request))
    }
    async fn create_user(&self, r: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        self.0.create_user(r).await
    }
    async fn list_users(
        &self,
        r: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.0.list_users(r).await
    }
    async fn import_users(
        &self,
        r: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        self.0.import_users(r).await
    }
    type ExportUsersStream = Pin<Box<dyn Stream<Item = Result<User, Status>> + Send + 'static>>;
    async fn export_users(
        &self,
        request: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let user = User {
            id: "u-000001".into(),
            ..User::default()
        };
        let items = vec![Ok(user), Err(said(&request))];
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }
    async fn count_users(
        &self,
        r: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        self.0.count_users(r).await
    }
    async fn health_check(&self, r: Request<()>) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.health_check(r).await
    }
}

/// [`Loud`] behind the pipeline, as a service serves it; `grpc_web` turns
/// gRPC-Web on.
async fn loud(grpc_web: bool) -> TestServer {
    let mut config = config();
    config.http.grpc_web = grpc_web;
    let keel = keel_rpc::Keel::new(&config, SERVICES).unwrap();
    let service = user_v1::user_service(Loud(Users::in_memory().await.unwrap()), &keel).unwrap();
    TestServer::start(keel.server(&config).add_service(service))
        .await
        .expect("serving")
}

fn token() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read"))
}

/// An answer: its headers, messages and trailers (for gRPC-Web, those of
/// the trailers frame).
struct Answer {
    headers: HeaderMap,
    messages: usize,
    trailers: HeaderMap,
}

impl Answer {
    /// The bytes of all its metadata, as names, values and a separator each.
    fn metadata_bytes(&self) -> usize {
        (self.headers.iter().chain(self.trailers.iter()))
            .map(|(name, value)| name.as_str().len() + value.len() + 2)
            .sum()
    }

    /// Where its status is: the trailers, else the headers (trailers-only).
    fn status_carrier(&self) -> &HeaderMap {
        match self.trailers.contains_key("grpc-status") {
            true => &self.trailers,
            false => &self.headers,
        }
    }

    /// Its status as a client reads it.
    fn status(&self) -> Status {
        Status::from_header_map(self.status_carrier()).expect("a grpc-status")
    }

    /// Its `grpc-message` as sent.
    fn raw_message(&self) -> &HeaderValue {
        &self.status_carrier()["grpc-message"]
    }

    /// Asserts it ends `code` with a bounded message that was cut, and that
    /// the answer is small.
    #[track_caller]
    fn assert_bounded(&self, code: Code, starts: &str) {
        let status = self.status();
        assert_eq!(status.code(), code, "{}", status.message());
        let message = status.message();
        assert!(
            message.len() <= BOUND,
            "a message of {} bytes",
            message.len()
        );
        assert!(message.ends_with(MARK), "marked as cut");
        assert!(
            message.starts_with(starts),
            "{:?}",
            message.chars().take(8).collect::<String>()
        );
        assert!(
            self.metadata_bytes() <= SMALL_ANSWER,
            "{} bytes of metadata",
            self.metadata_bytes()
        );
    }
}

/// Calls `path` over HTTP/2 gRPC, with `token` and `metadata`.
async fn grpc(
    addr: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    metadata: &[(&str, &str)],
) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_max_header_list_size(64 << 20)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", token()));
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let body = Full::new(Bytes::from(frame(0, message)));
    let response = client
        .request(request.body(body).unwrap())
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the whole answer");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let (messages, _) = frames(&collected.to_bytes());
    Answer {
        headers: parts.headers,
        messages,
        trailers,
    }
}

/// Calls `path` over gRPC-Web on HTTP/1.1, as a browser does.
async fn grpc_web(
    addr: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    metadata: &[(&str, &str)],
) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http1_max_buf_size(64 << 20)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("accept", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {}", token()));
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let body = Full::new(Bytes::from(frame(0, message)));
    let response = client
        .request(request.body(body).unwrap())
        .await
        .expect("an HTTP/1.1 answer");
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("the whole answer").to_bytes();
    let (messages, trailers) = frames(&bytes);
    Answer {
        headers: parts.headers,
        messages,
        trailers,
    }
}

/// One length-prefixed frame.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend((payload.len() as u32).to_be_bytes());
    framed.extend(payload);
    framed
}

/// How many messages `body` has, and the headers of its gRPC-Web trailers
/// frame (empty for gRPC).
fn frames(body: &[u8]) -> (usize, HeaderMap) {
    let (mut messages, mut trailers) = (0, HeaderMap::new());
    let mut rest = body;
    while let [flag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (payload, after) = tail.split_at(len);
        match flag & 0x80 {
            0 => messages += 1,
            _ => {
                for line in payload.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let Some(colon) = line.iter().position(|&b| b == b':') else {
                        continue;
                    };
                    let name = http::HeaderName::from_bytes(&line[..colon]).unwrap();
                    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).unwrap();
                    trailers.append(name, value);
                }
            }
        }
        rest = after;
    }
    (messages, trailers)
}

const GET_USER: &str = "/user.v1.UserService/GetUser";
const EXPORT_USERS: &str = "/user.v1.UserService/ExportUsers";

fn get_user(id: String) -> Vec<u8> {
    GetUserRequest { id }.encode_to_vec()
}

#[tokio::test]
async fn a_huge_id_is_not_sent_back() {
    let mut config = config();
    config.http.grpc_web = true;
    let server = Server::start(config).await;

    // 3 MB of id: once 9 MB of percent-encoded `grpc-message`.
    let id = "é".repeat(1_500_000);
    let answer = grpc(server.grpc, GET_USER, &get_user(id.clone()), &[]).await;
    let status = answer.status();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().len() <= BOUND + MARK.len(),
        "a message of {} bytes",
        status.message().len()
    );
    // The handler quotes the id's first 64 characters, not all of it.
    let quoted = format!("user {:?}… not found", "é".repeat(64));
    assert_eq!(status.message(), quoted);
    assert!(
        answer.metadata_bytes() <= SMALL_ANSWER,
        "{} bytes of metadata",
        answer.metadata_bytes()
    );

    // 1 MB over gRPC-Web: once a 3 MB answer.
    let id = "é".repeat(500_000);
    let answer = grpc_web(server.grpc, GET_USER, &get_user(id), &[]).await;
    assert_eq!(answer.status().code(), Code::NotFound);
    assert!(answer.status().message().len() <= BOUND + MARK.len());
    assert!(
        answer.metadata_bytes() <= SMALL_ANSWER,
        "{} bytes of metadata",
        answer.metadata_bytes()
    );

    // A short id is quoted whole, as before.
    let request = with_token(
        GetUserRequest {
            id: "u-000404".into(),
        },
        &token(),
    );
    let status = server.client().await.get_user(request).await.unwrap_err();
    assert_eq!(status.message(), "user \"u-000404\" not found");
    server.stop().await;
}

#[tokio::test]
async fn a_huge_status_message_is_cut_to_the_bound_over_grpc() {
    let server = loud(false).await;
    let huge = [("x-say", "huge")];

    // Unary: answered trailers-only, the status in the headers.
    let answer = grpc(server.addr(), GET_USER, &get_user("u".into()), &huge).await;
    assert!(answer.headers.contains_key("grpc-status"), "trailers-only");
    answer.assert_bounded(Code::NotFound, "éé");

    // Streaming: a message, then the status in the trailers.
    let answer = grpc(server.addr(), EXPORT_USERS, &[], &huge).await;
    assert_eq!(answer.messages, 1);
    assert!(answer.trailers.contains_key("grpc-status"), "in trailers");
    answer.assert_bounded(Code::NotFound, "éé");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_huge_status_message_is_cut_to_the_bound_over_grpc_web() {
    let server = loud(true).await;
    let huge = [("x-say", "huge")];

    let answer = grpc_web(server.addr(), GET_USER, &get_user("u".into()), &huge).await;
    answer.assert_bounded(Code::NotFound, "éé");

    let answer = grpc_web(server.addr(), EXPORT_USERS, &[], &huge).await;
    assert_eq!(answer.messages, 1);
    assert!(
        answer.trailers.contains_key("grpc-status"),
        "trailers frame"
    );
    answer.assert_bounded(Code::NotFound, "éé");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_within_the_bound_goes_out_byte_for_byte() {
    // What tonic sends for `message`, without Keel.
    let encoded = |message: String| {
        let mut headers = HeaderMap::new();
        Status::not_found(message).add_header(&mut headers).unwrap();
        headers["grpc-message"].clone()
    };
    let server = loud(true).await;
    for (say, message) in [
        ("short", SHORT.to_owned()),
        ("bound", "é".repeat(BOUND / 2)),
    ] {
        let metadata = [("x-say", say)];
        for answer in [
            grpc(server.addr(), GET_USER, &get_user("u".into()), &metadata).await,
            grpc(server.addr(), EXPORT_USERS, &[], &metadata).await,
            grpc_web(server.addr(), GET_USER, &get_user("u".into()), &metadata).await,
            grpc_web(server.addr(), EXPORT_USERS, &[], &metadata).await,
        ] {
            assert_eq!(*answer.raw_message(), encoded(message.clone()), "{say}");
            assert_eq!(answer.status().message(), message);
        }
    }
    server.stop().await.unwrap();
}

/// HTTP/2's size of a header block (RFC 9113: name, value, 32 bytes each).
fn header_list_size(headers: &HeaderMap) -> usize {
    (headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// A handler's metadata, in the answer's headers, a trailers-only answer
/// or a stream's trailers, is kept within 8 KiB a header block (what grpc
/// core clients take by default): gRPC's own entries and the status are
/// kept, the handler's entries in order while they fit.
#[tokio::test]
async fn a_handlers_metadata_is_bounded_in_every_header_block() {
    const LIMIT: usize = 8 * 1024;
    let server = loud(false).await;
    let get = GetUserRequest { id: "u-1".into() }.encode_to_vec();
    let path = "/user.v1.UserService/GetUser";

    // On the answer's headers.
    let answer = grpc(server.addr(), path, &get, &[("x-say", "answer-metadata")]).await;
    assert_eq!(answer.status().code(), Code::Ok);
    assert_eq!(answer.messages, 1);
    assert!(
        header_list_size(&answer.headers) <= LIMIT,
        "{}",
        header_list_size(&answer.headers)
    );
    assert_eq!(answer.headers["x-small"], "kept");
    assert!(answer.headers.contains_key("x-echo-00"));
    assert!(!answer.headers.contains_key("x-echo-63"));

    // On a trailers-only answer, and a stream's trailers.
    for (path, message) in [(path, &get[..]), ("/user.v1.UserService/ExportUsers", &[])] {
        let answer = grpc(server.addr(), path, message, &[("x-say", "metadata")]).await;
        let status = answer.status();
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, SHORT),
            "{path}"
        );
        let carrier = answer.status_carrier();
        assert!(
            header_list_size(carrier) <= LIMIT,
            "{path}: {}",
            header_list_size(carrier)
        );
        assert_eq!(carrier["x-small"], "kept", "{path}");
        assert!(!carrier.contains_key("x-echo-63"), "{path}");
    }
    server.stop().await.unwrap();
}
