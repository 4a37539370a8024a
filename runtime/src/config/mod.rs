//! Typed configuration for Keel services.
//!
//! A [`Config`] is assembled from layers, each overriding the one before it:
//!
//! 1. the built-in defaults (the [`Default`] impls of the types below),
//! 2. the application's embedded defaults ([`Loader::defaults_toml`]),
//! 3. only when `service.environment = "development"`, the application's development
//!    credentials ([`Loader::development_toml`]),
//! 4. a TOML file that must exist ([`Loader::file`]),
//! 5. environment variables prefixed with `KEEL_` ([`Loader::env`]), with nested keys separated
//!    by a double underscore: `KEEL_AUTH__HMAC_SECRET` sets `auth.hmac_secret`. Variables
//!    prefixed with `KEEL_TEST_` belong to test harnesses and are ignored.
//!
//! Loading reports **every** problem at once, in a [`ConfigError`]: values that do not decode
//! (`KEEL_SERVER__ADDR=nonsense`), unknown keys and sections, and the semantic checks of
//! [`Config::validate`]. Each problem names the key, the offending value (never for secrets) and
//! where the value came from. Bad values are errors: nothing is silently defaulted.
//!
//! ```
//! use keel_rpc::config::{Algorithm, Loader};
//!
//! const DEFAULTS: &str = r#"
//!     [service]
//!     name = "user-service"
//!
//!     [auth]
//!     hmac_secret = "an-example-secret-of-at-least-32-bytes"
//!     leeway = "15s"
//! "#;
//!
//! let config = Loader::new()
//!     .defaults_toml(DEFAULTS)
//!     // In a real service: `.file(path)` and `.env()` (the process environment).
//!     .env_from([("KEEL_SERVER__ADDR", "127.0.0.1:6000")])
//!     .load()?;
//!
//! assert_eq!(config.service.name, "user-service");
//! assert_eq!(config.server.addr.port(), 6000);
//! assert_eq!(config.auth.algorithm, Algorithm::HS256);
//! assert_eq!(config.auth.leeway, std::time::Duration::from_secs(15));
//! // Secrets never show up when the configuration is printed.
//! assert!(!config.to_toml_redacted().contains("an-example-secret"));
//! assert!(!format!("{config:?}").contains("an-example-secret"));
//! # Ok::<(), keel_rpc::config::ConfigError>(())
//! ```
//!
//! # Keys
//!
//! Each key is declared once, as a field of the section structs below with `#[derive(Section)]`
//! ([`Section`]): its default, bounds, whether it is a secret and how the environment sets it.
//! The reference is generated from them ([`Config::reference`]; README and each example's
//! `print-config --help` show it, and CI checks they are current):
//!
#![doc = include_str!("reference.md")]
//!
//! A layer that sets `auth.algorithm`, `auth.keys`, `auth.jwks`, `auth.jwks_file` or `auth.jwks_url` replaces the
//! verification keys as a whole: no key of a lower layer (`auth.hmac_secret`,
//! `auth.public_key_*`, `auth.keys`, `auth.jwks*`) stays active, so a file that switches a
//! service to RS256 leaves no HMAC secret of the embedded defaults behind.
//!
//! A token is verified with the key its `kid` header names (from `auth.keys` or the JWKS), and
//! otherwise with the default key (`auth.algorithm` and `auth.hmac_secret` /
//! `auth.public_key_*`), which is required only when no other key is configured. Each key pins
//! its algorithm. `[store]` is read by services that keep data (`keel_rpc::store`, cargo feature
//! `store`); others ignore it.
//!
//! Environment values of text keys (`String`, paths, secrets: the reference's notes say which)
//! are taken verbatim. Other values are parsed like figment's `Env` provider does (`true`, `10`,
//! `-1`, `"quoted"`, anything else is a string), so `KEEL_METRICS__ENABLED=maybe` is an error
//! rather than `false`.
//!
//! # A service's own sections
//!
//! A service declares its sections the same way and loads them with Keel's:
//! [`Config<App>`](Config) has Keel's sections and, in `app`, the service's, with the same
//! errors (see [`Section`] for an example). Any other top-level section is reported as unknown.

