//! The auth service on 127.0.0.1 ephemeral ports over a fresh store, on
//! SQLite (a file in a temporary directory) or PostgreSQL (a fresh schema in
//! the database of `KEEL_TEST_POSTGRES_URL`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running `auth-service` child process, killed when dropped.
pub struct Process {
    child: Child,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Process {
    pub fn start(store_url: &str, dir: &std::path::Path, name: &str) -> Process {
        Process::start_with(store_url, dir, name, &[])
    }

    /// [`Process::start`] with more `KEEL_*` variables.
    pub fn start_with(
        store_url: &str,
        dir: &std::path::Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Process::start_at(store_url, dir, name, addr, env)
    }

    /// [`Process::start_with`] serving gRPC on `addr` (an address an earlier
    /// process served on, say).
    pub fn start_at(
        store_url: &str,
        dir: &std::path::Path,
        name: &str,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_auth-service"));
        // Only this test's configuration: no KEEL_* variable of the caller.
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("KEEL_")
            {
                command.env_remove(key);
            }
        }
        command
            .current_dir(dir)
            .env("KEEL_SERVICE__ENVIRONMENT", "development")
            .env("KEEL_SERVER__ADDR", addr.to_string())
            .env("KEEL_METRICS__ENABLED", "false")
            .env("KEEL_STORE__URL", store_url)
            .env("KEEL_PASSWORDS__MEMORY_KIB", "64")
            .env("KEEL_PASSWORDS__ITERATIONS", "1")
            .env("KEEL_BOOTSTRAP__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().expect("spawn auth-service");
        Process { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connected client, once the service answers (within 30 s).
    pub async fn client(&mut self) -> AuthServiceClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("auth-service exited with {status}:\n{}", self.log());
            }
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                .expect("endpoint")
                .timeout(Duration::from_secs(10));
            if let Ok(channel) = endpoint.connect().await {
                let mut client = AuthServiceClient::new(channel);
                if client
                    .get_jwks(auth_service::auth_v1::GetJwksRequest {})
                    .await
                    .is_ok()
                {
                    return client;
                }
            }
            assert!(
                Instant::now() < deadline,
                "auth-service did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, the graceful shutdown: how long it took to exit (at most
    /// 60 s; it must exit successfully).
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exited with {status}:\n{}", self.log());
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "auth-service did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
