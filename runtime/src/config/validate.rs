//! The semantic rules of a [`Config`], checked after decoding.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;

use super::{
    AuthConfig, ClientConfig, Config, HttpConfig, ServerConfig, ServerTlsConfig, StoreConfig,
    TelemetryConfig, TlsKeys,
};

/// Minimum length in bytes of `auth.hmac_secret`.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Maximum accepted `auth.leeway`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Smallest accepted `auth.max_token_bytes`.
pub const MIN_MAX_TOKEN_BYTES: usize = 256;

/// Largest accepted `auth.max_token_bytes`.
pub const MAX_MAX_TOKEN_BYTES: usize = 65_536;

/// Maximum accepted `telemetry.export_timeout`.
pub const MAX_EXPORT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Maximum accepted `client.default_deadline`.
pub const MAX_DEFAULT_DEADLINE: Duration = Duration::from_secs(60 * 60);

/// A semantic problem found by validation; displays as `key: message`.
pub(super) struct Problem {
    pub key: &'static str,
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
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.key).chain(self.depends.iter().copied())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Every semantic problem (see [`Config::validate`]).
    pub(super) fn semantic_problems(&self) -> Vec<Problem> {
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
        self.server.problems(&mut problems);
        self.http.problems(&mut problems);
        if let Some(tls) = self.metrics.tls.as_ref().filter(|_| self.metrics.enabled) {
            tls.problems(&TlsKeys::METRICS, &mut problems);
        }
        self.auth.key_material_problems(&mut problems);
        self.auth.value_problems(&mut problems);
        self.telemetry.problems(&mut problems);
        self.client.problems(&mut problems);
        self.store.problems(&mut problems);
        problems
    }
}

