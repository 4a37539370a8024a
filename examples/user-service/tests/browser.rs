//! In headless Chromium: pages on other origins call user-service with
//! `fetch()`, as a web app does — its REST route `GET /v1/users/{id}` and
//! its gRPC-Web `GetUser`, with a token and without. From the origin
//! `http.cors.allowed_origins` lists, the answers are the service's (the
//! user; 401 / `UNAUTHENTICATED` without a token); from any other, the
//! browser keeps every answer from the page, and sends no call that needs
//! a preflight (a token, gRPC-Web's content type) at all.
//!
//! The browser is Debian's `chromium`, driven by `playwright-core` from
//! `tests/browser/` (`npm ci` there); `cargo xtask test` installs both when
//! missing. Without them this test fails, saying what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use prost::Message as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use user_service::user_v1::{CreateUserRequest, User};

/// How long the browser gets for every page's calls.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// Serves a blank page on an ephemeral port of 127.0.0.1 (every path): its
/// origin is the page's.
async fn page_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let page = "<!doctype html><title>a web app</title>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    origin
}

/// The browser: `CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install chromium`), or run \
         `cargo xtask test`, which does",
        path.display()
    );
    path
}

/// The driver's directory, its packages installed.
fn driver() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: `npm ci --prefix {}`, or run `cargo xtask test`, which does",
        dir.display()
    );
    dir
}

/// Each page's outcomes, by its URL.
async fn drive(api: &str, pages: &[&str], token: &str, user_id: &str) -> Value {
    let mut node = tokio::process::Command::new("node");
    node.arg("drive.mjs")
        .current_dir(driver())
        .env("CHROMIUM", chromium())
        .env("API", api)
        .env("PAGES", pages.join(","))
        .env("TOKEN", token)
        .env("USER_ID", user_id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_TIMEOUT, node.output())
        .await
        .expect("the browser finished in time")
        .expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the driver failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_calls_rest_and_grpc_web_and_others_are_refused() {
    let allowed = page_origin().await;
    let other = page_origin().await;
    let mut config = config();
    config.http.grpc_web = true;
    config.http.cors.allowed_origins = vec![allowed.clone()];
    let server = Server::start(config).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let id = server
        .client()
        .await
        .create_user(with_token(
            CreateUserRequest {
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            &writer,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let reader = sign_hs(Algorithm::HS256, &claims("users:read"));
    let api = format!("http://{}", server.grpc);
    let allowed_page = format!("{allowed}/app");
    let other_page = format!("{other}/app");
    let results = drive(&api, &[&allowed_page, &other_page], &reader, &id).await;

    // From the allowed origin: the service's answers.
    let page = &results[&allowed_page];
    assert_eq!(page["rest"]["status"], 200, "{page}");
    assert_eq!(page["rest"]["json"]["name"], "Ada", "{page}");
    assert_eq!(page["restWithoutToken"]["status"], 401, "{page}");
    assert_eq!(page["restWithoutToken"]["json"]["code"], 16, "{page}");
    let web = &page["grpcWeb"];
    assert_eq!(web["status"], 200, "{page}");
    assert!(
        web["trailers"].as_str().unwrap().contains("grpc-status:0"),
        "{page}"
    );
    let message: Vec<u8> = serde_json::from_value(web["messages"][0].clone()).unwrap();
    let user = User::decode(message.as_slice()).unwrap();
    assert_eq!((user.id.as_str(), user.name.as_str()), (id.as_str(), "Ada"));
    // Trailers-only: the status in headers CORS lets the page read.
    assert_eq!(page["grpcWebWithoutToken"]["grpcStatus"], "16", "{page}");

    // From another origin: refused by the browser, all four.
    let page = &results[&other_page];
    for call in ["rest", "restWithoutToken", "grpcWeb", "grpcWebWithoutToken"] {
        assert!(
            page[call]["refused"]
                .as_str()
                .is_some_and(|r| r.starts_with("TypeError")),
            "{call}: {page}"
        );
    }

    // Each call the allowed page made counted once, under GetUser and its
    // protocol. Of the other page's, those with a token or gRPC-Web's
    // content type needed a preflight, which was refused, so they never
    // reached the service; a plain GET without a token is a "simple"
    // request, which the browser sends without asking: the service refused
    // it (UNAUTHENTICATED), and the browser kept even that from the page.
    let metrics = server.scrape().await;
    for (code, protocol, count) in [
        ("OK", "rest", 1),
        ("OK", "grpc_web", 1),
        ("Unauthenticated", "rest", 2),
        ("Unauthenticated", "grpc_web", 1),
    ] {
        let series = metrics
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains(r#"grpc_method="GetUser""#)
                    && l.contains(&format!(r#"grpc_code="{code}""#))
                    && l.contains(&format!(r#"protocol="{protocol}""#))
            })
            .unwrap_or_else(|| panic!("GetUser {code} {protocol}:\n{metrics}"));
        assert!(series.ends_with(&format!(" {count}")), "{series}");
    }
    server.stop().await;
}
