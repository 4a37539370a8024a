//! Tests of a Keel service in a few lines (cargo feature `testing`): the
//! service served on an ephemeral port of 127.0.0.1 as in production
//! ([`TestServer`]), a client runtime for its generated client
//! ([`client`]), REST calls to its `google.api.http` routes
//! ([`TestServer::rest`]), access tokens with given scopes ([`token`], or
//! [`TestKey`] for a service that verifies with a public key), the error
//! details Keel's answers carry ([`StatusExt`]), and, with the `store`
//! feature, a fresh database per test on SQLite and on PostgreSQL
//! ([`TestDb`], [`on_both_backends!`](crate::on_both_backends)); for
//! replicas found by name, a DNS server whose records the test changes
//! ([`TestDns`]); for limits shared through Redis, a Redis server of the
//! test's own ([`TestRedis`]).
//!
//! ```no_run
//! # async fn run(config: keel_rpc::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use keel_rpc::testing::{TestServer, token, with_token};
//!
//! // With the generated `user_v1`: `&[&user_v1::USER_SERVICE_POLICY]`.
//! let keel = keel_rpc::Keel::new(&config, &[])?;
//! let server = TestServer::start(
//!     keel.server(&config), // .add_service(user_v1::user_service(Users::default(), &keel)?)
//! )
//! .await?;
//! let token = token(&config, "ada", &["users:read"])?;
//! // let mut users = user_v1::connect_user_service(server.url(), &keel_rpc::testing::client())?;
//! // users.get_user(with_token(GetUserRequest { id: "u-1".into() }, &token)).await?;
//! # let _ = (with_token((), &token), server.url());
//! server.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::IssueError;
use crate::config::Config;
use crate::serve::{Listeners, Server};

/// How long [`TestServer::stop`] waits for the server to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long tokens from [`token`] are valid.
const TOKEN_TTL: Duration = Duration::from_secs(600);

/// A [`Server`] serving on ephemeral ports of 127.0.0.1 (gRPC, and
/// `/metrics` when the configuration enables it) until [`stop`](Self::stop)ped
/// or [`shutdown`](Self::shutdown); dropped, it ends at once.
#[derive(Debug)]
pub struct TestServer {
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
    /// Each send is a shutdown signal (the first starts the graceful
    /// shutdown, a second ends everything at once).
    signals: mpsc::Sender<()>,
    task: Option<JoinHandle<Result<(), crate::Error>>>,
}

