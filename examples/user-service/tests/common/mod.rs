//! A real user-service on 127.0.0.1 ephemeral ports, and helpers to call it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel::config::{Config, Environment, Loader};
use serde_json::{Value, json};
use tokio::net::TcpListener;
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

pub struct Server {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// Each send is a shutdown signal (the first starts the graceful
    /// shutdown, a second ends everything at once).
    pub signals: tokio::sync::mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<Result<(), keel::Error>>>,
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
        let keel = keel::Keel::new(&config, SERVICES).expect("keel runtime");
        let server = user_service::server_with_audit(&keel, &config, users, audit).expect("server");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let (grpc_addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let (signals, received) = tokio::sync::mpsc::channel(2);
        let listeners = keel::serve::Listeners {
            grpc,
            metrics: Some(metrics),
        };
        let task = tokio::spawn(server.serve_on(
            listeners,
            tokio_stream::wrappers::ReceiverStream::new(received),
        ));
        Server {
            grpc: grpc_addr,
            metrics: metrics_addr,
            signals,
            task: Some(task),
        }
    }

    pub async fn client(&self) -> UserServiceClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
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

    pub async fn stop(mut self) {
        let _ = self.signals.send(()).await;
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed before `stop`: end the server at once.
        if let Some(task) = self.task.take() {
            task.abort();
        }
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

/// A request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    with_auth(message, &format!("Bearer {token}"))
}

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
pub use keel::testing::{Db, POSTGRES_ENV, TestDb};
