//! A real user-service on 127.0.0.1 ephemeral ports, and helpers to call it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel::config::{Config, Environment, Loader, StoreConfig};
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

/// The variable that names the PostgreSQL database of the tests.
pub const POSTGRES_ENV: &str = "KEEL_TEST_POSTGRES_URL";

/// Which database a store test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database: a SQLite file in a temporary directory, or a new
/// schema in the PostgreSQL database of `KEEL_TEST_POSTGRES_URL` (the test
/// fails, rather than skips, when it is not set). Removed when dropped.
pub struct TestDb {
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

static NEXT_SCHEMA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        use keel::store::{Store, sqlx};
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("users.db").display()
                );
                TestDb {
                    config: StoreConfig::with_url(url),
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Db::Postgres => {
                let base = match std::env::var(POSTGRES_ENV) {
                    Ok(url) if !url.trim().is_empty() => url,
                    _ => panic!(
                        "{POSTGRES_ENV} is not set: the PostgreSQL tests need a database, such as \
                         postgres://postgres@127.0.0.1:5432/test (trust auth). `cargo xtask test` \
                         starts PostgreSQL on 127.0.0.1:5432 and sets it."
                    ),
                };
                let schema = format!(
                    "keel_test_users_{}_{}",
                    std::process::id(),
                    NEXT_SCHEMA.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let admin = Store::connect_url(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot reach PostgreSQL: {e}"));
                keel::with_store!(&admin, pool => {
                    for statement in [
                        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                        format!("CREATE SCHEMA {schema}"),
                    ] {
                        sqlx::query(sqlx::AssertSqlSafe(statement))
                            .execute(pool)
                            .await
                            .expect("create schema");
                    }
                });
                admin.close().await;
                let separator = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    config: StoreConfig::with_url(format!(
                        "{base}{separator}options[search_path]={schema}"
                    )),
                    _dir: None,
                    schema: Some((base, schema)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        use keel::store::{Store, sqlx};
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(store) = Store::connect_url(&base).await {
                    let _ = keel::with_store!(&store, pool => {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(pool)
                        .await
                        .map(|_| ())
                    });
                    store.close().await;
                }
            });
        })
        .join();
    }
}