mod algorithm;
mod client_balance;
mod client_protection;
mod diagnose;
mod env;
mod environment;
mod error;
mod key_set;
mod loader;
mod log_format;
mod rate_limit;
mod reference;
mod secret;
mod section;
mod store;
mod trust;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use algorithm::Algorithm;
pub use client_balance::{BalanceConfig, DnsConfig};
pub use client_protection::{BreakerConfig, RetryBudgetConfig};
pub use diagnose::Decoder;
pub use env::{ENV_PREFIX, ENV_SEPARATOR, ENV_TEST_PREFIX};
pub use environment::Environment;
pub use error::ConfigError;
pub use keel_rpc_macros::Section;
pub use loader::Loader;
pub use log_format::LogFormat;
pub use rate_limit::{OnBackendError, RateLimitConfig};
pub use secret::Secret;
pub use section::{Env, Key, Nested, Problems, Section};
#[cfg(feature = "store")]
pub(crate) use store::redact_url;
pub use store::{DatabaseUrl, STORE_SCHEMES, StoreConfig};
pub use trust::TrustCriticality;
pub use validate::MIN_HMAC_SECRET_BYTES;

/// The whole configuration of a Keel service: Keel's sections and, in
/// `app`, the service's own ([`Section`]).
#[derive(Debug, Clone, Section)]
#[config(validate = Self::problems)]
pub struct Config<App = ()> {
    /// Identity of the service (`[service]`).
    #[config(section)]
    pub service: ServiceConfig,
    /// The gRPC server (`[server]`).
    #[config(section)]
    pub server: ServerConfig,
    /// What the gRPC port serves besides gRPC (`[http]`).
    #[config(section)]
    pub http: HttpConfig,
    /// The Prometheus metrics endpoint (`[metrics]`).
    #[config(section)]
    pub metrics: MetricsConfig,
    /// JWT authentication (`[auth]`).
    #[config(section)]
    pub auth: AuthConfig,
    /// Logs and tracing (`[telemetry]`).
    #[config(section)]
    pub telemetry: TelemetryConfig,
    /// Generated clients (`[client]`).
    #[config(section)]
    pub client: ClientConfig,
    /// The service's database (`[store]`), for services that keep data (`keel_rpc::store`).
    #[config(section)]
    pub store: StoreConfig,
    /// Where the buckets of methods with a `rate_limit` live (`[rate_limit]`).
    #[config(section)]
    pub rate_limit: RateLimitConfig,
    /// The service's own sections, beside Keel's (none in a `Config<()>`).
    #[config(flatten)]
    pub app: App,
}

impl<App: Section> Config<App> {
    /// Loads the configuration with the usual layers: built-in defaults < `defaults_toml` <
    /// `file` (when given; it must exist) < `KEEL_*` environment variables.
    pub fn load(defaults_toml: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut loader = Loader::new().defaults_toml(defaults_toml);
        if let Some(file) = file {
            loader = loader.file(file);
        }
        Self::from_loader(&loader.env())
    }

    /// Loads, decodes and validates the configuration from `loader`'s layers, reporting every
    /// problem of Keel's sections and the service's at once.
    pub fn from_loader(loader: &Loader) -> Result<Self, ConfigError> {
        loader.load_as()
    }

    /// Checks the bounds and the rules between keys (secret lengths, key material matching the
    /// algorithm, address collisions), reporting every violation. Loading runs it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut found = Vec::new();
        self.check(&mut Problems::new(&mut found));
        ConfigError::result(found.iter().map(ToString::to_string).collect(), ())
    }

    /// The configuration as TOML, with secrets shown as `[redacted]` (handy for logging the
    /// effective configuration at startup). `[store]` appears once it differs from the built-in
    /// defaults: a service that keeps data names its database, so a store left at the defaults
    /// is one the service does not use.
    pub fn to_toml_redacted(&self) -> String {
        let mut table = self.to_toml();
        if self.store.to_toml() == StoreConfig::default().to_toml() {
            table.remove("store");
        }
        toml::to_string(&table)
            .unwrap_or_else(|e| format!("# the configuration could not be rendered as TOML: {e}\n"))
    }

    /// The reference of every key, Keel's and the service's: a Markdown table of key,
    /// default, environment variable and notes.
    pub fn reference() -> String {
        reference::table(Self::KEYS)
    }
}

