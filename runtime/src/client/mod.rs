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
//!   `keel_client_retries_total` and as an event of its span (over a
//!   balanced target, a retry goes to another replica: see
//!   [Balancing](#balancing));
//! - sends any unary call again at once, whatever its method's policy, when
//!   no server processed it (gRFC A6's transparent retry: its connection
//!   was never made, closed before the request was written, or the server
//!   refused the stream with `REFUSED_STREAM` or a `GOAWAY`), at most three
//!   times, counted in `keel_client_transparent_retries_total`: servers
//!   recycling connections (`server.max_connection_age`) fail no call.
//!   Streams are not buffered, and not sent again;
//! - sends the criticality of the call being served, when a handler calls
//!   out and it is not `CRITICAL`, as `keel-criticality` (unless the
//!   caller set one), so that batch work stays sheddable downstream;
//! - keeps a failing service's outage from growing (see
//!   [Failing dependencies](#failing-dependencies));
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
//! # Balancing
//!
//! A target is a URL, `http(s)://host:port`, one address and one HTTP/2
//! connection, or, in grpc-go's syntax, `dns:///name:port`: every A and
//! AAAA record of `name` is a replica, with a connection of its own, and
//! each call goes to one of them ([`Client::balance`] does the same over a
//! fixed list of endpoints):
//!
//! - **resolving**: with the system's DNS servers (`/etc/resolv.conf`), or
//!   `client.dns.nameservers`; again every `client.dns.refresh`, and soon
//!   after a connection to a replica fails (at most every
//!   `client.dns.min_refresh`). A resolution that fails keeps the last set
//!   and is counted; while there has never been a set, calls fail at once
//!   with `UNAVAILABLE` naming the target. Replicas are called over TLS
//!   when `client.dns.tls` is on (`client.tls`, with the target's name as
//!   the server's);
//! - **choosing, per call**: two ready replicas at random, and the one whose
//!   PeakEWMA cost (latency estimate × calls in flight) is lower (tower's
//!   `p2c::Balance`, as linkerd does); a replica whose last call failed
//!   less than `client.balance.avoid_after_failure` ago loses against any
//!   that did not, so a retry goes to another replica;
//! - **ejecting**, as Envoy's outlier detection: after
//!   `client.balance.consecutive_failures` transport failures or
//!   `UNAVAILABLE` answers in a row, a replica gets no call for
//!   `client.balance.base_ejection` × the times it was ejected (at most
//!   `max_ejection`), never more than half of the set at once;
//! - **metrics**: `keel_client_endpoints{target,state}` (`ready`,
//!   `ejected`) and `keel_client_resolutions_total{target,result}` (`ok`,
//!   `error`), registered by [`Client::new`], by target, never by address.
//!
//! ```no_run
//! # mod user_v1 {
//! #   pub static USER_SERVICE_POLICY: keel_rpc::codegen::ServicePolicy =
//! #     keel_rpc::codegen::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None };
//! # }
//! # async fn run(client: keel_rpc::client::Client) -> Result<(), keel_rpc::Error> {
//! // Once per process; clones share the resolver and the connections.
//! let users = client.connect("dns:///users.internal:50051")?;
//! let service = client.wrap(&user_v1::USER_SERVICE_POLICY, users.clone());
//! // or: user_v1::connect_user_service(users.clone(), &client)?
//! # let _ = service;
//! # Ok(()) }
//! ```
//!
//! # Failing dependencies
//!
//! Each service a process calls has one retry budget and one breaker,
//! shared by every client of it (clones, and the clients derived per
//! request with a caller's token):
//!
//! - **retry budget**, as gRPC's `retryThrottling` (gRFC A6):
//!   `client.retry_budget.max_tokens` tokens, one taken by each attempt
//!   failing with a code its method retries, `token_ratio` given back by
//!   each successful call; no retry is made while half or fewer are left
//!   (`keel_client_retries_throttled_total{grpc_service,grpc_method}`), so
//!   a service that fails everything gets a few retries, then none.
//!   Transparent retries (no server processed the call) are not counted:
//!   they add no work to a server;
//! - **breaker** (`[client.breaker]`): once `failure_percent` of at least
//!   `min_calls` calls in the last `window` failed `UNAVAILABLE`
//!   (transport failures included), calls fail at once, locally,
//!   `UNAVAILABLE`, saying so
//!   (`keel_client_breaker_rejected_total{grpc_service}`); after
//!   `open_for` one call goes through as a probe, and its success lets
//!   every call through again (`keel_client_breaker_open{grpc_service}`
//!   is 1 in between). Other codes are the service answering: a rate
//!   limit or an invalid argument never opens it.
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
mod dependency;
mod layer;
mod resolve;
mod retry;
mod target;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tonic::transport::{Channel as TonicChannel, ClientTlsConfig as TonicTls, Endpoint};

