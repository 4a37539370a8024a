//! Generated clients' layer: bearer token, trace context, default deadline
//! and client metrics on every call.
//!
//! For each service, `keel-rpc-codegen` emits a constructor such as
//!
//! ```ignore
//! pub fn connect_user_service(
//!     channel: impl keel_rpc::client::IntoChannel,
//!     client: &keel_rpc::client::Client,
//! ) -> Result<UserServiceClient<keel_rpc::client::Channel>, keel_rpc::Error>
//! ```
//!
//! which returns tonic's generated client over a [`ClientService`]. On each
//! call that service:
//!
//! - opens a client span named `package.Service/Method` (a child of the
//!   current span, so a handler's outgoing calls continue its trace) with the
//!   OpenTelemetry RPC attributes, and injects its context as W3C
//!   `traceparent`/`tracestate` metadata;
//! - sets `authorization: Bearer <token>` from the client's
//!   [`TokenSource`] unless the request already has an `authorization`
//!   header, and when the server refuses that token (`UNAUTHENTICATED`)
//!   calls [`TokenSource::invalidate`], so the next call gets a fresh one; a
//!   source that has no token fails the call locally with
//!   [`TokenError::to_status`](crate::auth::TokenError::to_status);
//! - sets `grpc-timeout` to `client.default_deadline` unless the caller set a
//!   deadline (`tonic::Request::set_timeout`), in either case no more than
//!   what is left of the deadline of the call being served, when a handler
//!   calls out ([`deadline`](crate::deadline)); fails the call with
//!   `DEADLINE_EXCEEDED` when the response headers have not arrived by then,
//!   or at once, without sending it, when that deadline has already passed;
//! - retries a call of a method with a retry policy (`keel.v1.method.retry`,
//!   or `idempotency_level` set) while it is not committed and its code is
//!   retryable, within its deadline, counting each retry in
//!   `keel_client_retries_total` and as an event of its span; the calls of
//!   other methods are not buffered;
//! - records the go-grpc-prometheus client metrics
//!   ([`ClientMetrics`]), once per call whatever its attempts.
//!
//! ```no_run
//! # mod user_v1 {
//! #   pub static USER_SERVICE_POLICY: keel_rpc::codegen::ServicePolicy =
//! #     keel_rpc::codegen::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None };
//! # }
//! # async fn run() -> Result<(), keel_rpc::Error> {
//! use keel_rpc::auth::StaticToken;
//!
//! let config: keel_rpc::config::Config = keel_rpc::config::Config::load("", None)?;
//! let keel = keel_rpc::Keel::new(&config, &[])?;
//! // One per process, registered beside the server metrics.
//! let client = keel_rpc::client::Client::new(&config, keel.metrics().registry())?
//!     .with_token_source(StaticToken::new("a-token"));
//! let channel = client.connect("http://127.0.0.1:50051")?;
//! let service = client.wrap(&user_v1::USER_SERVICE_POLICY, channel);
//! // let mut users = user_v1::user_service_client::UserServiceClient::new(service);
//! # Ok(()) }
//! ```
//!
//! # Forwarding the caller's identity
//!
//! A service that calls another on behalf of its caller derives a client
//! per request with the caller's token: [`Client::with_token_source`] with a
//! [`StaticToken`](crate::auth::StaticToken) of the incoming bearer token.
//! That is cheap (reference-counted clones; a called service's metrics are
//! made once, on first use). The `gateway-service` example does this.

mod balance;
mod body;
mod call;
mod layer;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tonic::transport::{Channel as TonicChannel, ClientTlsConfig as TonicTls, Endpoint};

pub use balance::balanced;
pub use body::ResponseBody;
pub use call::ClientCall;
pub use layer::{ClientFuture, ClientLayer, ClientService};

use crate::auth::TokenSource;
use crate::config::Config;
use crate::metrics::{ClientMetrics, MetricsError};
use crate::policy::ServicePolicy;

/// The service under a generated client built by a Keel constructor: a
/// tonic channel behind Keel's client layer.
pub type Channel = ClientService<TonicChannel>;

/// What a client could not be built from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What tonic said.
        source: tonic::transport::Error,
    },
    /// A lazy channel needs a Tokio runtime to run its connection on.
    #[error("connecting to {0}: no Tokio runtime is running; build the client inside one")]
    NoRuntime(String),
    /// The client metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// `client.tls` names files that do not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The shared client runtime of a process: the default deadline, the client