impl<App> Config<App> {
    /// Keel's sections alone (what the server keeps).
    pub fn keel(&self) -> Config {
        Config {
            service: self.service.clone(),
            server: self.server.clone(),
            http: self.http.clone(),
            metrics: self.metrics.clone(),
            auth: self.auth.clone(),
            telemetry: self.telemetry.clone(),
            client: self.client.clone(),
            store: self.store.clone(),
            rate_limit: self.rate_limit.clone(),
            app: (),
        }
    }
}

/// Identity of the service.
#[derive(Debug, Clone, Section)]
pub struct ServiceConfig {
    /// Service name, used in logs and metrics; must not be empty.
    #[config(default = "keel-service")]
    pub name: String,
    /// `production` or `development`: development credentials exist only in development
    /// ([`Environment`]).
    #[config(default = "production")]
    pub environment: Environment,
}

/// The gRPC server.
#[derive(Debug, Clone, Section)]
pub struct ServerConfig {
    /// gRPC listen address.
    #[config(default = "0.0.0.0:50051")]
    pub addr: SocketAddr,
    /// After a shutdown signal, how long the server keeps serving while its health reads
    /// `NOT_SERVING`, so load balancers stop routing to it.
    #[config(default = "5s", max = "5m")]
    pub lame_duck: Duration,
    /// Then, how long calls in flight may run before they end with `UNAVAILABLE`.
    /// Kubernetes' `terminationGracePeriodSeconds` should exceed `lame_duck + drain_timeout`.
    #[config(default = "20s", above = "0s", max = "10m")]
    pub drain_timeout: Duration,
    /// Largest message received or sent; a larger request message fails with
    /// `RESOURCE_EXHAUSTED`.
    #[config(default = 4194304, min = 1024, max = 1073741824)]
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[config(default = 256, min = 1)]
    pub max_concurrent_streams: u32,
    /// Open connections of the gRPC port; a connection past it is closed as soon as it is
    /// accepted, and counted.
    #[config(default = 4096, min = 1)]
    pub max_connections: u32,
    /// New connections the kernel queues for the gRPC port until they are accepted
    /// (`listen(2)`'s backlog, which the kernel caps at `net.core.somaxconn`; set on a listener
    /// given to `serve_on` too): past it, a burst of connections waits for retried SYNs or is
    /// refused. Rust's and tokio's own is 128; grpc-go's is `somaxconn`.
    #[config(default = 1024, min = 1, max = 65535)]
    pub listen_backlog: u32,
    /// How long a new connection has for its TLS handshake and the HTTP/2 preface before it is
    /// closed, so silent sockets do not pile up (as grpc-go's `ConnectionTimeout`).
    #[config(default = "10s", above = "0s", max = "5m")]
    pub handshake_timeout: Duration,
    /// How long a connection may go without calls before it is sent `GOAWAY` and closed (as
    /// grpc-go's `MaxConnectionIdle`): clients reconnect when they next call.
    #[config(default = "5m", min = "1s", max = "24h")]
    pub idle_timeout: Duration,
    /// When set, how long a connection lives (±10 %, so that the connections a burst opened do
    /// not all end together) before it is sent `GOAWAY`, as grpc-go's `MaxConnectionAge`: its
    /// clients connect again, and re-resolve, so replicas added later get their share of
    /// clients that connected before them (and of clients behind one address, such as an L4
    /// load balancer). Keel's clients send a call refused by the `GOAWAY` again at once; calls
    /// in flight get `max_connection_age_grace` to finish.
    #[config(min = "1s")]
    pub max_connection_age: Option<Duration>,
    /// Whose `keel-criticality` metadata is honoured: `peers` (a verified client
    /// certificate), `all` or `none`; the other calls get their method's `criticality`.
    #[config(default_doc = "`all` in development, `peers` in production")]
    pub trust_criticality: Option<TrustCriticality>,
    /// After `max_connection_age`'s `GOAWAY`, how long calls in flight may run before the
    /// connection is closed under them (as grpc-go's `MaxConnectionAgeGrace`; unset: as long as
    /// they take). A server's streams should end before it.
    #[config(above = "0s")]
    pub max_connection_age_grace: Option<Duration>,
    /// When set, how long a connection may send no frame before the server sends it an HTTP/2
    /// `PING`. Unset, the kernel's TCP keepalive (after a minute of silence, every 15 s) still
    /// finds peers that are gone, and hyper does not pay a lock and a clock read per frame.
    #[config(above = "0s")]
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed (its calls end
    /// `UNAVAILABLE` on the client), and how long a connection sent `GOAWAY` for idleness
    /// gets to close before it is dropped.
    #[config(default = "20s", above = "0s")]
    pub keepalive_timeout: Duration,
    /// The shortest time between a client's pings while no call goes either way, as grpc-go's
    /// `EnforcementPolicy.MinTime`: a client pinging more often gets `GOAWAY`
    /// `ENHANCE_YOUR_CALM` "too_many_pings" at its third such ping, and the connection is
    /// closed (grpc-go's clients then double their keepalive time). `0s`: not enforced.
    #[config(default = "5m", max = "24h")]
    pub keepalive_min_ping_interval: Duration,
    /// How long a request has, from its headers, to send the rest: a REST or gRPC-Web body, or
    /// the one request message of a unary or server-streaming gRPC method (client and bidi
    /// streams are exempt). Past it, REST answers 408 (HTTP/1.1 then closes the connection) and
    /// gRPC `DEADLINE_EXCEEDED`, counted in `keel_server_request_body_timeouts_total`. A body of
    /// `max_message_bytes` must come at `max_message_bytes / request_body_timeout` or faster.
    #[config(default = "30s", above = "0s", max = "10m")]
    pub request_body_timeout: Duration,
    /// Longest request target (path and query) of a request that is not gRPC: a longer one is
    /// answered 414 with a Status JSON. (hyper answers past 64 KiB itself, with no body.)
    #[config(default = 8192, min = 256, max = 65534)]
    pub max_uri_bytes: usize,
    /// Largest total of the header names and values of a request that is not gRPC: past it, 431
    /// with a Status JSON. (hyper answers more than 100 headers, or a head over ~400 KiB, 431
    /// itself, with no body; HTTP/2's header list is bounded by hyper's 16 KiB.)
    #[config(default = 65536, min = 1024, max = 262144)]
    pub max_header_bytes: usize,
    /// TLS of the gRPC port (`[server.tls]`); unset, plaintext HTTP/2 (h2c), for a service
    /// behind a mesh or a terminating proxy.
    #[config(section)]
    pub tls: Option<ServerTlsConfig>,
}

/// TLS of the gRPC server (`[server.tls]`) or the HTTP port (`[metrics.tls]`), with rustls.
/// The certificate and key files are read again when they change (cert-manager and Vault
/// rotate them in place): new connections get the new certificate, open ones keep theirs.
#[derive(Debug, Clone, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct ServerTlsConfig {
    /// PEM file of the certificate chain, leaf first; must exist.
    #[config(required)]
    pub cert_file: PathBuf,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1); must exist.
    #[config(required, not_secret)]
    pub key_file: PathBuf,
    /// PEM file of the CAs whose client certificates are accepted: setting it turns on client
    /// certificate verification (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client must present a certificate, `required` or
    /// `optional`.
    #[config(default_doc = "\"required\"")]
    pub client_auth: Option<ClientAuth>,
}

