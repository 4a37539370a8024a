//! REST/JSON from user.proto's `google.api.http` routes, with a real
//! HTTP/1.1 client: each call runs the gRPC method's pipeline (auth,
//! validation, metrics) and handler, and answers JSON in the proto3
//! mapping, or a `google.rpc.Status` with the HTTP status of its code.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use user_service::user_v1::GetUserRequest;

struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

async fn rest(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.grpc));
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
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
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    assert_eq!(parts.headers["content-type"], "application/json");
    Answer {
        status: parts.status,
        headers: parts.headers,
        json,
    }
}

#[tokio::test]
async fn routes_run_the_methods_pipelines_and_answer_json() {
    let server = Server::start(config()).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let reader = sign_hs(Algorithm::HS256, &claims("users:read"));

    let created = rest(
        &server,
        "POST",
        "/v1/users",
        Some(&writer),
        r#"{"name": " Ada ", "email": "ada@example.com"}"#,
    )
    .await;
    assert_eq!(created.status, http::StatusCode::OK, "{}", created.json);
    assert_eq!(created.json["id"], "u-000001");
    assert_eq!(created.json["name"], "Ada", "the handler ran: it trims");
    assert!(created.json["createdAt"].as_str().unwrap().ends_with('Z'));

    let got = rest(&server, "GET", "/v1/users/u-000001", Some(&reader), "").await;
    assert_eq!(
        (got.status, &got.json["email"]),
        (http::StatusCode::OK, &json!("ada@example.com"))
    );
    // The same user over gRPC, on the same port.
    let mut grpc = server.client().await;
    let user = grpc
        .get_user(with_token(
            GetUserRequest {
                id: "u-000001".into(),
            },
            &reader,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.name, "Ada");

    rest(
        &server,
        "POST",
        "/v1/users",
        Some(&writer),
        r#"{"name": "Bo", "email": "bo@example.com"}"#,
    )
    .await;
    let page = rest(&server, "GET", "/v1/users?page_size=1", Some(&reader), "").await;
    assert_eq!(
        page.json["users"].as_array().unwrap().len(),
        1,
        "{}",
        page.json
    );
    let token = page.json["nextPageToken"].as_str().unwrap().to_owned();
    let next = rest(
        &server,
        "GET",
        &format!("/v1/users?pageSize=1&pageToken={token}"),
        Some(&reader),
        "",
    )
    .await;
    assert_eq!(next.json["users"][0]["name"], "Bo", "{}", next.json);

    let health = rest(&server, "GET", "/v1/health", None, "").await;
    assert_eq!(health.json["status"], "STATUS_SERVING");
    server.stop().await;
}

#[tokio::test]
async fn failures_are_status_json_with_the_http_status_of_their_code() {
    let mut small = config();
    small.server.max_message_bytes = 1024;
    let server = Server::start(small).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let reader = sign_hs(Algorithm::HS256, &claims("users:read"));

    let missing = rest(&server, "GET", "/v1/users/u-000404", Some(&reader), "").await;
    assert_eq!(missing.status, http::StatusCode::NOT_FOUND);
    assert_eq!(missing.json["code"], 5);
    assert_eq!(missing.json["message"], "user \"u-000404\" not found");

    let anonymous = rest(&server, "GET", "/v1/users/u-000001", None, "").await;
    assert_eq!(anonymous.status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    assert_eq!(anonymous.json["code"], 16);
    let body = r#"{"name": "Ada", "email": "ada@example.com"}"#;
    let forbidden = rest(&server, "POST", "/v1/users", Some(&reader), body).await;
    assert_eq!(
        (forbidden.status, &forbidden.json["code"]),
        (http::StatusCode::FORBIDDEN, &json!(7))
    );

    // The method's validation, with its BadRequest detail.
    let invalid = rest(
        &server,
        "POST",
        "/v1/users",
        Some(&writer),
        r#"{"name": "  ", "email": "nope"}"#,
    )
    .await;
    assert_eq!(invalid.status, http::StatusCode::BAD_REQUEST);
    assert_eq!(
        invalid.json["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let fields: Vec<&str> = invalid.json["details"][0]["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email"]);
    let negative = rest(&server, "GET", "/v1/users?page_size=-1", Some(&reader), "").await;
    assert_eq!(negative.status, http::StatusCode::BAD_REQUEST);

    // What does not make a request at all.
    for (path, body, needle) in [
        ("/v1/users", "{not json", "the body is not JSON"),
        ("/v1/users", r#"{"name": "A", "nickname": "x"}"#, "nickname"),
        ("/v1/users", "[1, 2]", "must be a JSON object"),
    ] {
        let refused = rest(&server, "POST", path, Some(&writer), body).await;
        assert_eq!(refused.status, http::StatusCode::BAD_REQUEST, "{body}");
        assert!(
            refused.json["message"].as_str().unwrap().contains(needle),
            "{}",
            refused.json
        );
    }
    let nowhere = rest(&server, "GET", "/v1/nothing", Some(&reader), "").await;
    assert_eq!(nowhere.status, http::StatusCode::NOT_FOUND);
    assert_eq!(nowhere.json["message"], "no route for GET /v1/nothing");
    let unknown = rest(&server, "GET", "/v1/users?nickname=x", Some(&reader), "").await;
    assert_eq!(
        unknown.status,
        http::StatusCode::BAD_REQUEST,
        "{}",
        unknown.json
    );
    let large = format!(
        r#"{{"name": "{}", "email": "a@example.com"}}"#,
        "x".repeat(2000)
    );
    let too_large = rest(&server, "POST", "/v1/users", Some(&writer), &large).await;
    assert_eq!(too_large.status, http::StatusCode::PAYLOAD_TOO_LARGE);

    // Counted under the gRPC methods, once per call that reached them, as
    // REST calls.
    let metrics = server.scrape().await;
    let handled_by = |method: &str, code: &str, protocol: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains(&format!("grpc_method=\"{method}\""))
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains(&format!("protocol=\"{protocol}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("absent")
            .to_owned()
    };
    let handled = |method: &str, code: &str| handled_by(method, code, "rest");
    assert_eq!(handled_by("GetUser", "NotFound", "grpc"), "0");
    assert_eq!(handled("GetUser", "NotFound"), "1");
    assert_eq!(handled("GetUser", "Unauthenticated"), "1");
    assert_eq!(handled("CreateUser", "PermissionDenied"), "1");
    // Refused before they became calls, and counted as the calls they were
    // meant to be: the three bodies that are no CreateUserRequest beside
    // the one validation refused, a query naming no field beside the
    // negative page size, and the body over the limit.
    assert_eq!(handled("CreateUser", "InvalidArgument"), "4");
    assert_eq!(handled("ListUsers", "InvalidArgument"), "2");
    assert_eq!(handled("CreateUser", "ResourceExhausted"), "1");
    server.stop().await;
}

#[tokio::test]
async fn cors_covers_rest_routes_for_the_configured_origins() {
    let mut config = config();
    config.http.cors.allowed_origins = vec!["https://app.example".to_owned()];
    let server = Server::start(config).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let preflight = |origin: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{}/v1/users", server.grpc))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = client
        .request(preflight("https://app.example"))
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = client
        .request(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The call itself carries the header for the page to read its answer.
    let call = http::Request::get(format!("http://{}/v1/health", server.grpc))
        .header("origin", "https://app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answered = client.request(call).await.unwrap();
    assert_eq!(answered.status(), http::StatusCode::OK);
    assert_eq!(
        answered.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_stream_is_ndjson_or_server_sent_events() {
    let server = Server::start(config()).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    for (name, email) in [
        ("Ada", "ada@example.com"),
        ("Bo", "bo@example.com"),
        ("Cy", "cy@example.com"),
    ] {
        let body = json!({ "name": name, "email": email }).to_string();
        rest(&server, "POST", "/v1/users", Some(&writer), &body).await;
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let export = |accept: Option<&str>, token: Option<&str>| {
        let mut request = http::Request::get(format!("http://{}/v1/users:export", server.grpc));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        client.request(request.body(Full::new(Bytes::new())).unwrap())
    };
    let text = |response: http::Response<hyper::body::Incoming>| async move {
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (content_type, String::from_utf8(bytes.to_vec()).unwrap())
    };

    let (content_type, body) = text(export(None, Some(&writer)).await.unwrap()).await;
    assert_eq!(content_type, "application/x-ndjson");
    let names: Vec<String> = body
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["result"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["Ada", "Bo", "Cy"], "{body}");

    let (content_type, body) = text(
        export(Some("text/event-stream"), Some(&writer))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(content_type, "text/event-stream");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{body}");
    assert!(events.iter().all(|e| e.starts_with("data: {")), "{body}");

    // Refused before the stream: a status JSON, as for a unary method.
    let refused = export(None, None).await.unwrap();
    assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_on_the_http_port() {
    let server = Server::start(config()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::get(format!("http://{}/openapi.json", server.metrics))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "user.v1.UserService");
    assert_eq!(
        doc["paths"]["/v1/users"]["post"]["security"][0]["bearer"][0],
        "users:write"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_ignored_when_configured_and_refused_otherwise() {
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let body = r#"{"name": "Ada", "email": "ada@example.com", "nickname": "countess"}"#;

    let strict = Server::start(config()).await;
    let refused = rest(&strict, "POST", "/v1/users", Some(&writer), body).await;
    assert_eq!(
        refused.status,
        http::StatusCode::BAD_REQUEST,
        "{}",
        refused.json
    );
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("nickname"),
        "names the field: {}",
        refused.json
    );
    strict.stop().await;

    let mut config = config();
    config.http.discard_unknown_fields = true;
    let lenient = Server::start(config).await;
    let created = rest(&lenient, "POST", "/v1/users", Some(&writer), body).await;
    assert_eq!(created.status, http::StatusCode::OK, "{}", created.json);
    assert_eq!(created.json["name"], "Ada");
    let listed = rest(
        &lenient,
        "GET",
        "/v1/users?page_size=1&nickname=countess",
        Some(&writer),
        "",
    )
    .await;
    assert_eq!(listed.status, http::StatusCode::OK, "{}", listed.json);
    assert_eq!(listed.json["users"][0]["name"], "Ada");
    // Fields that are there still have to be right.
    let wrong = rest(
        &lenient,
        "GET",
        "/v1/users?page_size=many",
        Some(&writer),
        "",
    )
    .await;
    assert_eq!(
        wrong.status,
        http::StatusCode::BAD_REQUEST,
        "{}",
        wrong.json
    );
    lenient.stop().await;
}
