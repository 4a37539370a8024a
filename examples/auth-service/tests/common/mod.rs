//! The auth service on 127.0.0.1 ephemeral ports over a fresh store, on
//! SQLite (a file in a temporary directory) or PostgreSQL (a fresh schema in
//! the database of `KEEL_TEST_POSTGRES_URL`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{LoginRequest, TokenResponse};
use auth_service::{App, AuthStore, DEFAULT_CONFIG, DEVELOPMENT_CONFIG, Settings};
use keel::config::{Environment, Loader, StoreConfig};
use keel::store::Store;
use keel::store::sqlx;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// The variable that names the PostgreSQL database of the tests.
pub const POSTGRES_ENV: &str = "KEEL_TEST_POSTGRES_URL";

/// The bootstrap administrator of [`settings`].
pub const ADMIN: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// Cheap argon2 and a test administrator over the embedded defaults.
const TEST_OVERRIDES: &str = r#"
[passwords]
memory_kib = 64
iterations = 1
parallelism = 1

[bootstrap]
admin_username = "admin"
admin_password = "admin-password-for-tests"
admin_scopes = ["users:read", "users:write"]
"#;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL of the tests. PostgreSQL tests fail, rather than
/// skip, when it is not set.
pub fn postgres_url() -> String {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{POSTGRES_ENV} is not set: the PostgreSQL tests need a database, such as \
             postgres://postgres@127.0.0.1:5432/test (trust auth). `cargo xtask test` starts \
             PostgreSQL on 127.0.0.1:5432 and sets it."
        ),
    }
}

/// A fresh, empty database: dropped (PostgreSQL schema) or deleted (SQLite
/// directory) when this is dropped.
pub struct TestDb {
    pub db: Db,
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
                TestDb {
                    db,
                    config: StoreConfig::with_url(url),
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Db::Postgres => {
                let base = postgres_url();
                let schema = format!(
                    "keel_test_{}_{}_{}",
                    std::process::id(),
                    NEXT_SCHEMA.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos())
                );
                let admin = Store::connect_url(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot reach PostgreSQL: {e}"));
                keel::with_store!(&admin, pool => {
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                        .execute(pool)
                        .await
                        .expect("create schema");
                });
                admin.close().await;
                let separator = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{separator}options[search_path]={schema}");
                TestDb {
                    db,
                    config: StoreConfig::with_url(url),
                    _dir: None,
                    schema: Some((base, schema)),
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.config).await.expect("connect store")
    }

    pub async fn auth_store(&self) -> AuthStore {
        AuthStore::new(self.store().await).await.expect("migrate")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
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
        });
        let _ = cleanup.join();
    }
}

/// The embedded defaults with cheap hashing and the test administrator, on
/// `store`, plus `extra` TOML over them.
pub fn settings_with(store: &StoreConfig, extra: &str) -> Settings {
    let loader = Loader::new()
        .environment(Environment::Development)
        .defaults_toml(DEFAULT_CONFIG)
        .development_toml(DEVELOPMENT_CONFIG)
        // Above the development credentials, as a developer's own would be.
        .development_toml(TEST_OVERRIDES)
        .development_toml(extra);
    let mut settings = Settings::from_loader(loader).expect("test settings are valid");
    settings.keel.store = store.clone();
    settings
}

pub fn settings(store: &StoreConfig) -> Settings {
    settings_with(store, "")
}

pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    /// Each send is a shutdown signal (the first starts the graceful
    /// shutdown, a second ends everything at once).
    signals: tokio::sync::mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<Result<(), keel::Error>>>,
}

impl Server {
    /// Serves the auth service with `settings` until stopped (or dropped).
    pub async fn start(settings: &Settings) -> Server {
        Server::start_with_http(settings, None).await
    }

    /// [`Server::start`], serving its HTTP port (`/metrics`, the JWKS) on
    /// `http` too.
    pub async fn start_with_http(settings: &Settings, http: Option<TcpListener>) -> Server {
        let mut config = settings.keel.clone();
        config.server.lame_duck = Duration::ZERO;
        config.server.drain_timeout = Duration::from_secs(5);
        let app = App::new(settings).await.expect("auth service app");
        let server = app.server(&config).expect("server");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (signals, received) = tokio::sync::mpsc::channel(2);
        let listeners = keel::serve::Listeners {
            grpc: listener,
            metrics: http,
        };
        let task = tokio::spawn(server.serve_on(
            listeners,
            tokio_stream::wrappers::ReceiverStream::new(received),
        ));
        Server {
            addr,
            app,
            signals,
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    pub async fn login(&self, username: &str, password: &str) -> TokenResponse {
        self.client()
            .await
            .login(LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("login {username}: {status:?}"))
            .into_inner()
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
        self.app.handler.store().store().close().await;
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

/// A request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Defines `sqlite_<name>` and `postgres_<name>` tests running
/// `async fn name(db: Db)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
    };
}
