//! gRPC-Web (`http.grpc_web`) and CORS (`http.cors.allowed_origins`) on the
//! gRPC port, with a real HTTP/1.1 client: the same pipeline as gRPC (auth,
//! metrics under the gRPC method, the handler), and browsers' preflights
//! answered for the configured origins only. Off by default.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use prost::Message as _;
use user_service::user_v1::{CreateUserRequest, GetUserRequest, HealthCheckResponse, User};

const ALLOWED: &str = "https://app.example";

fn web_config() -> keel_rpc::config::Config {
    let mut config = config();
    config.http.grpc_web = true;
    config.http.cors.allowed_origins = vec![ALLOWED.to_owned()];
    config
}

/// A gRPC-Web answer: its HTTP status, headers, messages and trailers.
struct WebReply {
    status: http::StatusCode,
    headers: http::HeaderMap,
    messages: Vec<Bytes>,
    trailers: String,
}

/// One length-prefixed gRPC-Web frame.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend((payload.len() as u32).to_be_bytes());
    framed.extend(payload);
    framed
}

/// Calls `method` of UserService with gRPC-Web over HTTP/1.1 (`text`: the
/// base64 `-text` variant).
async fn call(
    server: &Server,
    method: &str,
    message: &[u8],
    token: Option<&str>,
    text: bool,
) -> WebReply {
    let body = frame(0, message);
    let (content_type, body) = match text {
        false => ("application/grpc-web+proto", body),
        true => (
            "application/grpc-web-text",
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .into_bytes(),
        ),
    };
    send(server, method, content_type, body, token).await
}

/// Sends `body` (encoded as `content_type` says) to `method` of UserService
/// over HTTP/1.1, and reads the answer.
async fn send(
    server: &Server,
    method: &str,
    content_type: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> WebReply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let text = content_type.starts_with("application/grpc-web-text");
    let mut request = http::Request::post(format!(
        "http://{}/user.v1.UserService/{method}",
        server.grpc
    ))
    .header("content-type", content_type)
    // The answer comes in the encoding asked for.
    .header("accept", content_type)
    .header("x-grpc-web", "1");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .expect("an HTTP/1.1 answer");
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (parts, body) = response.into_parts();
    let mut bytes = body.collect().await.unwrap().to_bytes().to_vec();
    if text {
        // Each frame is encoded on its own: padding can end a piece midway.
        let text = String::from_utf8(bytes).expect("base64 text");
        let mut decoded = Vec::new();
        let mut piece = String::new();
        for c in text.chars().filter(|c| !c.is_whitespace()) {
            piece.push(c);
            if c == '=' && piece.len().is_multiple_of(4) {
                decoded.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(&piece)
                        .unwrap(),
                );
                piece.clear();
            }
        }
        if !piece.is_empty() {
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&piece)
                    .unwrap(),
            );
        }
        bytes = decoded;
    }
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    let mut rest = bytes.as_slice();
    while let [flag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (payload, after) = tail.split_at(len);
        match flag & 0x80 {
            0 => messages.push(Bytes::copy_from_slice(payload)),
            _ => trailers.push_str(std::str::from_utf8(payload).unwrap()),
        }
        rest = after;
    }
    WebReply {
        status: parts.status,
        headers: parts.headers,
        messages,
        trailers: trailers.to_ascii_lowercase(),
    }
}