/// The configuration keys of one [`ServerTlsConfig`] (`server.tls.*` or `metrics.tls.*`), so
/// that every problem names the key it is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsKeys {
    pub section: &'static str,
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub client_ca_file: &'static str,
}

impl TlsKeys {
    /// The keys of `[server.tls]`.
    pub(crate) const SERVER: TlsKeys = TlsKeys {
        section: "server.tls",
        cert_file: "server.tls.cert_file",
        key_file: "server.tls.key_file",
        client_ca_file: "server.tls.client_ca_file",
    };

    /// The keys of `[metrics.tls]`.
    pub(crate) const METRICS: TlsKeys = TlsKeys {
        section: "metrics.tls",
        cert_file: "metrics.tls.cert_file",
        key_file: "metrics.tls.key_file",
        client_ca_file: "metrics.tls.client_ca_file",
    };
}

/// Whether clients must present a certificate (`server.tls.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `"required"`, the default: a handshake without a certificate from `client_ca_file`'s
    /// CAs fails.
    #[default]
    Required,
    /// `"optional"`: a client may present none; one it presents must verify.
    Optional,
}

/// The Prometheus metrics endpoint (and the application's HTTP routes).
#[derive(Debug, Clone, Section)]
pub struct MetricsConfig {
    /// Whether the HTTP port (`/metrics`) is served.
    #[config(default = true)]
    pub enabled: bool,
    /// Its listen address; must differ from `server.addr` when enabled.
    #[config(default = "0.0.0.0:9090")]
    pub addr: SocketAddr,
    /// TLS of the HTTP port (`[metrics.tls]`, the keys of `[server.tls]`); unset, plain HTTP,
    /// as Prometheus scrapes inside a cluster.
    #[config(section)]
    pub tls: Option<ServerTlsConfig>,
}

