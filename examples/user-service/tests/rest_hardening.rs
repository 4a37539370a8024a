//! REST/JSON against a caller who sends what a well-behaved client would
//! not, over a real socket (a hyper HTTP/1.1 client, or raw HTTP/1.1 bytes
//! where a library would not send the bad input): duplicate JSON keys,
//! bodies that are not JSON, bodies without a token, huge names, `HEAD`,
//! CORS preflights of methods a path does not have, rate limits, path
//! variables that do not decode, values of the wrong type. Each is refused
//! (or answered) before the handler, with a bounded `google.rpc.Status`
//! JSON in the caller's terms.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use user_service::user_v1::ListUsersRequest;

/// The longest message a refusal may carry here: what it names is cut to
/// 128 characters, the rest is Keel's own words.
const BOUNDED: usize = 1024;

struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The body as JSON, which every answer here is.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The Status JSON's message.
    fn message(&self) -> String {
        let json = self.json();
        json["message"]
            .as_str()
            .unwrap_or_else(|| panic!("a Status JSON: {json}"))
            .to_owned()
    }
}

/// `method path` with `headers` (exactly those, beside what HTTP/1.1 needs)
/// and `body`.
async fn send(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.grpc));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .expect("an HTTP/1.1 answer");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A JSON body of `method path`, with `token` if any.
async fn rest(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    send(server, method, path, &headers, body).await
}

/// Writes `head` (a request line and headers, without the blank line) and
/// `body` on a new connection, and reads one answer: its status, headers
/// (lowercase names) and body (by its `content-length`).
async fn raw(server: &Server, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    stream
        .write_all(format!("{head}\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    common::read_answer(&mut stream, head.starts_with("HEAD ")).await
}

fn writer() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read users:write"))
}

fn reader() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read"))
}

