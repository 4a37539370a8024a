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
//!
//! Environment values of string keys (`service.name`, `auth.hmac_secret`, `auth.public_key_pem`,
//! `auth.public_key_file`, `auth.issuer`, `auth.audience`) are taken verbatim. Other values are
//! parsed like figment's `Env` provider does (`true`, `10`, `-1`, `"quoted"`, anything else is a
//! string), so `KEEL_METRICS__ENABLED=maybe` is an error rather than `false`.
//!
//! # Application sections
//!
//! Top-level sections other than `service`, `server`, `metrics` and `auth` are reported as
//! unknown, unless declared with [`Loader::allow_section`]. An application reads its own section
//! with [`Loader::extract_section`] (same error reporting) or through [`Loader::figment`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of the environment variables read by [`Loader::env`].
pub const ENV_PREFIX: &str = "KEEL_";

/// Separator of nested keys in environment variable names (`KEEL_AUTH__LEEWAY`).
pub const ENV_SEPARATOR: &str = "__";

/// Minimum length in bytes of `auth.hmac_secret`.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Maximum accepted `auth.leeway`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Smallest accepted `auth.max_token_bytes`.
pub const MIN_MAX_TOKEN_BYTES: usize = 256;

/// Largest accepted `auth.max_token_bytes`.
pub const MAX_MAX_TOKEN_BYTES: usize = 65_536;

/// The top-level sections of [`Config`].
pub const SECTIONS: [&str; 4] = ["service", "server", "metrics", "auth"];

/// Keys whose environment values are taken verbatim as strings (never parsed as numbers etc.).
const STRING_KEYS: [&str; 6] = [
    "service.name",
    "auth.hmac_secret",
    "auth.public_key_pem",
    "auth.public_key_file",
    "auth.issuer",
    "auth.audience",
];

/// Metadata name of the environment layer (see [`describe_source`]).
const ENV_LAYER_NAME: &str = "environment variable";

/// Metadata name of the `defaults_toml` layers.
const DEFAULTS_LAYER_NAME: &str = "application defaults (defaults_toml)";

const REDACTED: &str = "[redacted]";

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50051),
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
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9090),
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