/// JWT authentication.
#[derive(Debug, Clone, Section)]
#[config(validate = Self::problems)]
pub struct AuthConfig {
    /// Signature algorithm of the default key: `HS256` `HS384` `HS512` `RS256` `RS384`
    /// `RS512` `PS256` `PS384` `PS512` `ES256` `ES384` `EdDSA` (case-sensitive).
    #[config(default = "HS256")]
    pub algorithm: Algorithm,
    /// Shared secret of `HS*` algorithms (required for them, at least 32 bytes; not allowed
    /// with asymmetric ones).
    pub hmac_secret: Option<Secret>,
    /// PEM text of the verification key of asymmetric algorithms, which need exactly one of
    /// this and `public_key_file`.
    pub public_key_pem: Option<String>,
    /// Path to a PEM file of the verification key (must exist).
    pub public_key_file: Option<PathBuf>,
    /// Expected `iss` claim; checked when set.
    pub issuer: Option<String>,
    /// Expected `aud` claim; checked when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    #[config(default = "30s", max = "5m")]
    pub leeway: Duration,
    /// Entries of the verified-token cache; `0` disables it. Entries are weighed by the bytes
    /// they hold, at least 1 KiB each, within `cache_capacity` KiB in all, so large tokens
    /// hold fewer entries rather than more memory.
    #[config(default = 10000)]
    pub cache_capacity: usize,
    /// Largest accepted token, in bytes.
    #[config(default = 8192, min = 256, max = 65536)]
    pub max_token_bytes: usize,
    /// Verification keys selected by the `kid` header of a token (`[[auth.keys]]` tables:
    /// `kid`, `algorithm`, and `hmac_secret` or one of `public_key_pem`, `public_key_file`,
    /// `private_key_pem`, `private_key_file`; see `KeyConfig`), so that several keys can be
    /// active at once during a rotation. A token whose `kid` names none of them (or that has
    /// no `kid`) is verified with the default key (`algorithm` with `hmac_secret` /
    /// `public_key_*`), optional when keys are listed here or in a JWKS.
    pub keys: Vec<KeyConfig>,
    /// A JSON Web Key Set (RFC 7517) of asymmetric verification keys, as JSON text: every key
    /// needs a `kid`, and RSA keys an `alg`. What the auth service's `GetJwks` returns.
    pub jwks: Option<String>,
    /// Path to a JWKS document (must exist); not with `jwks`.
    pub jwks_file: Option<PathBuf>,
    /// `http(s)://` URL of a JWKS document (`http://auth:9092/.well-known/jwks.json`), fetched
    /// when the server starts (a failure is a startup error), then every `jwks_refresh` and
    /// soon after a token names an unknown `kid`; a failed refresh keeps the last good keys.
    /// `https://` URLs are checked against `client.tls.ca_file`. Its keys add to `keys` and
    /// `jwks`/`jwks_file`.
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again.
    #[config(default = "5m", min = "1s")]
    pub jwks_refresh: Duration,
    /// After a token names an unknown `kid`, `jwks_url` is fetched again, but at most this
    /// often; at most `jwks_refresh`.
    #[config(default = "30s")]
    pub jwks_min_refresh: Duration,
    /// The auth service whose feed of revoked sessions (`WatchRevocations`) this service
    /// follows, `http(s)://host:port` or `dns:///name:port`: a revoked session's access tokens
    /// are then refused within about a second, cached or not. Unset: tokens are accepted until
    /// they expire, whatever happened to their session.
    pub revocations: Option<String>,
    /// While the feed is down for longer than `revocations_max_lag` (and from startup until it
    /// first answers): `serve` accepts tokens as usual (a session revoked meanwhile is refused
    /// once the feed catches up); `refuse` refuses tokens issued before the feed fell behind,
    /// `UNAVAILABLE`.
    #[config(default = "serve")]
    pub revocations_when_behind: RevocationsWhenBehind,
    /// How long the feed may be down before `revocations_when_behind` applies.
    #[config(default = "5s", max = "1h")]
    pub revocations_max_lag: Duration,
}

