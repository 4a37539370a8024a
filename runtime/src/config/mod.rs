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
//! use keel::config::{Algorithm, Loader};
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
//! # Ok::<(), keel::config::ConfigError>(())
//! ```
//!
//! # Keys
//!
//! | key | default | environment variable | notes |
//! |---|---|---|---|
//! | `service.name` | `"keel-service"` | `KEEL_SERVICE__NAME` | must not be empty |
//! | `service.environment` | `"production"` | `KEEL_SERVICE__ENVIRONMENT` | `production` or `development`; development credentials exist only in development ([`Environment`]) |
//! | `server.addr` | `"0.0.0.0:50051"` | `KEEL_SERVER__ADDR` | gRPC listen address |
//! | `server.lame_duck` | `"5s"` | `KEEL_SERVER__LAME_DUCK` | after a shutdown signal: NOT_SERVING but still serving; at most `5m` |
//! | `server.drain_timeout` | `"20s"` | `KEEL_SERVER__DRAIN_TIMEOUT` | then: in-flight calls may finish this long; more than 0, at most `10m` |
//! | `server.max_message_bytes` | `4194304` | `KEEL_SERVER__MAX_MESSAGE_BYTES` | largest message received or sent (RESOURCE_EXHAUSTED above); 1 KiB to 1 GiB |
//! | `server.max_concurrent_streams` | `256` | `KEEL_SERVER__MAX_CONCURRENT_STREAMS` | HTTP/2 streams per connection; at least 1 |
//! | `server.max_connections` | `4096` | `KEEL_SERVER__MAX_CONNECTIONS` | open connections of the gRPC port; one more is closed at once; at least 1 |
//! | `server.handshake_timeout` | `"10s"` | `KEEL_SERVER__HANDSHAKE_TIMEOUT` | a new connection's TLS handshake and HTTP/2 preface must arrive in this time, else it is closed; more than 0, at most `5m` |
//! | `server.idle_timeout` | `"5m"` | `KEEL_SERVER__IDLE_TIMEOUT` | a connection without calls this long gets `GOAWAY`; at least `1s`, at most `24h` |
//! | `server.keepalive_interval` | none | `KEEL_SERVER__KEEPALIVE_INTERVAL` | when set, an HTTP/2 `PING` after this long without a frame from the client… ; more than 0 (dead peers are found by TCP keepalive without it) |
//! | `server.keepalive_timeout` | `"20s"` | `KEEL_SERVER__KEEPALIVE_TIMEOUT` | …unanswered this long closes the connection; also what a connection sent `GOAWAY` for idleness gets to close; more than 0 |
//! | `server.tls.cert_file`, `server.tls.key_file` | none | `KEEL_SERVER__TLS__CERT_FILE`, `KEEL_SERVER__TLS__KEY_FILE` | PEM certificate chain and key: the gRPC port serves TLS (both required, must exist); re-read when they change |
//! | `server.tls.client_ca_file` | none | `KEEL_SERVER__TLS__CLIENT_CA_FILE` | PEM CAs of accepted client certificates: mTLS |
//! | `server.tls.client_auth` | `"required"` | `KEEL_SERVER__TLS__CLIENT_AUTH` | `required` or `optional`; only with `client_ca_file` |
//! | `http.grpc_web` | `false` | `KEEL_HTTP__GRPC_WEB` | serve gRPC-Web (and HTTP/1.1) on the gRPC port, through the same pipeline |
//! | `http.cors.allowed_origins` | `[]` | (use a file) | origins (`scheme://host[:port]`) whose pages may call the port |
//! | `metrics.enabled` | `true` | `KEEL_METRICS__ENABLED` | `true` or `false` |
//! | `metrics.addr` | `"0.0.0.0:9090"` | `KEEL_METRICS__ADDR` | must differ from `server.addr` when enabled |
//! | `metrics.tls.*` | none | `KEEL_METRICS__TLS__CERT_FILE`, … | as `server.tls.*`: the HTTP port (`/metrics`, the application's routes) serves HTTPS |
//! | `auth.algorithm` | `"HS256"` | `KEEL_AUTH__ALGORITHM` | `HS256` `HS384` `HS512` `RS256` `RS384` `RS512` `PS256` `PS384` `PS512` `ES256` `ES384` `EdDSA` (case-sensitive) |
//! | `auth.hmac_secret` | none | `KEEL_AUTH__HMAC_SECRET` | required for `HS*`, at least 32 bytes; not allowed otherwise |
//! | `auth.public_key_pem` | none | `KEEL_AUTH__PUBLIC_KEY_PEM` | PEM verification key; asymmetric algorithms need exactly one of this and `public_key_file` |
//! | `auth.public_key_file` | none | `KEEL_AUTH__PUBLIC_KEY_FILE` | path to a PEM verification key (must exist) |
//! | `auth.issuer` | none | `KEEL_AUTH__ISSUER` | `iss` is checked when set |
//! | `auth.audience` | none | `KEEL_AUTH__AUDIENCE` | `aud` is checked when set |
//! | `auth.leeway` | `"30s"` | `KEEL_AUTH__LEEWAY` | humantime (`250ms`, `30s`, `2m`); at most `5m` |
//! | `auth.cache_capacity` | `10000` | `KEEL_AUTH__CACHE_CAPACITY` | verified-token cache entries; `0` disables the cache |
//! | `auth.max_token_bytes` | `8192` | `KEEL_AUTH__MAX_TOKEN_BYTES` | between 256 and 65536 |
//! | `auth.keys` | `[]` | (use a file) | `[[auth.keys]]` tables: `kid`, `algorithm`, and `hmac_secret` or one of `public_key_pem`, `public_key_file`, `private_key_pem`, `private_key_file`; see [`KeyConfig`] |
//! | `auth.jwks` | none | `KEEL_AUTH__JWKS` | JWKS JSON text of asymmetric keys, each with a `kid` |
//! | `auth.jwks_file` | none | `KEEL_AUTH__JWKS_FILE` | path to a JWKS document (must exist); not with `auth.jwks` |
//! | `auth.jwks_url` | none | `KEEL_AUTH__JWKS_URL` | `http(s)://` URL of a JWKS document, fetched at startup and refreshed |
//! | `auth.jwks_refresh` | `"5m"` | `KEEL_AUTH__JWKS_REFRESH` | how often `jwks_url` is fetched; at least `1s` |
//! | `auth.jwks_min_refresh` | `"30s"` | `KEEL_AUTH__JWKS_MIN_REFRESH` | least time between fetches on an unknown `kid`; at most `jwks_refresh` |
//! | `telemetry.otlp_endpoint` | none | `KEEL_TELEMETRY__OTLP_ENDPOINT` | OTLP/gRPC collector, `http://host:port` or `https://` (checked as `client.tls` says); no export when absent |
//! | `telemetry.sampling_ratio` | `1.0` | `KEEL_TELEMETRY__SAMPLING_RATIO` | between `0` and `1`; for traces started here (a request's parent decides otherwise) |
//! | `telemetry.export_timeout` | `"10s"` | `KEEL_TELEMETRY__EXPORT_TIMEOUT` | humantime; more than 0, at most `5m` |
//! | `telemetry.log_format` | `"human"` | `KEEL_TELEMETRY__LOG_FORMAT` | `human` or `json` |
//! | `telemetry.log_filter` | `"info"` | `KEEL_TELEMETRY__LOG_FILTER` | `EnvFilter` directives (`info,keel=debug`) |
//! | `telemetry.resource` | empty table | `KEEL_TELEMETRY__RESOURCE__<NAME>` | extra resource attributes; dotted names (`deployment.environment`) need TOML |
//! | `client.tls.ca_file` | none (system roots) | `KEEL_CLIENT__TLS__CA_FILE` | PEM CAs for `https://` endpoints |
//! | `client.tls.cert_file`, `client.tls.key_file` | none | `KEEL_CLIENT__TLS__CERT_FILE`, `KEEL_CLIENT__TLS__KEY_FILE` | client certificate for mTLS; both or neither |
//! | `client.tls.server_name` | none | `KEEL_CLIENT__TLS__SERVER_NAME` | name the server certificate must carry, instead of the URL's host |
//! | `client.default_deadline` | `"10s"` | `KEEL_CLIENT__DEFAULT_DEADLINE` | humantime; deadline of calls that set none; more than 0, at most `1h` |
//! | `store.url` | `"sqlite://keel.db?mode=rwc"` | `KEEL_STORE__URL` | `sqlite://PATH?mode=rwc`, `sqlite::memory:` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (TLS: `?sslmode=verify-full&sslrootcert=CA.pem`); the password is redacted when printed |
//! | `store.max_connections` | `8` | `KEEL_STORE__MAX_CONNECTIONS` | pool size, at least 1 |
//! | `store.acquire_timeout` | `"10s"` | `KEEL_STORE__ACQUIRE_TIMEOUT` | waiting for a free connection; more than 0 |
//! | `store.busy_timeout` | `"5s"` | `KEEL_STORE__BUSY_TIMEOUT` | SQLite: waiting for the write lock |
//!
//! A layer that sets `auth.algorithm`, `auth.keys`, `auth.jwks`, `auth.jwks_file` or `auth.jwks_url` replaces the
//! verification keys as a whole: no key of a lower layer (`auth.hmac_secret`,
//! `auth.public_key_*`, `auth.keys`, `auth.jwks*`) stays active, so a file that switches a
//! service to RS256 leaves no HMAC secret of the embedded defaults behind.
//!
//! A token is verified with the key its `kid` header names (from `auth.keys` or the JWKS), and
//! otherwise with the default key (`auth.algorithm` and `auth.hmac_secret` /
//! `auth.public_key_*`), which is required only when no other key is configured. Each key pins
//! its algorithm. `[store]` is read by services that keep data (`keel::store`, cargo feature
//! `store`); others ignore it.
//!
//! Environment values of string keys (`service.name`, `auth.hmac_secret`, `auth.public_key_pem`,
//! `auth.public_key_file`, `auth.issuer`, `auth.audience`, `auth.jwks`, `auth.jwks_file`,
//! `telemetry.otlp_endpoint`, `telemetry.log_filter`, `store.url`) are taken verbatim. Other values are parsed like figment's `Env`
//! provider does (`true`, `10`, `-1`, `"quoted"`, anything else is a string), so
//! `KEEL_METRICS__ENABLED=maybe` is an error rather than `false`.
//!
//! # Application sections
//!
//! Top-level sections other than `service`, `server`, `metrics`, `auth`, `telemetry`, `client`
//! and `store` are reported as unknown, unless declared with [`Loader::allow_section`]. An application reads
//! its own section with [`Loader::extract_section`] (same error reporting) or through
//! [`Loader::figment`].