impl ServerConfig {
    /// Shutdown timings and limits within sane bounds.
    fn problems(&self, problems: &mut Vec<Problem>) {
        if self.lame_duck > Duration::from_secs(5 * 60) {
            problems.push(Problem::new(
                "server.lame_duck",
                format!(
                    "{} is too long; at most 5m",
                    format_duration(self.lame_duck)
                ),
            ));
        }
        if self.drain_timeout.is_zero() || self.drain_timeout > Duration::from_secs(10 * 60) {
            problems.push(Problem::new(
                "server.drain_timeout",
                format!(
                    "{} is out of range; more than 0, at most 10m",
                    format_duration(self.drain_timeout)
                ),
            ));
        }
        if !(1024..=1 << 30).contains(&self.max_message_bytes) {
            problems.push(Problem::new(
                "server.max_message_bytes",
                format!(
                    "{} is out of range; between 1024 and 1073741824",
                    self.max_message_bytes
                ),
            ));
        }
        if self.max_concurrent_streams == 0 {
            problems.push(Problem::new(
                "server.max_concurrent_streams",
                "0 would refuse every call; at least 1",
            ));
        }
        if self.max_connections == 0 {
            problems.push(Problem::new(
                "server.max_connections",
                "0 would refuse every connection; at least 1",
            ));
        }
        let minute = Duration::from_secs(60);
        for (key, value, min, max) in [
            (
                "server.handshake_timeout",
                self.handshake_timeout,
                Duration::from_nanos(1),
                5 * minute,
            ),
            (
                "server.idle_timeout",
                self.idle_timeout,
                Duration::from_secs(1),
                24 * 60 * minute,
            ),
            (
                "server.keepalive_timeout",
                self.keepalive_timeout,
                Duration::from_nanos(1),
                Duration::MAX,
            ),
        ]
        .into_iter()
        .chain((self.keepalive_interval).map(|value| {
            (
                "server.keepalive_interval",
                value,
                Duration::from_nanos(1),
                Duration::MAX,
            )
        })) {
            if value < min || value > max {
                let bounds = match (min.as_nanos(), max) {
                    (1, Duration::MAX) => "more than 0".to_owned(),
                    (1, max) => format!("more than 0, at most {}", format_duration(max)),
                    _ => format!(
                        "between {} and {}",
                        format_duration(min),
                        format_duration(max)
                    ),
                };
                problems.push(Problem::new(
                    key,
                    format!("{} is out of range; {bounds}", format_duration(value)),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.problems(&TlsKeys::SERVER, problems);
        }
    }
}

impl ServerTlsConfig {
    /// Files that exist; `client_auth` only with the CAs it is about.
    fn problems(&self, keys: &TlsKeys, problems: &mut Vec<Problem>) {
        let files = [
            (keys.cert_file, Some(&self.cert_file)),
            (keys.key_file, Some(&self.key_file)),
            (keys.client_ca_file, self.client_ca_file.as_ref()),
        ];
        file_problems(&files, problems);
        if self.client_auth.is_some() && self.client_ca_file.is_none() {
            problems.push(Problem::new(
                keys.client_auth,
                format!(
                    "needs {}, the CAs client certificates are checked against",
                    keys.client_ca_file
                ),
            ));
        }
    }
}

/// A problem for each of `files` that is set but is no file.
fn file_problems(files: &[(&'static str, Option<&PathBuf>)], problems: &mut Vec<Problem>) {
    for (key, path) in files {
        if let Some(path) = path.filter(|path| !path.is_file()) {
            problems.push(Problem::new(
                key,
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
    }
}

impl TelemetryConfig {
    /// A usable endpoint, a ratio that is a probability, a sane timeout, a filter that parses.
    fn problems(&self, problems: &mut Vec<Problem>) {
        if let Some(endpoint) = &self.otlp_endpoint
            && let Some(message) = url_problem(endpoint, "to disable export", "localhost:4317")
        {
            problems.push(Problem::new("telemetry.otlp_endpoint", message));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            problems.push(Problem::new(
                "telemetry.sampling_ratio",
                format!(
                    "{} is out of range; must be between 0 and 1 (0.01 samples 1% of new traces)",
                    self.sampling_ratio
                ),
            ));
        }
        if self.export_timeout.is_zero() || self.export_timeout > MAX_EXPORT_TIMEOUT {
            problems.push(Problem::new(
                "telemetry.export_timeout",
                format!(
                    "{} is out of range; must be more than 0 and at most {}",
                    format_duration(self.export_timeout),
                    format_duration(MAX_EXPORT_TIMEOUT)
                ),
            ));
        }
        if self.log_filter.trim().is_empty() {
            problems.push(Problem::new(
                "telemetry.log_filter",
                "is empty; use \"off\" to log nothing",
            ));
        } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            problems.push(Problem::new(
                "telemetry.log_filter",
                format!("{:?} is not a valid filter: {e}", self.log_filter),
            ));
        }
        for name in self.resource.keys() {
            if name.trim().is_empty() {
                problems.push(Problem::new(
                    "telemetry.resource",
                    "attribute names must not be empty",
                ));
            } else if name == "service.name" {
                problems.push(Problem::new(
                    "telemetry.resource",
                    "service.name comes from the [service] section; remove it here",
                ));
            }
        }
    }
}

/// What is wrong with the `http://` or `https://` URL `endpoint` of a key (the OTLP
/// collector, `auth.jwks_url`), if anything; `unset` says what removing the key does, and
/// `example` is a host and port for the message.
fn url_problem(endpoint: &str, unset: &str, example: &str) -> Option<String> {
    if endpoint.trim().is_empty() {
        return Some(format!("is empty; remove the key {unset}"));
    }
    let uri = match endpoint.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(e) => return Some(format!("{endpoint:?} is not a URL: {e}")),
    };
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => None,
        Some("http" | "https") => Some(format!("{endpoint:?} has no host")),
        _ => Some(format!(
            "{endpoint:?} must start with http:// or https:// (like http://{example})"
        )),
    }
}

impl ClientConfig {
    fn problems(&self, problems: &mut Vec<Problem>) {
        let tls = &self.tls;
        let files = [
            ("client.tls.ca_file", tls.ca_file.as_ref()),
            ("client.tls.cert_file", tls.cert_file.as_ref()),
            ("client.tls.key_file", tls.key_file.as_ref()),
        ];
        file_problems(&files, problems);
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => problems.push(Problem::new(
                "client.tls.key_file",
                "missing; client.tls.cert_file needs its private key",
            )),
            (None, Some(_)) => problems.push(Problem::new(
                "client.tls.cert_file",
                "missing; client.tls.key_file needs its certificate",
            )),
            _ => {}
        }
        if tls
            .server_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            problems.push(Problem::new(
                "client.tls.server_name",
                "is empty; remove the key to check the endpoint's host",
            ));
        }
        if self.default_deadline.is_zero() || self.default_deadline > MAX_DEFAULT_DEADLINE {
            problems.push(Problem::new(
                "client.default_deadline",
                format!(
                    "{} is out of range; must be more than 0 and at most {}",
                    format_duration(self.default_deadline),
                    format_duration(MAX_DEFAULT_DEADLINE)
                ),
            ));
        }
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
    /// The secret or public key must be the one the algorithm verifies with.
    fn key_material_problems(&self, problems: &mut Vec<Problem>) {
        self.key_list_problems(problems);
        const ALG: &[&str] = &["auth.algorithm"];
        let alg = self.algorithm;
        let has_default_key = self.hmac_secret.is_some()
            || self.public_key_pem.is_some()
            || self.public_key_file.is_some();
        let has_other_keys = !self.keys.is_empty()
            || self.jwks.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some();
        if has_other_keys && !has_default_key {
            // The default key is optional when keys come from `auth.keys` or a JWKS.
            return;
        }
        let mut push =
            |key, message: String| problems.push(Problem::new(key, message).depends(ALG));

        if alg.is_hmac() {
            match &self.hmac_secret {
                None => push(
                    "auth.hmac_secret",
                    format!("missing; required for {alg} (set KEEL_AUTH__HMAC_SECRET)"),
                ),
                Some(secret) if secret.expose().len() < MIN_HMAC_SECRET_BYTES => push(
                    "auth.hmac_secret",
                    format!(
                        "too short: {} bytes; {alg} needs at least {MIN_HMAC_SECRET_BYTES} bytes",
                        secret.expose().len()
                    ),
                ),
                Some(_) => {}
            }
            let public_keys = [
                ("auth.public_key_pem", self.public_key_pem.is_some()),
                ("auth.public_key_file", self.public_key_file.is_some()),
            ];
            for (key, _) in public_keys.into_iter().filter(|(_, set)| *set) {
                push(
                    key,
                    format!("not allowed with {alg}, which verifies with auth.hmac_secret"),
                );
            }
            return;
        }

        if self.hmac_secret.is_some() {
            push(
                "auth.hmac_secret",
                format!(
                    "not allowed with {alg}, which verifies with auth.public_key_pem or \
                     auth.public_key_file"
                ),
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
            (Some(pem), None) if !pem.contains("-----BEGIN") => push(
                "auth.public_key_pem",
                "is not PEM text (no \"-----BEGIN\" line)".to_owned(),
            ),
            (None, Some(path)) if !path.is_file() => push(
                "auth.public_key_file",
                format!("{} does not exist or is not a file", path.display()),
            ),
            _ => {}
        }
    }

    /// `auth.keys` entries and the JWKS source.
    fn key_list_problems(&self, problems: &mut Vec<Problem>) {
        let mut push = |message: String| problems.push(Problem::new("auth.keys", message));
        let mut seen = std::collections::BTreeSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            let at = format!("entry {i} (kid {:?})", key.kid);
            let alg = key.algorithm;
            if key.kid.trim().is_empty() {
                push(format!("entry {i}: kid must not be empty"));
            } else if !seen.insert(key.kid.as_str()) {
                push(format!("{at}: kid is used by an earlier entry too"));
            }
            let asymmetric = [
                ("public_key_pem", key.public_key_pem.is_some()),
                ("public_key_file", key.public_key_file.is_some()),
                ("private_key_pem", key.private_key_pem.is_some()),
                ("private_key_file", key.private_key_file.is_some()),
            ];
            let set: Vec<&str> = asymmetric
                .iter()
                .filter(|(_, set)| *set)
                .map(|(name, _)| *name)
                .collect();
            if alg.is_hmac() {
                match &key.hmac_secret {
                    None => push(format!("{at}: hmac_secret missing; required for {alg}")),
                    Some(secret) if secret.expose().len() < MIN_HMAC_SECRET_BYTES => push(format!(
                        "{at}: hmac_secret too short: {} bytes; {alg} needs at least \
                         {MIN_HMAC_SECRET_BYTES} bytes",
                        secret.expose().len()
                    )),
                    Some(_) => {}
                }
                for name in set {
                    push(format!(
                        "{at}: {name} not allowed with {alg}, which uses hmac_secret"
                    ));
                }
                continue;
            }
            if key.hmac_secret.is_some() {
                push(format!("{at}: hmac_secret not allowed with {alg}"));
            }
            match set.as_slice() {
                [] => push(format!(
                    "{at}: {alg} needs one of public_key_pem, public_key_file, private_key_pem, \
                     private_key_file"
                )),
                [_] => {}
                several => push(format!("{at}: set exactly one of {}", several.join(", "))),
            }
            let pems = [
                ("public_key_pem", key.public_key_pem.as_deref()),
                (
                    "private_key_pem",
                    key.private_key_pem.as_ref().map(|s| s.expose()),
                ),
            ];
            for (name, pem) in pems {
                if pem.is_some_and(|pem| !pem.contains("-----BEGIN")) {
                    push(format!(
                        "{at}: {name} is not PEM text (no \"-----BEGIN\" line)"
                    ));
                }
            }
            let files = [
                ("public_key_file", &key.public_key_file),
                ("private_key_file", &key.private_key_file),
            ];
            for (name, path) in files {
                if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                    push(format!(
                        "{at}: {name} {} does not exist or is not a file",
                        path.display()
                    ));
                }
            }
        }
        match (&self.jwks, &self.jwks_file) {
            (Some(_), Some(_)) => problems.push(
                Problem::new(
                    "auth.jwks_file",
                    "auth.jwks is set too; set at most one of them",
                )
                .depends(&["auth.jwks"]),
            ),
            (Some(jwks), None) => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(jwks) {
                    problems.push(Problem::new("auth.jwks", format!("is not JSON: {e}")));
                }
            }
            (None, Some(path)) if !path.is_file() => problems.push(Problem::new(
                "auth.jwks_file",
                format!("{} does not exist or is not a file", path.display()),
            )),
            _ => {}
        }
    }

    /// Bounds of the leeway and the token size, and no empty `iss` / `aud` expectations.
    fn value_problems(&self, problems: &mut Vec<Problem>) {
        if let Some(url) = &self.jwks_url
            && let Some(message) = url_problem(url, "to fetch no key set", "auth:9092")
        {
            problems.push(Problem::new("auth.jwks_url", message));
        }
        if self.jwks_refresh < Duration::from_secs(1) {
            problems.push(Problem::new(
                "auth.jwks_refresh",
                format!(
                    "{} is too short; at least 1s",
                    format_duration(self.jwks_refresh)
                ),
            ));
        }
        if self.jwks_min_refresh > self.jwks_refresh {
            problems.push(
                Problem::new(
                    "auth.jwks_min_refresh",
                    format!(
                        "{} is longer than auth.jwks_refresh ({}); at most that",
                        format_duration(self.jwks_min_refresh),
                        format_duration(self.jwks_refresh)
                    ),
                )
                .depends(&["auth.jwks_refresh"]),
            );
        }
        if self.leeway > MAX_LEEWAY {
            problems.push(Problem::new(
                "auth.leeway",
                format!(
                    "{} exceeds the maximum of {}",
                    format_duration(self.leeway),
                    format_duration(MAX_LEEWAY)
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
        for (key, value, claim) in [
            ("auth.issuer", &self.issuer, "iss"),
            ("auth.audience", &self.audience, "aud"),
        ] {
            if value.as_deref().is_some_and(|s| s.trim().is_empty()) {
                problems.push(Problem::new(
                    key,
                    format!("is empty; remove the key to disable the `{claim}` check"),
                ));
            }
        }
    }
}

impl StoreConfig {
    /// A URL scheme a store supports, a pool of at least one connection, a non-zero wait.
    fn problems(&self, problems: &mut Vec<Problem>) {
        if !super::store::supported_scheme(self.url.expose()) {
            problems.push(Problem::new(
                "store.url",
                format!("{}: {}", self.url, super::STORE_SCHEMES),
            ));
        }
        if self.max_connections == 0 {
            problems.push(Problem::new("store.max_connections", "must be at least 1"));
        }
        if self.acquire_timeout.is_zero() {
            problems.push(Problem::new(
                "store.acquire_timeout",
                "must be more than 0s",
            ));
        }
    }
}

impl HttpConfig {
    fn problems(&self, problems: &mut Vec<Problem>) {
        for origin in &self.cors.allowed_origins {
            if let Some(why) = origin_problem(origin) {
                problems.push(Problem::new(
                    "http.cors.allowed_origins",
                    format!("{origin:?} {why}"),
                ));
            }
        }
    }
}

/// Why `origin` is not an origin browsers send (`scheme://host[:port]`).
fn origin_problem(origin: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Some(
            "is not an origin: write it as scheme://host[:port], like https://app.example.com",
        );
    };
    if scheme != "http" && scheme != "https" {
        return Some("is not an http or https origin");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Some("is not an origin: no path, query or fragment (scheme://host[:port])");
    }
    if http::HeaderValue::from_str(origin).is_err() {
        return Some("is not a valid header value");
    }
    None
}