/// A JWT signature algorithm, written exactly as its JOSE name (`"HS256"`, `"EdDSA"`, ...).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum Algorithm {
    /// HMAC using SHA-256.
    #[default]
    HS256,
    /// HMAC using SHA-384.
    HS384,
    /// HMAC using SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 using SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 using SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 using SHA-512.
    RS512,
    /// RSASSA-PSS using SHA-256.
    PS256,
    /// RSASSA-PSS using SHA-384.
    PS384,
    /// RSASSA-PSS using SHA-512.
    PS512,
    /// ECDSA using P-256 and SHA-256.
    ES256,
    /// ECDSA using P-384 and SHA-384.
    ES384,
    /// Edwards-curve signatures (Ed25519).
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order of the enum.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name, as written in configuration (`"HS256"`, `"EdDSA"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// `true` for the shared-secret algorithms `HS256`, `HS384` and `HS512`.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// The matching [`jsonwebtoken::Algorithm`].
    pub fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as Jwt;
        match self {
            Algorithm::HS256 => Jwt::HS256,
            Algorithm::HS384 => Jwt::HS384,
            Algorithm::HS512 => Jwt::HS512,
            Algorithm::RS256 => Jwt::RS256,
            Algorithm::RS384 => Jwt::RS384,
            Algorithm::RS512 => Jwt::RS512,
            Algorithm::PS256 => Jwt::PS256,
            Algorithm::PS384 => Jwt::PS384,
            Algorithm::PS512 => Jwt::PS512,
            Algorithm::ES256 => Jwt::ES256,
            Algorithm::ES384 => Jwt::ES384,
            Algorithm::EdDSA => Jwt::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret string (such as `auth.hmac_secret`) that never leaks through `Debug`, `Display` or
/// `Serialize`: they all show `[redacted]`. It deserializes transparently from a string; read the
/// value with [`Secret::expose`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&REDACTED).finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything wrong with a configuration, reported at once.
///
/// Displays as `invalid configuration:` followed by one `  - problem` line per problem. Problems
/// never contain secret values.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:{}", bullet_list(.problems))]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// An error made of the given problems (for applications validating their own sections).
    pub fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }

    /// The problems, one sentence each, starting with the key they concern.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

fn bullet_list(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// A semantic problem found by validation, before the source of the key is appended.
struct Problem {
    key: &'static str,
    message: String,
    /// Other keys the check reads (besides `key`): when one of them failed to decode, the check
    /// ran on a default and its verdict is meaningless.
    depends: &'static [&'static str],
}

impl Problem {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
            depends: &[],
        }
    }

    fn depends(mut self, keys: &'static [&'static str]) -> Self {
        self.depends = keys;
        self
    }

    /// Every key the check read.
    fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.key).chain(self.depends.iter().copied())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and printing
// ---------------------------------------------------------------------------------------------

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
        let problems: Vec<String> = self
            .semantic_problems()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// The configuration as TOML, with secrets shown as `[redacted]` (handy for logging the
    /// effective configuration at startup).
    pub fn to_toml_redacted(&self) -> String {
        // `Secret` always serializes as "[redacted]", so plain serialization is already redacted.
        match toml::to_string(self) {
            Ok(text) => text,
            Err(e) => format!("# the configuration could not be rendered as TOML: {e}\n"),
        }
    }

    /// Every semantic problem.
    fn semantic_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.service.name.trim().is_empty() {
            problems.push(Problem::new("service.name", "must not be empty"));
        }
        if self.metrics.enabled && addrs_collide(self.metrics.addr, self.server.addr) {
            problems.push(
                Problem::new(
                    "metrics.addr",
                    format!(
                        "{} collides with server.addr {}; use another port or set metrics.enabled = false",
                        self.metrics.addr, self.server.addr
                    ),
                )
                .depends(&["metrics.enabled", "server.addr"]),
            );
        }
        self.auth.semantic_problems(&mut problems);
        problems
    }
}

/// Two listen addresses collide when they use the same (non-zero) port and the same IP, or one
/// of them is the unspecified address (which binds every interface).
fn addrs_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl AuthConfig {
    fn semantic_problems(&self, problems: &mut Vec<Problem>) {
        const ALG: &[&str] = &["auth.algorithm"];
        let alg = self.algorithm;
        if alg.is_hmac() {
            match &self.hmac_secret {
                None => problems.push(
                    Problem::new(
                        "auth.hmac_secret",
                        format!("missing; required for {alg} (set KEEL_AUTH__HMAC_SECRET)"),
                    )
                    .depends(ALG),
                ),
                Some(secret) if secret.expose().len() < MIN_HMAC_SECRET_BYTES => {
                    problems.push(
                        Problem::new(
                            "auth.hmac_secret",
                            format!(
                                "too short: {} bytes; {alg} needs at least {MIN_HMAC_SECRET_BYTES} bytes",
                                secret.expose().len()
                            ),
                        )
                        .depends(ALG),
                    )
                }
                Some(_) => {}
            }
            if self.public_key_pem.is_some() {
                problems.push(
                    Problem::new(
                        "auth.public_key_pem",
                        format!("not allowed with {alg}, which verifies with auth.hmac_secret"),
                    )
                    .depends(ALG),
                );
            }
            if self.public_key_file.is_some() {
                problems.push(
                    Problem::new(
                        "auth.public_key_file",
                        format!("not allowed with {alg}, which verifies with auth.hmac_secret"),
                    )
                    .depends(ALG),
                );
            }
        } else {
            if self.hmac_secret.is_some() {
                problems.push(
                    Problem::new(
                        "auth.hmac_secret",
                        format!(
                            "not allowed with {alg}, which verifies with auth.public_key_pem or \
                             auth.public_key_file"
                        ),
                    )
                    .depends(ALG),
                );
            }
            match (&self.public_key_pem, &self.public_key_file) {
                (None, None) => problems.push(
                    Problem::new(
                        "auth.public_key_pem",
                        format!(
                            "missing; {alg} needs exactly one of auth.public_key_pem or \
                             auth.public_key_file (set KEEL_AUTH__PUBLIC_KEY_PEM or \
                             KEEL_AUTH__PUBLIC_KEY_FILE)"
                        ),
                    )
                    .depends(&["auth.algorithm", "auth.public_key_file"]),
                ),
                (Some(_), Some(_)) => problems.push(
                    Problem::new(
                        "auth.public_key_file",
                        "auth.public_key_pem is set too; set exactly one of them",
                    )
                    .depends(&["auth.algorithm", "auth.public_key_pem"]),
                ),
                (Some(pem), None) => {
                    if !pem.contains("-----BEGIN") {
                        problems.push(
                            Problem::new(
                                "auth.public_key_pem",
                                "is not PEM text (no \"-----BEGIN\" line)",
                            )
                            .depends(ALG),
                        );
                    }
                }
                (None, Some(path)) => {
                    if !path.is_file() {
                        problems.push(
                            Problem::new(
                                "auth.public_key_file",
                                format!("{} does not exist or is not a file", path.display()),
                            )
                            .depends(ALG),
                        );
                    }
                }
            }
        }

        if self.leeway > MAX_LEEWAY {
            problems.push(Problem::new(
                "auth.leeway",
                format!(
                    "{} exceeds the maximum of {}",
                    humantime_serde::re::humantime::format_duration(self.leeway),
                    humantime_serde::re::humantime::format_duration(MAX_LEEWAY)
                ),
            ));
        }
        if !(MIN_MAX_TOKEN_BYTES..=MAX_MAX_TOKEN_BYTES).contains(&self.max_token_bytes) {
            problems.push(Problem::new(
                "auth.max_token_bytes",
                format!(
                    "{} is out of range; must be between {MIN_MAX_TOKEN_BYTES} and {MAX_MAX_TOKEN_BYTES}",
                    self.max_token_bytes
                ),
            ));
        }
        if self.issuer.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(Problem::new(
                "auth.issuer",
                "is empty; remove the key to disable the `iss` check",
            ));
        }
        if self
            .audience
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push(Problem::new(
                "auth.audience",
                "is empty; remove the key to disable the `aud` check",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Builder that layers configuration sources and loads a [`Config`].
///
/// Precedence is fixed whatever the call order: built-in defaults < [`defaults_toml`] <
/// [`file`] (in call order) < environment ([`env`] / [`env_from`]).
///
/// [`defaults_toml`]: Loader::defaults_toml
/// [`file`]: Loader::file
/// [`env`]: Loader::env
/// [`env_from`]: Loader::env_from
pub struct Loader {
    defaults: Vec<String>,
    files: Vec<PathBuf>,
    /// `(variable name, value)` of the `KEEL_*` variables, when an environment layer is set.
    env: Option<Vec<(String, String)>>,
    /// Problems found while snapshotting the process environment (non-UTF-8 values).
    env_snapshot_problems: Vec<String>,
    extra_sections: BTreeSet<String>,
    /// Derived from the fields above by `rebuild`.
    figment: Figment,
    /// Problems of the sources themselves (unreadable file, bad TOML, malformed env names).
    source_problems: Vec<String>,
    /// A TOML layer could not be read or parsed: decoding the rest would only mislead.
    layer_failed: bool,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold secrets: show the variable names only.
        let env_names: Option<Vec<&str>> = self
            .env
            .as_ref()
            .map(|vars| vars.iter().map(|(name, _)| name.as_str()).collect());
        f.debug_struct("Loader")
            .field("defaults_toml_layers", &self.defaults.len())
            .field("files", &self.files)
            .field("env", &env_names)
            .field("extra_sections", &self.extra_sections)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader with only the built-in defaults.
    pub fn new() -> Self {
        Self {
            defaults: Vec::new(),
            files: Vec::new(),
            env: None,
            env_snapshot_problems: Vec::new(),
            extra_sections: BTreeSet::new(),
            figment: Figment::new(),
            source_problems: Vec::new(),
            layer_failed: false,
        }
    }

    /// Adds the application's embedded TOML defaults (typically `include_str!("defaults.toml")`),
    /// the layer just above the built-in defaults. Several calls layer in call order.
    pub fn defaults_toml(mut self, toml: &str) -> Self {
        self.defaults.push(toml.to_owned());
        self.rebuild();
        self
    }

    /// Adds a TOML file, which must exist: a missing, unreadable or malformed file is reported
    /// by [`load`](Loader::load) with its path. Several calls layer in call order.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_owned());
        self.rebuild();
        self
    }

    /// Adds the `KEEL_*` variables of the process environment, read now, as the top layer
    /// (replacing any earlier [`env`](Loader::env) / [`env_from`](Loader::env_from) layer).
    pub fn env(mut self) -> Self {
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name
                .to_str()
                .filter(|n| has_env_prefix(n))
                .map(str::to_owned)
            else {
                continue;
            };
            match value.into_string() {
                Ok(value) => vars.push((name, value)),
                Err(_) => problems.push(format!(
                    "environment variable {name}: value is not valid UTF-8"
                )),
            }
        }
        self.env = Some(vars);
        self.env_snapshot_problems = problems;
        self.rebuild();
        self
    }

    /// Like [`env`](Loader::env), but reads the given `(name, value)` pairs instead of the process
    /// environment (for tests). Names without the `KEEL_` prefix are ignored.
    pub fn env_from<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| has_env_prefix(k))
            .collect();
        self.env = Some(vars);
        self.env_snapshot_problems.clear();
        self.rebuild();
        self
    }

    /// Declares an application-specific top-level section (such as `database`), so that
    /// [`load`](Loader::load) does not report it as unknown.
    pub fn allow_section(mut self, name: impl Into<String>) -> Self {
        self.extra_sections.insert(name.into());
        self
    }

    /// The merged layers (without the built-in defaults), for applications that extract their
    /// own sections. Problems of the sources themselves (missing file, malformed TOML) are only
    /// reported by [`load`](Loader::load) and [`extract_section`](Loader::extract_section): a
    /// layer that failed is absent here.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// Loads, decodes and validates the configuration, reporting every problem at once.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut problems = self.source_problems.clone();
        if self.layer_failed {
            return Err(ConfigError::new(problems));
        }

        self.unknown_sections(&mut problems);

        let mut config = Config::default();
        // Keys (or whole sections) that failed to decode and so hold their defaults.
        let mut failed = BTreeSet::new();
        failed.extend(self.decode(
            "service",
            SERVICE_FIELDS,
            &mut config.service,
            &mut problems,
        ));
        failed.extend(self.decode("server", SERVER_FIELDS, &mut config.server, &mut problems));
        failed.extend(self.decode(
            "metrics",
            METRICS_FIELDS,
            &mut config.metrics,
            &mut problems,
        ));
        failed.extend(self.decode("auth", AUTH_FIELDS, &mut config.auth, &mut problems));

        let decoded = |key: &str| {
            let section = key.split('.').next().unwrap_or(key);
            !failed.contains(key) && !failed.contains(section)
        };
        for problem in config.semantic_problems() {
            if !problem.keys().all(decoded) {
                continue;
            }
            let from = self
                .source_of(problem.key)
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            problems.push(format!("{}: {}{from}", problem.key, problem.message));
        }

        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// Extracts an application section (declare it with [`allow_section`](Loader::allow_section)),
    /// with the same error reporting as [`load`](Loader::load). A missing section yields
    /// `T::default()`.
    pub fn extract_section<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Default,
    {
        let mut problems = self.source_problems.clone();
        let mut value = T::default();
        if !self.layer_failed {
            self.decode(name, &[], &mut value, &mut problems);
        }
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// Decodes section `name` into `out` when present. Returns the keys that failed to decode
    /// (just `name` when the section as a whole failed), after adding their problems.
    ///
    /// serde stops at the first bad field of a struct, so when the section fails to decode, its
    /// keys are checked one by one against `fields` to report every bad one; the section is then
    /// decoded without them, so that `out` holds every good value.
    fn decode<T: DeserializeOwned>(
        &self,
        name: &str,
        fields: &[Field],
        out: &mut T,
        problems: &mut Vec<String>,
    ) -> BTreeSet<String> {
        let mut failed = BTreeSet::new();
        if !self.figment.contains(name) {
            return failed;
        }
        let errors = match self.figment.extract_inner::<T>(name) {
            Ok(value) => {
                *out = value;
                return failed;
            }
            Err(errors) => errors,
        };

        let mut found = Vec::new();
        if !fields.is_empty()
            && let Ok(Value::Dict(tag, mut dict)) = self.figment.find_value(name)
        {
            for (field, problem) in self.diagnose_fields(name, fields, &dict) {
                dict.remove(&field);
                failed.insert(format!("{name}.{field}"));
                found.push(problem);
            }
            match Value::Dict(tag, dict).deserialize::<T>() {
                Ok(partial) if !found.is_empty() => *out = partial,
                _ => found.clear(),
            }
        }
        if found.is_empty() {
            // Not a table, or a problem the key-by-key check cannot see: report figment's view.
            failed = BTreeSet::from([name.to_owned()]);
            found = errors
                .into_iter()
                .map(|error| self.describe_error(name, &error))
                .collect();
        }
        for problem in found {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        failed
    }

    /// Checks every key of the table of `section` on its own, returning `(key, problem)` for
    /// the bad and unknown ones (see [`Loader::decode`]).
    fn diagnose_fields(
        &self,
        section: &str,
        fields: &[Field],
        dict: &Dict,
    ) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for name in dict.keys() {
            let key = format!("{section}.{name}");
            match fields.iter().find(|field| field.name == name.as_str()) {
                Some(field) => {
                    for error in (field.check)(&self.figment, &key) {
                        problems.push((name.clone(), self.describe_error(&key, &error)));
                    }
                }
                None => {
                    let known: Vec<&str> = fields.iter().map(|field| field.name).collect();
                    let mut problem =
                        format!("{key}: unknown key; expected one of: {}", known.join(", "));
                    if let Some(source) = self.source_of(&key) {
                        problem.push_str(&format!(" (from {source})"));
                    }
                    problems.push((name.clone(), problem));
                }
            }
        }
        problems
    }

    fn unknown_sections(&self, problems: &mut Vec<String>) {
        let Ok(data) = self.figment.data() else {
            return;
        };
        let names: BTreeSet<&String> = data.values().flat_map(|dict| dict.keys()).collect();
        for name in names {
            if SECTIONS.contains(&name.as_str()) || self.extra_sections.contains(name.as_str()) {
                continue;
            }
            let mut known: Vec<&str> = SECTIONS.to_vec();
            known.extend(self.extra_sections.iter().map(String::as_str));
            let mut problem = format!(
                "{name}: unknown section; expected one of: {}",
                known.join(", ")
            );
            let source = self.source_of(name);
            if source
                .as_deref()
                .is_some_and(|s| s.starts_with(ENV_LAYER_NAME))
                && let Some(hint) = env_separator_hint(name)
            {
                problem.push_str(&format!(" (did you mean {hint}?)"));
            }
            if let Some(source) = source {
                problem.push_str(&format!(" (from {source})"));
            }
            problems.push(problem);
        }
    }

    /// Turns one figment error of `extract_inner(base)` into a problem sentence.
    fn describe_error(&self, base: &str, error: &figment::Error) -> String {
        // figment 0.10.19's `extract_inner` *appends* `base` to the error path
        // (`["addr", "server"]` for `extract_inner("server")`): rebuild the key ourselves.
        let base_path: Vec<&str> = base.split('.').collect();
        let mut path: Vec<&str> = error.path.iter().map(String::as_str).collect();
        if path.ends_with(&base_path) {
            path.truncate(path.len() - base_path.len());
        } else if path.starts_with(&base_path) {
            path.drain(..base_path.len());
        }
        let key = base_path
            .iter()
            .chain(&path)
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        let secret = is_secret_key(&key);

        let (message, show_value) = match &error.kind {
            Kind::UnknownField(_, expected) => (
                format!("unknown key; expected one of: {}", expected.join(", ")),
                false,
            ),
            Kind::UnknownVariant(value, expected) => {
                let mut message = format!(
                    "unknown value {:?}; expected one of: {}",
                    if secret { REDACTED } else { value.as_str() },
                    expected.join(", ")
                );
                if let Some(close) = expected.iter().find(|e| e.eq_ignore_ascii_case(value)) {
                    message.push_str(&format!(
                        " (names are case-sensitive: did you mean {close:?}?)"
                    ));
                }
                (message, false)
            }
            Kind::InvalidType(actual, expected) => (
                format!(
                    "invalid type: expected {expected}, found {}",
                    actual_kind(actual)
                ),
                true,
            ),
            Kind::InvalidValue(_, expected) => {
                (format!("invalid value: expected {expected}"), true)
            }
            _ if secret => ("invalid value".to_owned(), true),
            Kind::Message(message) => (message.clone(), true),
            other => (other.to_string(), true),
        };

        let mut problem = format!("{key}: {message}");
        if show_value {
            let value = match self.figment.find_value(&key) {
                Ok(value) => Some(value.to_actual()),
                Err(_) => match &error.kind {
                    Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _) => {
                        Some(actual.clone())
                    }
                    _ => None,
                },
            };
            match value {
                Some(_) if secret => problem.push_str("; got [redacted]"),
                Some(actual) => problem.push_str(&format!("; got {}", render_actual(&actual))),
                None => {}
            }
        }
        let source = self.source_of(&key).or_else(|| {
            error
                .metadata
                .as_ref()
                .map(|md| describe_source(md, self.figment.profile(), &key))
        });
        if let Some(source) = source {
            problem.push_str(&format!(" (from {source})"));
        }
        problem
    }

    /// Where the value at `key` came from, if it is set in some layer.
    fn source_of(&self, key: &str) -> Option<String> {
        let value = self.figment.find_value(key).ok()?;
        let metadata = self.figment.get_metadata(value.tag())?;
        Some(describe_source(metadata, self.figment.profile(), key))
    }

    /// Recomputes `figment` and `source_problems` from the layers, in precedence order.
    fn rebuild(&mut self) {
        let mut figment = Figment::new();
        let mut problems = Vec::new();
        let mut layer_failed = false;

        for text in &self.defaults {
            match parse_toml(text) {
                Ok(dict) => {
                    figment = figment.merge(Layer {
                        metadata: Metadata::named(DEFAULTS_LAYER_NAME),
                        data: Profile::Default.collect(dict),
                    });
                }
                Err(e) => {
                    layer_failed = true;
                    problems.push(format!("{DEFAULTS_LAYER_NAME}: invalid TOML: {e}"));
                }
            }
        }

        for path in &self.files {
            // figment's `Toml::file` silently skips a missing file: read it ourselves.
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    layer_failed = true;
                    problems.push(format!(
                        "config file {}: cannot be read: {e}",
                        path.display()
                    ));
                    continue;
                }
            };
            match parse_toml(&text) {
                Ok(dict) => {
                    figment = figment.merge(Layer {
                        // "TOML file" with `Source::File(path)`, so figment's errors name it.
                        metadata: Toml::file_exact(path).metadata(),
                        data: Profile::Default.collect(dict),
                    });
                }
                Err(e) => {
                    layer_failed = true;
                    problems.push(format!("config file {}: invalid TOML: {e}", path.display()));
                }
            }
        }

        problems.extend(self.env_snapshot_problems.iter().cloned());
        if let Some(vars) = &self.env {
            let (dict, env_problems) = env_dict(vars);
            problems.extend(env_problems);
            figment = figment.merge(Layer {
                metadata: Metadata::named(ENV_LAYER_NAME).interpolater(env_var_name),
                data: Profile::Default.collect(dict),
            });
        }

        self.figment = figment;
        self.source_problems = problems;
        self.layer_failed = layer_failed;
    }
}

/// A key of a section and how to decode it on its own (for complete error reports).
struct Field {
    name: &'static str,
    /// The errors of decoding the value at the given key (none when it decodes).
    check: fn(&Figment, &str) -> Vec<figment::Error>,
}

/// The errors of decoding the value at `key` as `T`.
fn check<T: DeserializeOwned>(figment: &Figment, key: &str) -> Vec<figment::Error> {
    figment
        .extract_inner::<T>(key)
        .err()
        .into_iter()
        .flatten()
        .collect()
}

const fn field<T: DeserializeOwned>(name: &'static str) -> Field {
    Field {
        name,
        check: check::<T>,
    }
}

// These tables mirror the structs above; a unit test keeps them in sync with serde's view.
const SERVICE_FIELDS: &[Field] = &[field::<String>("name")];
const SERVER_FIELDS: &[Field] = &[field::<SocketAddr>("addr")];
const METRICS_FIELDS: &[Field] = &[field::<bool>("enabled"), field::<SocketAddr>("addr")];
const AUTH_FIELDS: &[Field] = &[
    field::<Algorithm>("algorithm"),
    field::<Secret>("hmac_secret"),
    field::<String>("public_key_pem"),
    field::<PathBuf>("public_key_file"),
    field::<String>("issuer"),
    field::<String>("audience"),
    field::<humantime_serde::Serde<Duration>>("leeway"),
    field::<usize>("cache_capacity"),
    field::<usize>("max_token_bytes"),
];

/// A provider of already-parsed data with the given metadata.
struct Layer {
    metadata: Metadata,
    data: Map<Profile, Dict>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(self.data.clone())
    }
}

/// Parses TOML into a figment dictionary. The error names the line and column but, unlike
/// toml's `Display`, never quotes the offending line (which could hold a secret).
fn parse_toml(text: &str) -> Result<Dict, String> {
    Toml::from_str::<Dict>(text).map_err(|e| {
        let message = e.message().trim();
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("at line {line}, column {column}: {message}")
            }
            None => message.to_owned(),
        }
    })
}

fn has_env_prefix(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
}

/// The `KEEL_*` variable that sets the key path `keys` (the environment layer's interpolater).
fn env_var_name(_: &Profile, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", keys.join(ENV_SEPARATOR))
}

/// Builds the nested dictionary of the environment layer from `KEEL_*` variables.
fn env_dict(vars: &[(String, String)]) -> (Dict, Vec<String>) {
    let mut dict = Dict::new();
    let mut problems = Vec::new();
    for (name, raw) in vars {
        let rest = name
            .get(ENV_PREFIX.len()..)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let segments: Vec<&str> = rest.split(ENV_SEPARATOR).collect();
        let well_formed = segments
            .iter()
            .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !well_formed {
            problems.push(format!(
                "environment variable {name}: malformed name; use letters, digits and `_`, with \
                 `{ENV_SEPARATOR}` between nested keys (e.g. KEEL_AUTH__LEEWAY)"
            ));
            continue;
        }
        let key = segments.join(".");
        let value = if STRING_KEYS.contains(&key.as_str()) {
            Value::from(raw.clone())
        } else {
            let Ok(value) = raw.parse::<Value>();
            value
        };
        if let Err(conflict) = insert_nested(&mut dict, &segments, value) {
            problems.push(format!(
                "environment variable {name}: conflicts with another KEEL_ variable setting {conflict}"
            ));
        }
    }
    (dict, problems)
}

/// Inserts `value` at `path`; on a clash with an existing value, returns the clashing key.
fn insert_nested(dict: &mut Dict, path: &[&str], value: Value) -> Result<(), String> {
    let mut current = dict;
    for (i, segment) in path.iter().enumerate() {
        let here = || path[..=i].join(".");
        if i + 1 == path.len() {
            if current.contains_key(*segment) {
                return Err(here());
            }
            current.insert((*segment).to_owned(), value);
            return Ok(());
        }
        let entry = current
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        match entry {
            Value::Dict(_, inner) => current = inner,
            _ => return Err(here()),
        }
    }
    Ok(())
}

/// `server_addr` (from `KEEL_SERVER_ADDR`) → `KEEL_SERVER__ADDR`.
fn env_separator_hint(name: &str) -> Option<String> {
    SECTIONS.iter().find_map(|section| {
        let rest = name.strip_prefix(section)?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| env_var_name(&Profile::Default, &[section, rest]))
    })
}

/// Human description of where a value came from.
fn describe_source(metadata: &Metadata, profile: &Profile, key: &str) -> String {
    match &metadata.source {
        Some(Source::File(path)) => format!("file {}", path.display()),
        _ if metadata.name == ENV_LAYER_NAME => {
            let keys: Vec<&str> = key.split('.').collect();
            format!("{} {}", metadata.name, metadata.interpolate(profile, &keys))
        }
        _ => metadata.name.to_string(),
    }
}

/// Keys whose values must never be printed.
fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    last.contains("secret") || last.contains("password")
}

/// The kind of a value, without the value itself.
fn actual_kind(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "an array",
        Actual::Map => "a table",
        Actual::Unit | Actual::Option => "nothing",
        _ => "another kind of value",
    }
}

/// A value as shown in a problem (strings quoted; tables and arrays by kind only).
fn render_actual(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(f) => f.to_string(),
        Actual::Char(c) => format!("{c:?}"),
        Actual::Str(s) => format!("{s:?}"),
        other => actual_kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde knows for section `section`, from its unknown-field error.
    fn serde_fields<T: DeserializeOwned + fmt::Debug>(section: &str) -> Vec<&'static str> {
        let figment = Figment::new().merge(Layer {
            metadata: Metadata::named("test"),
            data: Profile::Default.collect(Dict::from([(
                section.to_owned(),
                Value::from(Dict::from([("__probe__".to_owned(), Value::from(1))])),
            )])),
        });
        match figment.extract_inner::<T>(section).map_err(|e| e.kind) {
            Err(Kind::UnknownField(_, expected)) => expected.to_vec(),
            other => panic!("expected an unknown-field error, got {other:?}"),
        }
    }

    fn names(fields: &[Field]) -> Vec<&'static str> {
        fields.iter().map(|field| field.name).collect()
    }

    #[test]
    fn field_tables_match_the_structs() {
        assert_eq!(
            names(SERVICE_FIELDS),
            serde_fields::<ServiceConfig>("service")
        );
        assert_eq!(names(SERVER_FIELDS), serde_fields::<ServerConfig>("server"));
        assert_eq!(
            names(METRICS_FIELDS),
            serde_fields::<MetricsConfig>("metrics")
        );
        assert_eq!(names(AUTH_FIELDS), serde_fields::<AuthConfig>("auth"));
    }

    #[test]
    fn string_keys_exist() {
        let all: Vec<String> = [
            ("service", SERVICE_FIELDS),
            ("server", SERVER_FIELDS),
            ("metrics", METRICS_FIELDS),
            ("auth", AUTH_FIELDS),
        ]
        .iter()
        .flat_map(|(section, fields)| fields.iter().map(move |f| format!("{section}.{}", f.name)))
        .collect();
        for key in STRING_KEYS {
            assert!(all.iter().any(|k| k == key), "{key}");
        }
    }
}