mod algorithm;
mod diagnose;
mod env;
mod environment;
mod error;
mod key_set;
mod loader;
mod log_format;
mod secret;
mod store;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use algorithm::Algorithm;
pub use env::{ENV_PREFIX, ENV_SEPARATOR, ENV_TEST_PREFIX};
pub use environment::Environment;
pub use error::ConfigError;
pub use loader::Loader;
pub use log_format::LogFormat;
pub use secret::Secret;
#[cfg(feature = "store")]
pub(crate) use store::redact_url;
pub use store::{DatabaseUrl, STORE_SCHEMES, StoreConfig};
pub use validate::{
    MAX_DEFAULT_DEADLINE, MAX_EXPORT_TIMEOUT, MAX_LEEWAY, MAX_MAX_TOKEN_BYTES,
    MIN_HMAC_SECRET_BYTES, MIN_MAX_TOKEN_BYTES,
};

/// The top-level sections of [`Config`].
pub const SECTIONS: [&str; 8] = [
    "service",
    "server",
    "http",
    "metrics",
    "auth",
    "telemetry",
    "client",
    "store",
];

/// The whole configuration of a Keel service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity of the service (`[service]`).
    pub service: ServiceConfig,
    /// The gRPC server (`[server]`).
    pub server: ServerConfig,
    /// What the gRPC port serves besides gRPC (`[http]`).
    pub http: HttpConfig,
    /// The Prometheus metrics endpoint (`[metrics]`).
    pub metrics: MetricsConfig,
    /// JWT authentication (`[auth]`).
    pub auth: AuthConfig,
    /// Logs and tracing (`[telemetry]`).
    pub telemetry: TelemetryConfig,
    /// Generated clients (`[client]`).
    pub client: ClientConfig,
    /// The service's database (`[store]`), for services that keep data (`keel::store`).
    pub store: StoreConfig,
}

