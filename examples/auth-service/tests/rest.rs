//! The auth API's REST routes (`POST /v1/auth/login`, `/v1/auth/refresh`):
//! the same methods, and an error never quoting a sensitive value.

mod common;

use bytes::Bytes;
use common::{ADMIN, ADMIN_PASSWORD, Db, Server, TestDb, settings};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

async fn post(
    server: &Server,
    path: &str,
    body: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{}{path}", server.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (parts.status, parts.headers, text)
}

#[tokio::test]
async fn login_and_refresh_over_rest() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    let login = json!({ "username": ADMIN, "password": ADMIN_PASSWORD }).to_string();
    let (status, _, text) = post(&server, "/v1/auth/login", &login).await;
    assert_eq!(status, http::StatusCode::OK, "{text}");
    let tokens: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(tokens["tokenType"], "Bearer");
    let refresh = json!({ "refreshToken": tokens["refreshToken"], "requestId": "r-1" }).to_string();
    let (status, _, text) = post(&server, "/v1/auth/refresh", &refresh).await;
    assert_eq!(status, http::StatusCode::OK, "{text}");
    let next: Value = serde_json::from_str(&text).unwrap();
    assert_ne!(next["refreshToken"], tokens["refreshToken"]);

    let wrong = json!({ "username": ADMIN, "password": "not-it" }).to_string();
    let (status, headers, text) = post(&server, "/v1/auth/login", &wrong).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{text}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(text.contains("invalid username or password"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_does_not_decode_never_quotes_a_sensitive_value() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    // The password as a number: the decoder's own message would quote it.
    let (status, _, text) = post(
        &server,
        "/v1/auth/login",
        r#"{"username": "admin", "password": 98765432123}"#,
    )
    .await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST, "{text}");
    assert!(!text.contains("98765432123"), "{text}");
    // Named in the caller's terms: which field, and what it must be.
    assert!(
        text.contains("password: expected a string, got a number"),
        "{text}"
    );
    server.stop().await;
}