/// What a verifier does while its feed of revoked sessions is down
/// (`auth.revocations_when_behind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationsWhenBehind {
    /// Tokens are accepted as usual.
    #[default]
    Serve,
    /// Tokens issued before the feed fell behind are refused (`UNAVAILABLE`).
    Refuse,
}

/// One verification key of `[[auth.keys]]`, selected by the `kid` header of a token.
///
/// `HS*` keys need `hmac_secret`; asymmetric keys need exactly one of `public_key_pem`,
/// `public_key_file`, `private_key_pem` and `private_key_file`. A private key is only useful to
/// a service that signs tokens (the auth service): others verify with the public half, which is
/// derived from it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, matched against the token's `kid` header. Non-empty and unique.
    pub kid: String,
    /// The algorithm tokens signed with this key must name.
    pub algorithm: Algorithm,
    /// Shared secret for `HS*` (at least [`MIN_HMAC_SECRET_BYTES`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<Secret>,
    /// PEM text of the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    /// Path to a PEM file holding the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// PEM text of the private key (PKCS#8, or PKCS#1 for RSA); redacted when printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<Secret>,
    /// Path to a PEM file holding the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
}

impl KeyConfig {
    /// An `HS*` key.
    pub fn hmac(kid: impl Into<String>, algorithm: Algorithm, secret: impl Into<Secret>) -> Self {
        KeyConfig {
            hmac_secret: Some(secret.into()),
            ..KeyConfig::empty(kid, algorithm)
        }
    }

    /// An asymmetric key given by its public key in PEM.
    pub fn public_pem(
        kid: impl Into<String>,
        algorithm: Algorithm,
        pem: impl Into<String>,
    ) -> Self {
        KeyConfig {
            public_key_pem: Some(pem.into()),
            ..KeyConfig::empty(kid, algorithm)
        }
    }

    /// An asymmetric key given by its private key in PEM.
    pub fn private_pem(
        kid: impl Into<String>,
        algorithm: Algorithm,
        pem: impl Into<String>,
    ) -> Self {
        KeyConfig {
            private_key_pem: Some(Secret::new(pem)),
            ..KeyConfig::empty(kid, algorithm)
        }
    }

    fn empty(kid: impl Into<String>, algorithm: Algorithm) -> Self {
        KeyConfig {
            kid: kid.into(),
            algorithm,
            hmac_secret: None,
            public_key_pem: None,
            public_key_file: None,
            private_key_pem: None,
            private_key_file: None,
        }
    }
}

/// Logs and tracing; see [`crate::telemetry`].
#[derive(Debug, Clone, PartialEq, Section)]
#[config(validate = Self::problems)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector spans are exported to, `http://host:port` or `https://` (checked
    /// as `client.tls` says). Unset, spans are still created and propagated (logs carry trace
    /// ids) but not exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of the traces started here (requests without a sampled or unsampled parent)
    /// that are sampled; a request with a parent follows the parent's decision.
    #[config(default = 1.0, min = 0.0, max = 1.0)]
    pub sampling_ratio: f64,
    /// How long one export may take.
    #[config(default = "10s", above = "0s", max = "5m")]
    pub export_timeout: Duration,
    /// Log line format, `human` or `json`.
    #[config(default = "human")]
    pub log_format: LogFormat,
    /// Which events are logged, in `tracing-subscriber`'s `EnvFilter` syntax
    /// (`info,keel_rpc=debug`).
    #[config(default = "info")]
    pub log_filter: String,
    /// Extra OpenTelemetry resource attributes (`deployment.environment = "prod"`; dotted
    /// names need TOML); `service.name` comes from `[service]`.
    #[config(env = "`KEEL_TELEMETRY__RESOURCE__<NAME>`")]
    pub resource: BTreeMap<String, String>,
}