impl Config {
    /// Loads the configuration with the usual layers: built-in defaults < `defaults_toml` <
    /// `file` (when given; it must exist) < `KEEL_*` environment variables.
    pub fn load(defaults_toml: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut loader = Loader::new().defaults_toml(defaults_toml);
        if let Some(file) = file {
            loader = loader.file(file);
        }
        loader.env().load()
    }

    /// Checks the semantic rules (secret lengths, key material matching the algorithm, bounds,
    /// address collisions), reporting every violation. [`Loader::load`] runs it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.semantic_problems();
        ConfigError::result(problems.iter().map(ToString::to_string).collect(), ())
    }

    /// The configuration as TOML, with secrets shown as `[redacted]` (handy for logging the
    /// effective configuration at startup).
    pub fn to_toml_redacted(&self) -> String {
        // `Secret` always serializes as "[redacted]", so plain serialization is already redacted.
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# the configuration could not be rendered as TOML: {e}\n"))
    }
}

/// Identity of the service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, used in logs and metrics. Default `"keel-service"`; must not be empty.
    pub name: String,
    /// Production or development. Default [`Environment::Production`]: development
    /// credentials exist only when this says `"development"`.
    pub environment: Environment,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "keel-service".to_owned(),
            environment: Environment::Production,
        }
    }
}