#[tokio::test]
async fn grpc_web_calls_go_through_the_same_pipeline() {
    let server = Server::start(web_config()).await;

    let health = call(&server, "HealthCheck", &[], None, false).await;
    assert_eq!(health.status, http::StatusCode::OK);
    assert!(
        health.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{:?}",
        health.headers
    );
    let reply = HealthCheckResponse::decode(health.messages[0].clone()).unwrap();
    assert_eq!(reply.status, 1, "SERVING");
    assert!(
        health.trailers.contains("grpc-status:0"),
        "{}",
        health.trailers
    );

    // The auth rule of the method, as over gRPC.
    let get = GetUserRequest {
        id: "u-000001".into(),
    }
    .encode_to_vec();
    let refused = call(&server, "GetUser", &get, None, false).await;
    let status = refused
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| refused.trailers.clone());
    assert!(status.contains("16"), "UNAUTHENTICATED: {status}");

    // A call with a token creates the user the gRPC client then reads.
    let token = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let create = CreateUserRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    }
    .encode_to_vec();
    let created = call(&server, "CreateUser", &create, Some(&token), true).await;
    assert!(
        created.trailers.contains("grpc-status:0"),
        "{}",
        created.trailers
    );
    let user = User::decode(created.messages[0].clone()).unwrap();
    let mut grpc = server.client().await;
    let read = grpc
        .get_user(with_token(
            GetUserRequest {
                id: user.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.name, "Ada");

    // Counted under the gRPC method, once per call, as gRPC-Web; the
    // gRPC call that read the user back as gRPC.
    let metrics = server.scrape().await;
    for (method, code, protocol, count) in [
        ("HealthCheck", "OK", "grpc_web", 1),
        ("HealthCheck", "OK", "grpc", 0),
        ("GetUser", "Unauthenticated", "grpc_web", 1),
        ("CreateUser", "OK", "grpc_web", 1),
        ("GetUser", "OK", "grpc", 1),
    ] {
        let series = metrics
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains(&format!("grpc_method=\"{method}\""))
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains(&format!("protocol=\"{protocol}\""))
            })
            .unwrap_or_else(|| panic!("{method} {code} {protocol}"));
        assert!(series.ends_with(&format!(" {count}")), "{series}");
    }
    server.stop().await;
}

#[tokio::test]
async fn preflights_are_answered_for_the_configured_origins_only() {
    let server = Server::start(web_config()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let preflight = |origin: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(format!(
                "http://{}/user.v1.UserService/GetUser",
                server.grpc
            ))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = client.request(preflight(ALLOWED)).await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], ALLOWED);
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        headers.contains("authorization") && headers.contains("x-grpc-web"),
        "{headers}"
    );
    let refused = client
        .request(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        refused.headers()
    );
    server.stop().await;
}

#[tokio::test]
async fn without_grpc_web_a_grpc_web_call_is_not_translated() {
    // (user-service has REST routes, so its port speaks HTTP/1.1 anyway.)
    let server = Server::start(config()).await;
    let reply = call(&server, "HealthCheck", &[], None, false).await;
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        !content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    server.stop().await;
}

/// The gRPC-Web spec lets a text client encode its body in pieces, each
/// padded on its own (`base64(a) + base64(b)`): the call is served as if
/// it were one text.
#[tokio::test]
async fn a_text_body_in_pieces_padded_each_is_one_call() {
    let server = Server::start(web_config()).await;
    let token = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let create = frame(
        0,
        &CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        }
        .encode_to_vec(),
    );
    // Cut where both pieces need padding: 4 bytes and the rest.
    let (first, second) = create.split_at(4);
    let base64 = base64::engine::general_purpose::STANDARD;
    let (first, second) = (base64.encode(first), base64.encode(second));
    assert!(
        first.ends_with("==") && second.ends_with('='),
        "{first}{second}"
    );
    let body = first + &second;
    let created = send(
        &server,
        "CreateUser",
        "application/grpc-web-text",
        body.into_bytes(),
        Some(&token),
    )
    .await;
    assert!(
        created.trailers.contains("grpc-status:0"),
        "{} {:?}",
        created.trailers,
        created.headers
    );
    let user = User::decode(created.messages[0].clone()).unwrap();
    assert_eq!(user.name, "Ada");

    // What is not base64 is still refused.
    let refused = send(
        &server,
        "CreateUser",
        "application/grpc-web-text",
        b"QQ=QQQ==".to_vec(),
        Some(&token),
    )
    .await;
    let status = (refused.headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| refused.trailers.clone());
    assert!(status.contains("13"), "INTERNAL: {status}");
    server.stop().await;
}
