//! The auth service on 127.0.0.1 ephemeral ports over a fresh store, on
//! SQLite (a file in a temporary directory) or PostgreSQL (a fresh schema in
//! the database of `KEEL_TEST_POSTGRES_URL`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{LoginRequest, TokenResponse};
use auth_service::{App, AuthStore, DEFAULT_CONFIG, DEVELOPMENT_CONFIG, Settings};
use keel_rpc::config::{Environment, Loader, StoreConfig};
use tokio::net::TcpListener;
use tonic::transport::Channel;

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

pub use keel_rpc::testing::{Db, TestDb};

/// The auth store of `test`, migrated.
pub async fn auth_store(test: &TestDb) -> AuthStore {
    let store = test.store().await.expect("connect store");
    AuthStore::new(store).await.expect("migrate")
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
    let mut settings = Settings::from_loader(&loader).expect("test settings are valid");
    settings.store = store.clone();
    settings
}

pub fn settings(store: &StoreConfig) -> Settings {
    settings_with(store, "")
}

/// The auth service served by [`keel_rpc::testing::TestServer`].
pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    server: keel_rpc::testing::TestServer,
}

impl Server {
    /// Serves the auth service with `settings` until stopped (or dropped).
    pub async fn start(settings: &Settings) -> Server {
        Server::start_with_http(settings, None).await
    }

    /// [`Server::start`], serving its HTTP port (`/metrics`, the JWKS) on
    /// `http` too.
    pub async fn start_with_http(settings: &Settings, http: Option<TcpListener>) -> Server {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Server::start_on(settings, grpc, http).await
    }

    /// [`Server::start_with_http`] on the gRPC listener `grpc`.
    pub async fn start_on(
        settings: &Settings,
        grpc: TcpListener,
        http: Option<TcpListener>,
    ) -> Server {
        let mut config = settings.keel();
        config.server.lame_duck = Duration::ZERO;
        config.server.drain_timeout = Duration::from_secs(5);
        let app = App::new(settings).await.expect("auth service app");
        let server = app.server(&config).expect("server");
        let listeners = keel_rpc::serve::Listeners {
            grpc,
            metrics: http,
        };
        let server = keel_rpc::testing::TestServer::start_on(server, listeners).expect("serving");
        Server {
            addr: server.addr(),
            app,
            server,
        }
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.server.url())
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

    /// Ends the server at once, as a crash would (calls in flight end
    /// `UNAVAILABLE`).
    pub async fn kill(self) {
        self.server.stop().await.expect("server stopped");
        self.app.handler.store().store().close().await;
    }

    /// The graceful shutdown; it must end cleanly.
    pub async fn stop(self) {
        self.server
            .shutdown(Duration::from_secs(10))
            .await
            .expect("server ran and stopped cleanly");
        self.app.handler.store().store().close().await;
    }
}

// (Not every test binary puts tokens on requests.)
#[allow(unused_imports)]
pub use keel_rpc::testing::with_token;