/// The gRPC server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address. Default `0.0.0.0:50051`.
    pub addr: SocketAddr,
    /// After a shutdown signal, how long the server keeps serving while its
    /// health reads `NOT_SERVING`, so load balancers stop routing to it.
    /// Default 5 s; at most 5 minutes.
    #[serde(with = "humantime_serde")]
    pub lame_duck: Duration,
    /// Then, how long calls in flight may run before they end with
    /// `UNAVAILABLE`. Default 20 s; more than 0, at most 10 minutes.
    /// Kubernetes' `terminationGracePeriodSeconds` should exceed
    /// `lame_duck + drain_timeout`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Largest message received or sent; a larger request message fails with
    /// `RESOURCE_EXHAUSTED`. Default 4 MiB; between 1 KiB and 1 GiB.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams per connection. Default 256; at least 1.
    pub max_concurrent_streams: u32,
    /// Open connections of the gRPC port; a connection past it is closed as
    /// soon as it is accepted, and counted. Default 4096; at least 1.
    pub max_connections: u32,
    /// How long a new connection has for its TLS handshake and the HTTP/2
    /// preface before it is closed, so silent sockets do not pile up (as
    /// grpc-go's `ConnectionTimeout`). Default 10 s; more than 0, at most 5
    /// minutes.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long a connection may go without calls before it is sent
    /// `GOAWAY` and closed (as grpc-go's `MaxConnectionIdle`): clients
    /// reconnect when they next call. Default 5 minutes; at least 1 s, at
    /// most 24 hours.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// When set, how long a connection may send no frame before the server
    /// sends it an HTTP/2 `PING`. Default none: hyper's pings cost a lock
    /// and a clock read on every frame received, and without them the
    /// kernel's TCP keepalive (after a minute of silence, every 15 s) still
    /// finds peers that are gone. More than 0.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed
    /// (its calls end `UNAVAILABLE` on the client), and how long a
    /// connection sent `GOAWAY` for idleness gets to close before it is
    /// dropped. Default 20 s; more than 0.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// TLS of the gRPC port (`[server.tls]`). Default none: plaintext HTTP/2 (h2c), for a
    /// service behind a mesh or a terminating proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