/// metrics and, optionally, a token source. Cheap to clone; derive variants
/// with [`with_token_source`](Self::with_token_source).
#[derive(Clone)]
pub struct Client {
    default_deadline: Duration,
    metrics: ClientMetrics,
    tokens: Option<Arc<dyn TokenSource>>,
    /// The TLS of `https://` URLs given to [`connect`](Self::connect); `None`: the system's
    /// trust store.
    tls: Option<TonicTls>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("default_deadline", &self.default_deadline)
            .field("token_source", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client runtime configured by `config.client`, with its metrics
    /// registered in `registry` (once per registry: pass
    /// `keel.metrics().registry()` so one `/metrics` shows both sides).
    /// Calls carry no token until one is given. `https://` URLs are called
    /// with `config.client.tls`, whose files are read now.
    pub fn new<App>(config: &Config<App>, registry: &Registry) -> Result<Self, ClientError> {
        let client = Self::from_parts(
            config.client.default_deadline,
            ClientMetrics::new(registry)?,
        );
        Ok(Client {
            tls: Some(crate::tls::client_tls(&config.client.tls)?),
            ..client
        })
    }

    /// A client runtime from parts built elsewhere.
    pub fn from_parts(default_deadline: Duration, metrics: ClientMetrics) -> Self {
        Client {
            default_deadline,
            metrics,
            tokens: None,
            tls: None,
        }
    }

    /// The same runtime, sending tokens from `source` (replacing any earlier
    /// source).
    pub fn with_token_source(&self, source: impl TokenSource) -> Self {
        Client {
            tokens: Some(Arc::new(source)),
            ..self.clone()
        }
    }

    /// The same runtime, sending no token of its own.
    pub fn without_token_source(&self) -> Self {
        Client {
            tokens: None,
            ..self.clone()
        }
    }

    /// The same runtime with another default deadline.
    pub fn with_default_deadline(&self, deadline: Duration) -> Self {
        Client {
            default_deadline: deadline,
            ..self.clone()
        }
    }

    /// The deadline of calls that set none.
    pub fn default_deadline(&self) -> Duration {
        self.default_deadline
    }

    /// The client metrics.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// The layer for calls to `policy`'s service.
    pub fn layer(&self, policy: &'static ServicePolicy) -> ClientLayer {
        ClientLayer::new(
            policy,
            self.metrics.service(policy),
            self.default_deadline,
            self.tokens.clone(),
            self.metrics.retries(policy),
        )
    }

    /// Wraps a transport (usually a tonic [`Channel`](tonic::transport::Channel)) for calls to `policy`'s
    /// service. The generated `*_client` constructors call this.
    pub fn wrap<S>(&self, policy: &'static ServicePolicy, inner: S) -> ClientService<S> {
        tower::Layer::layer(&self.layer(policy), inner)
    }

    /// A channel to `endpoint` that connects on first use (and reconnects);
    /// an `https://` URL is called over TLS as `client.tls` says (see
    /// [`IntoChannel`]). The generated `*_client` constructors call this.
    pub fn connect(&self, endpoint: impl IntoChannel) -> Result<TonicChannel, ClientError> {
        endpoint.into_channel(self)
    }

    /// The TLS of calls to `https://` URLs.
    fn tls(&self) -> TonicTls {
        self.tls
            .clone()
            .unwrap_or_else(|| TonicTls::new().with_native_roots())
    }
}

/// What a generated client constructor accepts as its transport: a
/// tonic [`Channel`](tonic::transport::Channel), an [`Endpoint`] or a URL (`"http://127.0.0.1:50051"`).
/// Endpoints and URLs give a lazy channel, which connects on first use and
/// needs a Tokio runtime. A URL starting with `https://` is called over TLS
/// with the [`Client`]'s `client.tls`; a `Channel` or `Endpoint` is used as
/// it was built.
pub trait IntoChannel {
    /// The channel, for calls made through `client`.
    fn into_channel(self, client: &Client) -> Result<TonicChannel, ClientError>;
}

impl IntoChannel for TonicChannel {
    fn into_channel(self, _: &Client) -> Result<TonicChannel, ClientError> {
        Ok(self)
    }
}

impl IntoChannel for Endpoint {
    fn into_channel(self, _: &Client) -> Result<TonicChannel, ClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::NoRuntime(self.uri().to_string()));
        }
        Ok(self.connect_lazy())
    }
}

impl IntoChannel for &Endpoint {
    fn into_channel(self, client: &Client) -> Result<TonicChannel, ClientError> {
        self.clone().into_channel(client)
    }
}

impl IntoChannel for &str {
    fn into_channel(self, client: &Client) -> Result<TonicChannel, ClientError> {
        self.to_owned().into_channel(client)
    }
}

impl IntoChannel for String {
    fn into_channel(self, client: &Client) -> Result<TonicChannel, ClientError> {
        let invalid = |source| ClientError::InvalidEndpoint {
            endpoint: self.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(self.clone()).map_err(invalid)?;
        if endpoint.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            endpoint = endpoint.tls_config(client.tls()).map_err(invalid)?;
        }
        endpoint.into_channel(client)
    }
}
