//! A real user-service on 127.0.0.1 ephemeral ports, and helpers to call it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_rpc::config::{Config, Environment, Loader};
use serde_json::{Value, json};
use tonic::transport::Channel;
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::{DEFAULT_CONFIG, DEV_SECRET, DEVELOPMENT_CONFIG, SERVICES, Users};

/// The example's embedded layers in development (its development secret
/// verifies tokens), without the process environment.
pub fn development() -> Loader {
    Loader::new()
        .environment(Environment::Development)
        .defaults_toml(DEFAULT_CONFIG)
        .development_toml(DEVELOPMENT_CONFIG)
}

/// [`development`]'s configuration, with no lame-duck period so servers stop
/// at once.
pub fn config() -> Config {
    let mut config = development().load().expect("embedded defaults are valid");
    config.server.lame_duck = Duration::ZERO;
    config.server.drain_timeout = Duration::from_secs(5);
    config
}

/// The example served by [`keel_rpc::testing::TestServer`] (gRPC and
/// `/metrics` on ephemeral ports of 127.0.0.1).
pub struct Server {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    server: keel_rpc::testing::TestServer,
}

impl Server {
    /// Serves the example with `config` until stopped (or dropped), its
    /// users in a fresh in-memory SQLite store.
    pub async fn start(config: Config) -> Server {
        let users = Users::in_memory().await.expect("in-memory store");
        Server::start_with(config, users).await
    }

    /// Serves the example with `config` and `users` until stopped (or dropped).
    pub async fn start_with(config: Config, users: Users) -> Server {
        Server::start_audited(config, users, user_service::AuditLog::default()).await
    }

    /// [`Server::start_with`], the audit layer recording into `audit`.
    pub async fn start_audited(
        config: Config,
        users: Users,
        audit: user_service::AuditLog,
    ) -> Server {
        let keel = keel_rpc::Keel::new(&config, SERVICES).expect("keel runtime");
        let server = user_service::server_with_audit(&keel, &config, users, audit).expect("server");
        let server = keel_rpc::testing::TestServer::start(server)
            .await
            .expect("serving");
        Server {
            grpc: server.addr(),
            metrics: server.metrics_addr().expect("metrics are on"),
            server,
        }
    }

    pub async fn client(&self) -> UserServiceClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(self.server.url())
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect");
        UserServiceClient::new(channel)
    }

    /// Scrapes `/metrics` over HTTP.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics)
            .await
            .expect("connect metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        body.to_owned()
    }

    /// The graceful shutdown (no lame duck in [`config`]); it must end cleanly.
    pub async fn stop(self) {
        self.server
            .shutdown(Duration::from_secs(10))
            .await
            .expect("server ran and stopped cleanly");
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid access token for the example's defaults.
pub fn claims(scope: &str) -> Value {
    let now = now();
    json!({
        "sub": "alice",
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": "keel-dev",
        "aud": "keel-examples",
        "token_use": "access",
    })
}

/// Signs `claims` with `alg` and the dev secret.
pub fn sign_hs(alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    sign_with(
        alg,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
}

pub fn sign_with(
    alg: jsonwebtoken::Algorithm,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).expect("sign")
}

pub use keel_rpc::testing::with_token;

/// A request carrying exactly this `authorization` value.
pub fn with_auth<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii header"));
    request
}

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// (Used by the store tests only.)
#[allow(unused_imports)]
pub use keel_rpc::testing::{Db, POSTGRES_ENV, TestDb};

/// One HTTP/1.1 answer from `stream` (to a `HEAD` request: no body,
/// whatever its `content-length`).
pub async fn read_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    is_head: bool,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut chunk = [0; 8192];
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "closed before an answer: {buffer:?}");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = buffer[end + 4..].to_vec();
    while !is_head && body.len() < length {
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "closed midway through the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status.parse().unwrap(), headers, body)
}