/// TLS of the gRPC server (`[server.tls]`), with rustls. The certificate and key files are
/// read again when they change (cert-manager and Vault rotate them in place): new connections
/// get the new certificate, open ones keep theirs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file of the server's certificate chain, leaf first. Required.
    pub cert_file: PathBuf,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: PathBuf,
    /// PEM file of the CAs whose client certificates are accepted: setting it turns on client
    /// certificate verification (mTLS). Default none: no client certificate is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client must present a certificate. Default
    /// [`ClientAuth::Required`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub client_auth: &'static str,
}

impl TlsKeys {
    /// The keys of `[server.tls]`.
    pub const SERVER: TlsKeys = TlsKeys {
        section: "server.tls",
        cert_file: "server.tls.cert_file",
        key_file: "server.tls.key_file",
        client_ca_file: "server.tls.client_ca_file",
        client_auth: "server.tls.client_auth",
    };

    /// The keys of `[metrics.tls]`.
    pub const METRICS: TlsKeys = TlsKeys {
        section: "metrics.tls",
        cert_file: "metrics.tls.cert_file",
        key_file: "metrics.tls.key_file",
        client_ca_file: "metrics.tls.client_ca_file",
        client_auth: "metrics.tls.client_auth",
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 50051)),
            lame_duck: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 256,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            tls: None,
        }
    }
}

/// The Prometheus metrics endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the metrics endpoint is served. Default `true`.
    pub enabled: bool,
    /// Listen address of the metrics endpoint. Default `0.0.0.0:9090`; must not collide with
    /// `server.addr` when enabled.
    pub addr: SocketAddr,
    /// TLS of the HTTP port (`[metrics.tls]`, the same keys as `[server.tls]`). Default none:
    /// plain HTTP, as Prometheus scrapes inside a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
            tls: None,
        }
    }
}

/// JWT authentication.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Signature algorithm accepted. Default [`Algorithm::HS256`].
    pub algorithm: Algorithm,
    /// Shared secret for `HS*` algorithms (required for them, at least
    /// [`MIN_HMAC_SECRET_BYTES`] bytes; not allowed with asymmetric algorithms).
    pub hmac_secret: Option<Secret>,
    /// PEM text of the verification key for asymmetric algorithms.
    pub public_key_pem: Option<String>,
    /// Path to a PEM file holding the verification key for asymmetric algorithms. Exactly one of
    /// `public_key_pem` and `public_key_file` must be set for them; neither is allowed with `HS*`.
    pub public_key_file: Option<PathBuf>,
    /// Expected `iss` claim; checked when set.
    pub issuer: Option<String>,
    /// Expected `aud` claim; checked when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, written like `30s` or `250ms`. Default 30 s; at most
    /// [`MAX_LEEWAY`].
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Capacity (entries) of the verified-token cache. Default 10 000; `0` disables the cache.
    pub cache_capacity: usize,
    /// Largest accepted token, in bytes. Default 8192; between [`MIN_MAX_TOKEN_BYTES`] and
    /// [`MAX_MAX_TOKEN_BYTES`].
    pub max_token_bytes: usize,
    /// Verification keys selected by the `kid` header of a token (`[[auth.keys]]`), so that
    /// several keys can be active at once during a key rotation. A token whose `kid` names none
    /// of them (or that has no `kid`) is verified with the default key: `algorithm` with
    /// `hmac_secret` / `public_key_*`, which is optional when keys are listed here or in `jwks`.
    pub keys: Vec<KeyConfig>,
    /// A JSON Web Key Set (RFC 7517) of asymmetric verification keys, as JSON text: every key
    /// needs a `kid`, and RSA keys an `alg`. What the auth service's `GetJwks` returns.
    pub jwks: Option<String>,
    /// Path to a JWKS document (see `jwks`); at most one of `jwks` and `jwks_file`.
    pub jwks_file: Option<PathBuf>,
    /// URL of a JWKS document (`http://auth:9092/.well-known/jwks.json`, the auth service's),
    /// fetched when the server starts (a failure is a startup error), then every
    /// `jwks_refresh` and soon after a token names an unknown `kid`. A failed refresh keeps the
    /// last good keys. `https://` URLs are checked against `client.tls.ca_file` (default: the
    /// system's trust store). Its keys add to `keys` and `jwks`/`jwks_file`.
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again. Default 5 min; at least 1 s.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// After a token names an unknown `kid`, `jwks_url` is fetched again, but at most this
    /// often. Default 30 s; at most `jwks_refresh`.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
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

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::HS256,
            hmac_secret: None,
            public_key_pem: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            cache_capacity: 10_000,
            max_token_bytes: 8192,
            keys: Vec::new(),
            jwks: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(5 * 60),
            jwks_min_refresh: Duration::from_secs(30),
        }
    }
}