/// What the gRPC port serves besides gRPC: gRPC-Web for browsers, and which
/// other origins may call it.
///
/// ```toml
/// [http]
/// grpc_web = true
/// cors.allowed_origins = ["https://app.example.com"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Section)]
pub struct HttpConfig {
    /// Serve gRPC-Web (`application/grpc-web`, `-text`) beside gRPC, over HTTP/1.1 too,
    /// through the same pipeline (auth, metrics under the gRPC method, validation,
    /// deadlines). Off, the port speaks HTTP/2 only, and gRPC calls pay nothing for it.
    pub grpc_web: bool,
    /// REST requests: fields the request message does not have (in the body or the query)
    /// are ignored instead of refused with 400, as grpc-gateway's `DiscardUnknown`; for
    /// clients built against a newer version of the API.
    pub discard_unknown_fields: bool,
    /// Cross-origin requests (`[http.cors]`).
    #[config(section)]
    pub cors: CorsConfig,
}

/// Which origins' browsers may call the port (CORS). Default: none, so a page
/// of another origin is refused by its browser.
#[derive(Debug, Clone, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`, no path) whose pages may call the port, with the
    /// `authorization` header and the gRPC-Web headers.
    pub allowed_origins: Vec<String>,
}

/// Generated clients; see [`crate::client`].
#[derive(Debug, Clone, PartialEq, Section)]
pub struct ClientConfig {
    /// Deadline of a call whose caller set none, sent as `grpc-timeout` and enforced locally.
    #[config(default = "10s", above = "0s", max = "1h")]
    pub default_deadline: Duration,
    /// TLS of calls to `https://` endpoints (`[client.tls]`).
    #[config(section)]
    pub tls: ClientTlsConfig,
    /// Resolving `dns:///` targets (`[client.dns]`).
    #[config(section)]
    pub dns: DnsConfig,
    /// Spreading calls over replicas, ejecting failing ones (`[client.balance]`).
    #[config(section)]
    pub balance: BalanceConfig,
    /// How many retries calls may add to a service's load (`[client.retry_budget]`).
    #[config(section)]
    pub retry_budget: RetryBudgetConfig,
    /// Failing fast while a service fails everything (`[client.breaker]`).
    #[config(section)]
    pub breaker: BreakerConfig,
}

/// TLS of generated clients' calls to `https://` endpoints (`[client.tls]`); `http://`
/// endpoints stay plaintext whatever this says.
#[derive(Debug, Clone, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct ClientTlsConfig {
    /// PEM file of the CAs server certificates must chain to; unset, the system's trust
    /// store.
    #[config(default_doc = "none (system roots)")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate chain, for servers that ask for one (mTLS); needs
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs `cert_file`.
    #[config(not_secret)]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for (and SNI), instead of the
    /// endpoint's host.
    pub server_name: Option<String>,
}

/// What the code `#[derive(Section)]` writes uses. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::time::Duration;

    /// A duration as humantime text (`"5m"`) in TOML.
    pub use humantime_serde::Serde as Humantime;
    pub use toml::Table;

    /// The default `text` of the key `name`, decoded as its TOML value would be. A default
    /// that does not decode is a mistake in the declaration, found by the first
    /// `Default::default()`.
    pub fn default_of<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> T {
        match figment::value::Value::from(text).deserialize() {
            Ok(value) => value,
            Err(e) => panic!("the default of `{name}`, {text:?}, does not decode: {e}"),
        }
    }

    /// `duration` as the configuration writes it (`5m`, `250ms`).
    pub fn duration_text(duration: Duration) -> String {
        humantime_serde::re::humantime::format_duration(duration).to_string()
    }

    /// `value` in TOML (secrets serialize redacted).
    pub fn toml_value<T: serde::Serialize>(value: &T) -> toml::Value {
        toml::Value::try_from(value)
            .unwrap_or_else(|e| toml::Value::String(format!("(cannot be shown: {e})")))
    }

    pub fn toml_text(text: String) -> toml::Value {
        toml::Value::String(text)
    }

    pub fn toml_table(table: Table) -> toml::Value {
        toml::Value::Table(table)
    }
}
