//! Typed configuration for Keel services.
//!
//! A [`Config`] is assembled from layers, each overriding the one before it:
//!
//! 1. the built-in defaults (the [`Default`] impls of the types below),
//! 2. the application's embedded defaults ([`Loader::defaults_toml`]),
//! 3. a TOML file that must exist ([`Loader::file`]),
//! 4. environment variables prefixed with `KEEL_` ([`Loader::env`]), with nested keys separated
//!    by a double underscore: `KEEL_AUTH__HMAC_SECRET` sets `auth.hmac_secret`.
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
//! | `server.addr` | `"0.0.0.0:50051"` | `KEEL_SERVER__ADDR` | gRPC listen address |
//! | `server.lame_duck` | `"5s"` | `KEEL_SERVER__LAME_DUCK` | after a shutdown signal: NOT_SERVING but still serving; at most `5m` |
//! | `server.drain_timeout` | `"20s"` | `KEEL_SERVER__DRAIN_TIMEOUT` | then: in-flight calls may finish this long; more than 0, at most `10m` |
//! | `server.max_message_bytes` | `4194304` | `KEEL_SERVER__MAX_MESSAGE_BYTES` | largest message received or sent (RESOURCE_EXHAUSTED above); 1 KiB to 1 GiB |
//! | `server.max_concurrent_streams` | `256` | `KEEL_SERVER__MAX_CONCURRENT_STREAMS` | HTTP/2 streams per connection; at least 1 |
//! | `metrics.enabled` | `true` | `KEEL_METRICS__ENABLED` | `true` or `false` |
//! | `metrics.addr` | `"0.0.0.0:9090"` | `KEEL_METRICS__ADDR` | must differ from `server.addr` when enabled |
//! | `auth.algorithm` | `"HS256"` | `KEEL_AUTH__ALGORITHM` | `HS256` `HS384` `HS512` `RS256` `RS384` `RS512` `PS256` `PS384` `PS512` `ES256` `ES384` `EdDSA` (case-sensitive) |
//! | `auth.hmac_secret` | none | `KEEL_AUTH__HMAC_SECRET` | required for `HS*`, at least 32 bytes; not allowed otherwise |
//! | `auth.public_key_pem` | none | `KEEL_AUTH__PUBLIC_KEY_PEM` | PEM verification key; asymmetric algorithms need exactly one of this and `public_key_file` |
//! | `auth.public_key_file` | none | `KEEL_AUTH__PUBLIC_KEY_FILE` | path to a PEM verification key (must exist) |
//! | `auth.issuer` | none | `KEEL_AUTH__ISSUER` | `iss` is checked when set |
//! | `auth.audience` | none | `KEEL_AUTH__AUDIENCE` | `aud` is checked when set |
//! | `auth.leeway` | `"30s"` | `KEEL_AUTH__LEEWAY` | humantime (`250ms`, `30s`, `2m`); at most `5m` |
//! | `auth.cache_capacity` | `10000` | `KEEL_AUTH__CACHE_CAPACITY` | verified-token cache entries; `0` disables the cache |
//! | `auth.max_token_bytes` | `8192` | `KEEL_AUTH__MAX_TOKEN_BYTES` | between 256 and 65536 |
//! | `telemetry.otlp_endpoint` | none | `KEEL_TELEMETRY__OTLP_ENDPOINT` | OTLP/gRPC collector, `http://host:port`; no export when absent |
//! | `telemetry.sampling_ratio` | `1.0` | `KEEL_TELEMETRY__SAMPLING_RATIO` | between `0` and `1`; for traces started here (a request's parent decides otherwise) |
//! | `telemetry.export_timeout` | `"10s"` | `KEEL_TELEMETRY__EXPORT_TIMEOUT` | humantime; more than 0, at most `5m` |
//! | `telemetry.log_format` | `"human"` | `KEEL_TELEMETRY__LOG_FORMAT` | `human` or `json` |
//! | `telemetry.log_filter` | `"info"` | `KEEL_TELEMETRY__LOG_FILTER` | `EnvFilter` directives (`info,keel=debug`) |
//! | `telemetry.resource` | empty table | `KEEL_TELEMETRY__RESOURCE__<NAME>` | extra resource attributes; dotted names (`deployment.environment`) need TOML |
//! | `client.default_deadline` | `"10s"` | `KEEL_CLIENT__DEFAULT_DEADLINE` | humantime; deadline of calls that set none; more than 0, at most `1h` |
//!
//! Environment values of string keys (`service.name`, `auth.hmac_secret`, `auth.public_key_pem`,
//! `auth.public_key_file`, `auth.issuer`, `auth.audience`, `telemetry.otlp_endpoint`,
//! `telemetry.log_filter`) are taken verbatim. Other values are parsed like figment's `Env`
//! provider does (`true`, `10`, `-1`, `"quoted"`, anything else is a string), so
//! `KEEL_METRICS__ENABLED=maybe` is an error rather than `false`.
//!
//! # Application sections
//!
//! Top-level sections other than `service`, `server`, `metrics`, `auth`, `telemetry` and `client`
//! are reported as unknown, unless declared with [`Loader::allow_section`]. An application reads
//! its own section with [`Loader::extract_section`] (same error reporting) or through
//! [`Loader::figment`].

mod algorithm;
mod diagnose;
mod env;
mod error;
mod loader;
mod log_format;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use algorithm::Algorithm;
pub use env::{ENV_PREFIX, ENV_SEPARATOR};
pub use error::ConfigError;
pub use loader::Loader;
pub use log_format::LogFormat;
pub use secret::Secret;
pub use validate::{
    MAX_DEFAULT_DEADLINE, MAX_EXPORT_TIMEOUT, MAX_LEEWAY, MAX_MAX_TOKEN_BYTES,
    MIN_HMAC_SECRET_BYTES, MIN_MAX_TOKEN_BYTES,
};

/// The top-level sections of [`Config`].
pub const SECTIONS: [&str; 6] = [
    "service",
    "server",
    "metrics",
    "auth",
    "telemetry",
    "client",
];

/// The whole configuration of a Keel service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity of the service (`[service]`).
    pub service: ServiceConfig,
    /// The gRPC server (`[server]`).
    pub server: ServerConfig,
    /// The Prometheus metrics endpoint (`[metrics]`).
    pub metrics: MetricsConfig,
    /// JWT authentication (`[auth]`).
    pub auth: AuthConfig,
    /// Logs and tracing (`[telemetry]`).
    pub telemetry: TelemetryConfig,
    /// Generated clients (`[client]`).
    pub client: ClientConfig,
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
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "keel-service".to_owned(),
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 50051)),
            lame_duck: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 256,
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
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
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

/// Generated clients; see [`crate::client`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Deadline of a call whose caller set none, sent as `grpc-timeout` and enforced locally,
    /// written like `10s`. Default 10 s; at most [`MAX_DEFAULT_DEADLINE`].
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
        }
    }
}