/// The value of `grpc_server_handled_total` for `method`, `code`, REST.
fn handled(metrics: &str, method: &str, code: &str) -> String {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains(&format!("grpc_method=\"{method}\""))
                && l.contains(&format!("grpc_code=\"{code}\""))
                && l.contains("protocol=\"rest\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("absent")
        .to_owned()
}

#[tokio::test]
async fn a_key_given_twice_is_refused_naming_it() {
    let server = Server::start(config()).await;
    let writer = writer();
    let twice = r#"{"name": "A", "name": "B", "email": "ab@example.com"}"#;
    let refused = rest(&server, "POST", "/v1/users", Some(&writer), twice).await;
    assert_eq!(refused.status, 400, "{}", refused.json());
    assert_eq!(refused.json()["code"], 3);
    let message = refused.message();
    assert!(
        message.contains("\"name\"") && message.contains("twice"),
        "{message}"
    );
    // Nothing was created: not "B", last one winning.
    let listed = (server.client().await)
        .list_users(with_token(ListUsersRequest::default(), &writer))
        .await
        .unwrap();
    assert!(listed.into_inner().users.is_empty());
    server.stop().await;

    // Nested too: even in what `discard_unknown_fields` would leave out.
    let mut lenient = config();
    lenient.http.discard_unknown_fields = true;
    let server = Server::start(lenient).await;
    let nested = r#"{"name": "A", "email": "a@example.com", "extra": {"k": [{"x": 1, "x": 2}]}}"#;
    let refused = rest(&server, "POST", "/v1/users", Some(&writer), nested).await;
    assert_eq!(refused.status, 400, "{}", refused.json());
    let message = refused.message();
    assert!(
        message.contains("\"extra.k[0].x\"") && message.contains("twice"),
        "{message}"
    );
    // Without the duplicate, the same body is a user.
    let once = r#"{"name": "A", "email": "a@example.com", "extra": {"k": [{"x": 1}]}}"#;
    let created = rest(&server, "POST", "/v1/users", Some(&writer), once).await;
    assert_eq!(created.status, 200, "{}", created.json());
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let server = Server::start(config()).await;
    let bearer = format!("Bearer {}", writer());
    let body = r#"{"name": "Ada", "email": "ada@example.com"}"#;
    // The first three are what a page may send cross-site without a preflight.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin1",
        "application/jsonx",
    ] {
        let headers = [("content-type", content_type), ("authorization", &bearer)];
        let refused = send(&server, "POST", "/v1/users", &headers, body).await;
        assert_eq!(
            refused.status,
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(refused.headers["content-type"], "application/json");
        assert_eq!(refused.json()["code"], 3, "{content_type}");
        assert!(
            refused.message().contains("application/json"),
            "{}",
            refused.message()
        );
    }
    // No content type at all, with a body: what `fetch` sends for a Blob.
    let refused = send(
        &server,
        "POST",
        "/v1/users",
        &[("authorization", &bearer)],
        body,
    )
    .await;
    assert_eq!(refused.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(refused.json()["code"], 3);

    // JSON, with parameters or as a `+json` type: the calls are made.
    for (content_type, email) in [
        ("application/json", "a@example.com"),
        ("Application/JSON; charset=utf-8", "b@example.com"),
        ("application/merge-patch+json", "c@example.com"),
        (
            "application/vnd.users+json; charset=\"UTF-8\"",
            "d@example.com",
        ),
    ] {
        let body = json!({ "name": "Ada", "email": email }).to_string();
        let headers = [("content-type", content_type), ("authorization", &bearer)];
        let created = send(&server, "POST", "/v1/users", &headers, &body).await;
        assert_eq!(created.status, 200, "{content_type}: {}", created.json());
    }
    // A route without a body does not look at the content type.
    let health = send(
        &server,
        "GET",
        "/v1/health",
        &[("content-type", "text/plain")],
        "",
    )
    .await;
    assert_eq!(health.status, 200);
    // Nor does a POST without a body: `{}`, which the method's validation refuses.
    let empty = send(
        &server,
        "POST",
        "/v1/users",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(empty.status, 400, "{}", empty.json());
    assert!(empty.json()["details"][0]["fieldViolations"].is_array());
    server.stop().await;
}

#[tokio::test]
async fn a_call_without_a_token_is_refused_before_its_body_is_read() {
    let server = Server::start(config()).await;
    // A body that is not JSON: refused for the missing token, not the body.
    let refused = rest(&server, "POST", "/v1/users", None, "{not json").await;
    assert_eq!(refused.status, 401, "{}", refused.json());
    assert_eq!(refused.json()["code"], 16);
    assert_eq!(refused.headers["www-authenticate"], "Bearer");
    // Nor a content type.
    let refused = send(
        &server,
        "POST",
        "/v1/users",
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(refused.status, 401);

    // 10 MB announced, 64 KiB sent: the answer comes while the client still
    // has the rest to send, so the server did not wait for (or read) it.
    let mut stream = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let head = "POST /v1/users HTTP/1.1\r\nhost: localhost\r\n\
                content-type: application/json\r\ncontent-length: 10000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 64 * 1024]).await.unwrap();
    let (status, headers, body) = tokio::time::timeout(
        Duration::from_secs(10),
        common::read_answer(&mut stream, false),
    )
    .await
    .expect("answered before the body was sent");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(headers.contains(&("www-authenticate".to_owned(), "Bearer".to_owned())));
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["code"], 16);
    drop(stream);

    // They went through the method's pipeline, which counted them.
    let metrics = server.scrape().await;
    assert_eq!(handled(&metrics, "CreateUser", "Unauthenticated"), "3");
    assert_eq!(handled(&metrics, "CreateUser", "InvalidArgument"), "0");
    server.stop().await;
}

#[tokio::test]
async fn refusals_name_what_they_quote_within_bounds() {
    // Targets up to hyper's own limit, so that what is quoted is measured
    // (rather than the target refused 414).
    let mut config = config();
    config.server.max_uri_bytes = 65534;
    let server = Server::start(config).await;
    let writer = writer();

    // A 1 MiB key the message does not have.
    let key = "k".repeat(1024 * 1024);
    let body = format!(r#"{{"name": "Ada", "email": "ada@example.com", "{key}": 1}}"#);
    let refused = rest(&server, "POST", "/v1/users", Some(&writer), &body).await;
    assert_eq!(refused.status, 400);
    let message = refused.message();
    assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
    assert!(
        message.contains(&format!("{}…", "k".repeat(127))),
        "{message}"
    );

    // A key given twice, as long.
    let body = format!(r#"{{"{key}": 1, "{key}": 2}}"#);
    let refused = rest(&server, "POST", "/v1/users", Some(&writer), &body).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
    assert!(refused.message().contains('…'), "{}", refused.message());

    // A query parameter the message does not have (multi-byte characters
    // are cut whole).
    let name = "%C3%A9".repeat(8 * 1024);
    let refused = rest(
        &server,
        "GET",
        &format!("/v1/users?{name}=1"),
        Some(&writer),
        "",
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
    assert!(refused.message().contains("éé…"), "{}", refused.message());
    // Its value, with a field's type to read it as.
    let value = "9".repeat(32 * 1024);
    let refused = rest(
        &server,
        "GET",
        &format!("/v1/users?page_size={value}"),
        Some(&writer),
        "",
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
    // A path no route has, or a timeout that is none.
    for path in [
        format!("/v1/{}", "p".repeat(32 * 1024)),
        format!("/v1/users?timeout={}", "t".repeat(32 * 1024)),
    ] {
        let refused = rest(&server, "GET", &path, Some(&writer), "").await;
        assert!(refused.status.is_client_error());
        assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
        assert!(refused.message().contains('…'), "{}", refused.message());
    }
    server.stop().await;
}

#[tokio::test]
async fn head_of_a_get_route_answers_as_get_without_a_body() {
    let server = Server::start(config()).await;
    let get = raw(&server, "GET /v1/health HTTP/1.1", b"").await;
    let head = raw(&server, "HEAD /v1/health HTTP/1.1", b"").await;
    assert_eq!((get.0, head.0), (200, 200));
    let header = |answer: &(u16, Vec<(String, String)>, Vec<u8>), name: &str| {
        (answer.1.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(&head, "content-type").unwrap(), "application/json");
    let length = header(&head, "content-length");
    assert!(
        length.is_none() || length == header(&get, "content-length"),
        "{length:?}"
    );
    // (`raw` read the body by its content length: none came after the head.)
    let answer = send(&server, "HEAD", "/v1/health", &[], "").await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_empty());

    // The method's pipeline runs: its auth, its handler.
    let anonymous = send(&server, "HEAD", "/v1/users/u-000001", &[], "").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    let bearer = format!("Bearer {}", reader());
    let missing = send(
        &server,
        "HEAD",
        "/v1/users/u-000001",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty());
    // HEAD of a path with no GET route: 404 as for GET.
    let nowhere = send(&server, "HEAD", "/v1/nothing", &[], "").await;
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.body.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn preflights_allow_only_the_methods_of_the_path() {
    let mut config = config();
    config.http.grpc_web = true;
    config.http.cors.allowed_origins = vec!["https://app.example".to_owned()];
    let server = Server::start(config).await;
    let allowed = |path: &'static str, method: &'static str| {
        let server = &server;
        async move {
            let answer = send(
                server,
                "OPTIONS",
                path,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", "authorization"),
                ],
                "",
            )
            .await;
            assert_eq!(
                answer.headers["access-control-allow-origin"], "https://app.example",
                "{path} {method}"
            );
            let methods = answer
                .headers
                .get("access-control-allow-methods")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            methods
                .split(',')
                .map(str::trim)
                .any(|m| m.eq_ignore_ascii_case(method))
        }
    };
    for (path, method, allow) in [
        ("/v1/users", "POST", true),
        ("/v1/users", "GET", true),
        ("/v1/users", "PUT", false),
        ("/v1/users", "PATCH", false),
        ("/v1/users", "DELETE", false),
        ("/v1/users/u-000001", "GET", true),
        ("/v1/users/u-000001", "HEAD", true),
        ("/v1/users/u-000001", "DELETE", false),
        ("/v1/users/u-000001", "PUT", false),
        ("/v1/health", "PATCH", false),
        ("/v1/nothing", "PUT", false),
        // gRPC-Web's calls are POSTs to the methods' paths.
        ("/user.v1.UserService/GetUser", "POST", true),
        ("/user.v1.UserService/GetUser", "PUT", false),
        ("/grpc.health.v1.Health/Check", "POST", true),
    ] {
        assert_eq!(allowed(path, method).await, allow, "{method} {path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_rate_limited_call_says_when_to_retry() {
    let server = Server::start(config()).await;
    let writer = writer();
    // CreateUser: 20 a second, 40 at once, per subject. `{}` fails
    // validation, after the rate limit took its share.
    let mut limited = None;
    for _ in 0..400 {
        let answer = rest(&server, "POST", "/v1/users", Some(&writer), "{}").await;
        if answer.status == http::StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("rate limited");
    assert_eq!(limited.json()["code"], 8);
    assert_eq!(
        limited.json()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&after), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn a_path_variable_that_does_not_decode_is_refused_naming_it() {
    let server = Server::start(config()).await;
    let bearer = format!("authorization: Bearer {}", reader());
    for path in [
        "/v1/users/%zz",
        "/v1/users/u%2",
        "/v1/users/%ff%fe",
        "/v1/users/%C3",
    ] {
        let (status, _, body) =
            raw(&server, &format!("GET {path} HTTP/1.1\r\n{bearer}"), b"").await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], 3, "{path}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("id: "), "{path}: {message}");
    }
    // What decodes is the value: `%2D` is `-`.
    let (status, _, body) = raw(
        &server,
        &format!("GET /v1/users/u%2D000404 HTTP/1.1\r\n{bearer}"),
        b"",
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &body["message"]),
        (404, &json!("user \"u-000404\" not found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_named_in_the_callers_terms() {
    let server = Server::start(config()).await;
    let writer = writer();
    for (method, path, body, needles) in [
        (
            "POST",
            "/v1/users",
            r#"{"name": 5, "email": "a@example.com"}"#,
            &["name", "string"][..],
        ),
        (
            "POST",
            "/v1/users",
            r#"{"name": "Ada", "email": ["a@example.com"]}"#,
            &["email", "string", "array"][..],
        ),
        (
            "GET",
            "/v1/users?page_size=many",
            "",
            &["page_size", "integer"][..],
        ),
        (
            "GET",
            "/v1/users?pageSize=1.5",
            "",
            &["pageSize", "integer"][..],
        ),
        (
            "GET",
            "/v1/users?page_size=99999999999",
            "",
            &["page_size", "32-bit"][..],
        ),
    ] {
        let refused = rest(&server, method, path, Some(&writer), body).await;
        assert_eq!(refused.status, 400, "{path} {body}: {}", refused.json());
        let message = refused.message();
        for needle in needles {
            assert!(message.contains(needle), "{path} {body}: {message}");
        }
        for stack in [
            "Protobuf",
            "prost",
            "serde",
            "invalid type",
            "DynamicMessage",
        ] {
            assert!(!message.contains(stack), "{path} {body}: {message}");
        }
    }
    server.stop().await;
}

/// hyper answers a target over 64 KiB (414), or a head over ~400 KiB (431)
/// with an empty body; below that, `server.max_uri_bytes` and
/// `server.max_header_bytes` answer with a Status JSON, as every refusal.
#[tokio::test]
async fn a_long_target_or_large_headers_are_refused_with_a_status() {
    let server = Server::start(config()).await;
    let writer = writer();
    let limit = config().server.max_uri_bytes;

    // Over the limit: 414, before any route is looked for.
    let query = format!("/v1/users?page_token={}", "t".repeat(limit));
    let refused = rest(&server, "GET", &query, Some(&writer), "").await;
    assert_eq!(refused.status, 414);
    assert_eq!(refused.json()["code"], 8, "RESOURCE_EXHAUSTED");
    assert!(
        refused.message().contains("server.max_uri_bytes"),
        "{}",
        refused.message()
    );
    assert!(refused.body.len() < BOUNDED, "{} bytes", refused.body.len());
    // At the limit, the route answers.
    let prefix = "/v1/users?page_token=";
    let at = format!("{prefix}{}", "t".repeat(limit - prefix.len()));
    assert_eq!(at.len(), limit);
    let answered = rest(&server, "GET", &at, Some(&writer), "").await;
    assert_ne!(answered.status, 414, "{}", answered.message());

    // Headers over `server.max_header_bytes`: 431.
    let big = "v".repeat(config().server.max_header_bytes);
    let refused = send(
        &server,
        "GET",
        "/v1/users",
        &[
            ("authorization", &format!("Bearer {writer}")),
            ("x-big", &big),
        ],
        "",
    )
    .await;
    assert_eq!(refused.status, 431);
    assert_eq!(refused.json()["code"], 8, "RESOURCE_EXHAUSTED");
    assert!(
        refused.message().contains("server.max_header_bytes"),
        "{}",
        refused.message()
    );

    // Past hyper's own limit, hyper's answer (documented): no body.
    let (status, _, body) = raw(
        &server,
        &format!("GET /v1/users?page_token={} HTTP/1.1", "t".repeat(70_000)),
        b"",
    )
    .await;
    assert_eq!(status, 414);
    assert!(body.is_empty());
    server.stop().await;
}