pub use body::ResponseBody;
pub use call::ClientCall;
pub use layer::{ClientFuture, ClientLayer, ClientService};
pub use transport::{Transport, TransportFuture};

use self::balance::BalanceMetrics;
use self::dependency::{Dependencies, DependencyMetrics};
use self::resolve::Resolver;
use crate::auth::TokenSource;
use crate::config::{BalanceConfig, BreakerConfig, Config, DnsConfig, RetryBudgetConfig};
use crate::metrics::{ClientMetrics, MetricsError};
use crate::policy::ServicePolicy;

/// The service under a generated client built by a Keel constructor: a
/// [`Transport`] (one tonic channel, or balanced replicas) behind Keel's
/// client layer.
pub type Channel = ClientService<Transport>;

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
    /// The target is not a URL nor a `dns:///name:port` target.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No resolver could be made for a `dns:///` target (the system's DNS
    /// configuration did not read).
    #[error("resolving {target}: {reason}")]
    Resolver {
        /// The target given.
        target: String,
        /// What failed.
        reason: String,
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
    /// Whether `client.tls.server_name` names the server (else a `dns:///`
    /// target's name does).
    tls_names_server: bool,
    /// `[client.dns]`.
    dns: DnsConfig,
    /// `[client.balance]`.
    balance: BalanceConfig,
    /// `keel_client_endpoints` and `keel_client_resolutions_total`.
    balance_metrics: BalanceMetrics,
    /// The retry budget and breaker of each service called, shared by
    /// clones.
    dependencies: Arc<Dependencies>,
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
            tls_names_server: config.client.tls.server_name.is_some(),
            dns: config.client.dns.clone(),
            balance: config.client.balance.clone(),
            balance_metrics: BalanceMetrics::new(registry)?,
            dependencies: Arc::new(Dependencies::new(
                &config.client.retry_budget,
                &config.client.breaker,
                DependencyMetrics::new(registry)?,
            )),
            ..client
        })
    }

    /// A client runtime from parts built elsewhere, with the default
    /// `[client.dns]` and `[client.balance]` (whose metrics are then not
    /// registered anywhere).
    pub fn from_parts(default_deadline: Duration, metrics: ClientMetrics) -> Self {
        Client {
            default_deadline,
            metrics,
            tokens: None,
            tls: None,
            tls_names_server: false,
            dns: DnsConfig::default(),
            balance: BalanceConfig::default(),
            balance_metrics: BalanceMetrics::unregistered(),
            dependencies: Arc::new(Dependencies::new(
                &RetryBudgetConfig::default(),
                &BreakerConfig::default(),
                DependencyMetrics::unregistered(),
            )),
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
            self.dependencies.of(policy),
        )
    }

    /// Wraps a transport (usually a tonic [`Channel`](tonic::transport::Channel)) for calls to `policy`'s
    /// service. The generated `*_client` constructors call this.
    pub fn wrap<S>(&self, policy: &'static ServicePolicy, inner: S) -> ClientService<S> {
        tower::Layer::layer(&self.layer(policy), inner)
    }

    /// The transport of calls to `target`, which connects on first use (and
    /// reconnects): a URL (`http://host:port`; `https://` over TLS as
    /// `client.tls` says) is one channel; `dns:///name:port` is every
    /// address of `name`, balanced per call (see [`IntoChannel`] and the
    /// [module docs](self#balancing)). The generated `connect_*`
    /// constructors call this. Connect to a target once and clone what
    /// this returns: each call of `connect` with a `dns:///` target starts
    /// its own resolver and connections.
    pub fn connect(&self, target: impl IntoChannel) -> Result<Transport, ClientError> {
        target.into_channel(self)
    }

    /// Calls balanced over `endpoints`, as over the addresses of a
    /// `dns:///` target (a list is a resolver that never changes): per
    /// call, the less loaded of two replicas picked at random, and failing
    /// replicas ejected as `[client.balance]` says. Each endpoint is used
    /// as it was built (its TLS, its timeouts); `name` is the `target` label
    /// of its metrics and names it in errors.
    ///
    /// ```no_run
    /// # async fn run(client: keel_rpc::client::Client) -> Result<(), keel_rpc::Error> {
    /// use tonic::transport::Endpoint;
    ///
    /// let replicas = ["http://10.0.0.1:50053", "http://10.0.0.2:50053", "http://10.0.0.3:50053"]
    ///     .map(Endpoint::from_static);
    /// let auth = client.balance("auth", replicas)?;
    /// // connect_auth_service(auth, &client)?  (any generated client constructor)
    /// # let _ = auth;
    /// # Ok(())
    /// # }
    /// ```
    pub fn balance(
        &self,
        name: &str,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Result<Transport, ClientError> {
        let list = resolve::List::new(endpoints);
        if list.len() == 0 {
            return Err(ClientError::InvalidTarget {
                target: name.to_owned(),
                reason: "the list of endpoints is empty".to_owned(),
            });
        }
        let balanced = balance::start(
            Resolver::List(list),
            name.to_owned(),
            &self.balance,
            &self.dns,
            &self.balance_metrics,
        )?;
        Ok(Transport::balanced(balanced))
    }

    /// The balanced transport of a `dns:///` target.
    fn resolve(&self, text: &str, dns: target::DnsTarget) -> Result<Transport, ClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::NoRuntime(text.to_owned()));
        }
        let tls = self.dns.tls.then(|| match self.tls_names_server {
            true => self.tls(),
            false => self.tls().domain_name(dns.host.clone()),
        });
        let template = resolve::Template {
            tls,
            connect_timeout: self.balance.connect_timeout,
        };
        let resolver =
            resolve::Dns::new(&dns.host, dns.port, &self.dns, template).map_err(|e| {
                ClientError::Resolver {
                    target: text.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let balanced = balance::start(
            Resolver::Dns(Box::new(resolver)),
            text.to_owned(),
            &self.balance,
            &self.dns,
            &self.balance_metrics,
        )?;
        Ok(Transport::balanced(balanced))
    }

    /// The TLS of calls to `https://` URLs.
    fn tls(&self) -> TonicTls {
        self.tls
            .clone()
            .unwrap_or_else(|| TonicTls::new().with_native_roots())
    }
}

/// Checks `target` as [`Client::connect`] reads it, without connecting: a
/// URL (`http://host:port`, `https://…`) or `dns:///name:port`. For
/// configuration checks, so that a bad target is reported by key before
/// anything runs.
pub fn check_target(target: &str) -> Result<(), ClientError> {
    if target::dns(target)?.is_some() {
        return Ok(());
    }
    Endpoint::from_shared(target.to_owned())
        .map(|_| ())
        .map_err(|source| ClientError::InvalidEndpoint {
            endpoint: target.to_owned(),
            source,
        })
}

/// What a generated client constructor accepts as its transport: a
/// [`Transport`], a tonic [`Channel`](tonic::transport::Channel), an
/// [`Endpoint`], a URL (`"http://127.0.0.1:50051"`) or a `dns:///` target
/// (`"dns:///users.internal:50051"`, every A and AAAA record of the name a
/// replica, balanced per call). Endpoints and targets give lazy
/// connections, which connect on first use and need a Tokio runtime. A URL
/// starting with `https://` is called over TLS with the [`Client`]'s
/// `client.tls`, as are a `dns:///` target's replicas when `client.dns.tls`
/// is on; a `Channel` or `Endpoint` is used as it was built.
pub trait IntoChannel {
    /// The transport, for calls made through `client`.
    fn into_channel(self, client: &Client) -> Result<Transport, ClientError>;
}

impl IntoChannel for Transport {
    fn into_channel(self, _: &Client) -> Result<Transport, ClientError> {
        Ok(self)
    }
}

impl IntoChannel for TonicChannel {
    fn into_channel(self, _: &Client) -> Result<Transport, ClientError> {
        Ok(self.into())
    }
}

impl IntoChannel for Endpoint {
    fn into_channel(self, _: &Client) -> Result<Transport, ClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::NoRuntime(self.uri().to_string()));
        }
        Ok(self.connect_lazy().into())
    }
}

impl IntoChannel for &Endpoint {
    fn into_channel(self, client: &Client) -> Result<Transport, ClientError> {
        self.clone().into_channel(client)
    }
}

impl IntoChannel for &str {
    fn into_channel(self, client: &Client) -> Result<Transport, ClientError> {
        if let Some(dns) = target::dns(self)? {
            return client.resolve(self, dns);
        }
        let invalid = |source| ClientError::InvalidEndpoint {
            endpoint: self.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(self.to_owned()).map_err(invalid)?;
        if endpoint.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            endpoint = endpoint.tls_config(client.tls()).map_err(invalid)?;
        }
        endpoint.into_channel(client)
    }
}

impl IntoChannel for String {
    fn into_channel(self, client: &Client) -> Result<Transport, ClientError> {
        self.as_str().into_channel(client)
    }
}

impl IntoChannel for &String {
    fn into_channel(self, client: &Client) -> Result<Transport, ClientError> {
        self.as_str().into_channel(client)
    }
}