/// Logs and tracing; see [`crate::telemetry`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector that spans are exported to (`http://localhost:4317`). When absent,
    /// spans are still created and propagated (logs carry trace ids) but not exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of the traces started here (requests without a sampled or unsampled parent)
    /// that are sampled; a request with a parent follows the parent's decision. Default `1.0`;
    /// between `0` and `1`.
    pub sampling_ratio: f64,
    /// How long one export may take, written like `10s`. Default 10 s; at most
    /// [`MAX_EXPORT_TIMEOUT`].
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Log line format. Default [`LogFormat::Human`].
    pub log_format: LogFormat,
    /// Which events are logged, in `tracing-subscriber`'s `EnvFilter` syntax
    /// (`info`, `info,keel=debug`). Default `"info"`.
    pub log_filter: String,
    /// Extra OpenTelemetry resource attributes (`deployment.environment = "prod"`);
    /// `service.name` comes from `[service]`.
    pub resource: BTreeMap<String, String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
            log_format: LogFormat::Human,
            log_filter: "info".to_owned(),
            resource: BTreeMap::new(),
        }
    }
}

/// What the gRPC port serves besides gRPC: gRPC-Web for browsers, and which
/// other origins may call it.
///
/// ```toml
/// [http]
/// grpc_web = true
/// cors.allowed_origins = ["https://app.example.com"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve gRPC-Web (`application/grpc-web`, `-text`) beside gRPC, over
    /// HTTP/1.1 too, through the same pipeline. Default `false`: the port then
    /// speaks HTTP/2 only, and gRPC calls pay nothing for it.
    pub grpc_web: bool,
    /// Cross-origin requests (`[http.cors]`).
    pub cors: CorsConfig,
}

/// Which origins' browsers may call the port (CORS). Default: none, so a page
/// of another origin is refused by its browser.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`, no path) allowed to call, with the
    /// `authorization` header and the gRPC-Web headers. Default empty.
    pub allowed_origins: Vec<String>,
}

/// Generated clients; see [`crate::client`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Deadline of a call whose caller set none, sent as `grpc-timeout` and enforced locally,
    /// written like `10s`. Default 10 s; at most [`MAX_DEFAULT_DEADLINE`].
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    /// TLS of calls to `https://` endpoints (`[client.tls]`).
    pub tls: ClientTlsConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
            tls: ClientTlsConfig::default(),
        }
    }
}

/// TLS of generated clients' calls to `https://` endpoints (`[client.tls]`); `http://`
/// endpoints stay plaintext whatever this says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of the CAs that server certificates must chain to. Default none: the system's
    /// trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate chain, for servers that ask for one (mTLS); needs
    /// `key_file`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs `cert_file`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for (and SNI), instead of the
    /// endpoint's host. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}