/// Why a [`TestServer`] did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// An ephemeral port of 127.0.0.1 could not be bound, or `/metrics`
    /// could not be read.
    #[error("binding 127.0.0.1:0 or reading /metrics: {0}")]
    Bind(#[from] std::io::Error),
    /// [`TestServer::scrape`] of a server whose configuration turns metrics off.
    #[error("the server's configuration turns metrics off")]
    NoMetrics,
    /// The server ended with an error.
    #[error("the server failed: {0}")]
    Serve(#[from] crate::Error),
    /// The server did not stop within the timeout.
    #[error("the server did not stop within {0:?}")]
    Timeout(Duration),
    /// The server's task panicked or was cancelled.
    #[error("the server's task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl TestServer {
    /// Serves `server` on ephemeral ports of 127.0.0.1, as
    /// [`Server::serve_on`] does in production (the configuration's server
    /// settings, lame duck and drain included).
    pub async fn start(server: Server) -> Result<TestServer, TestServerError> {
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = match server.metrics_enabled() {
            true => Some(TcpListener::bind("127.0.0.1:0").await?),
            false => None,
        };
        TestServer::start_on(server, Listeners { grpc, metrics })
    }

    /// Serves `server` on listeners of the caller's: a port that must stay
    /// the same across restarts of the service, say.
    pub fn start_on(server: Server, listeners: Listeners) -> Result<TestServer, TestServerError> {
        let grpc = listeners.grpc.local_addr()?;
        let metrics = listeners
            .metrics
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let (signals, received) = mpsc::channel(2);
        let task = tokio::spawn(server.serve_on(
            listeners,
            tokio_stream::wrappers::ReceiverStream::new(received),
        ));
        Ok(TestServer {
            grpc,
            metrics,
            signals,
            task: Some(task),
        })
    }

    /// A REST client of this server (HTTP/1.1 on the gRPC port, where the
    /// `google.api.http` routes are served).
    pub fn rest(&self) -> Rest {
        Rest::new(self.grpc)
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The gRPC address as a URL (`http://127.0.0.1:port`), for a generated
    /// client constructor or `Endpoint::from_shared`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The `/metrics` address, when the configuration enables metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The text of its `/metrics` (fetched over HTTP/1.0), when the
    /// configuration enables metrics.
    pub async fn scrape(&self) -> Result<String, TestServerError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.ok_or(TestServerError::NoMetrics)?;
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Ok(body.to_owned())
    }

    /// Sends a shutdown signal: the first starts the graceful shutdown, a
    /// second ends every call at once.
    pub async fn signal(&self) {
        let _ = self.signals.send(()).await;
    }

    /// Ends the server at once (the shutdown signal twice: calls still
    /// running end `UNAVAILABLE`) and waits, at most 10 s, for it to stop.
    pub async fn stop(self) -> Result<(), TestServerError> {
        self.signal().await;
        self.signal().await;
        self.wait(STOP_TIMEOUT).await
    }

    /// The graceful shutdown, as in production: health `NOT_SERVING`, the
    /// lame duck and drain periods of the configuration; waits at most
    /// `timeout` for the server to stop.
    pub async fn shutdown(self, timeout: Duration) -> Result<(), TestServerError> {
        self.signal().await;
        self.wait(timeout).await
    }

    async fn wait(mut self, timeout: Duration) -> Result<(), TestServerError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| TestServerError::Timeout(timeout))???;
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that failed before `stop`: end the server at once.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A client runtime for generated clients in tests: a 10 s default
/// deadline, no token of its own (put one on each request with
/// [`with_token`]), metrics in a registry of its own.
pub fn client() -> crate::client::Client {
    let metrics = crate::metrics::ClientMetrics::new(&prometheus::Registry::new())
        .expect("a new registry takes the client metrics");
    crate::client::Client::from_parts(Duration::from_secs(10), metrics)
}

/// An access token for `subject` with `scopes`, valid for ten minutes,
/// that a server with `config` accepts: signed with `auth.hmac_secret`,
/// with the configured issuer and audience.
pub fn token<App>(
    config: &Config<App>,
    subject: &str,
    scopes: &[&str],
) -> Result<String, IssueError> {
    crate::auth::mint_access_token(&config.auth, subject, scopes, TOKEN_TTL)
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Reading the details of a [`tonic::Status`] (tonic-types'): a
/// validation failure's [`BadRequest`], a rate limit's [`RetryInfo`].
///
/// ```
/// use keel_rpc::testing::StatusExt as _;
///
/// # let status = tonic::Status::with_error_details(tonic::Code::InvalidArgument, "bad",
/// #     keel_rpc::testing::ErrorDetails::with_bad_request_violation("name", "must be at least 1 character"));
/// // status: a CreateUser with an empty name
/// let violations = status.get_details_bad_request().expect("a BadRequest").field_violations;
/// assert_eq!(violations[0].field, "name");
/// ```
pub use tonic_types::{BadRequest, ErrorDetails, FieldViolation, RetryInfo, StatusExt};

#[cfg(feature = "store")]
mod db;
mod dns;
mod keys;
mod redis;
mod rest;
#[cfg(feature = "store")]
pub use db::{Db, POSTGRES_ENV, TestDb};
pub use dns::{TestDns, TestDnsError};
pub use keys::{TestKey, TestKeyError};
pub use redis::{TestRedis, TestRedisError};
pub use rest::{Rest, RestError, RestRequest, RestResponse};
