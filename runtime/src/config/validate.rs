//! The rules between keys of Keel's sections, which bounds cannot say; each
//! section's `#[config(validate = …)]`, run after its bounds. Keys are
//! relative to the section ([`Problems`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use humantime_serde::re::humantime::format_duration;

use super::section::Problems;
use super::{
    AuthConfig, ClientTlsConfig, Config, CorsConfig, Section, ServerTlsConfig, StoreConfig,
    TelemetryConfig,
};

/// Minimum length in bytes of `auth.hmac_secret`.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

impl<App: Section> Config<App> {
    /// Rules across sections, then the service's own against Keel's.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        if self.service.name.trim().is_empty() {
            problems.push("service.name", "must not be empty");
        }
        if self.metrics.enabled && addrs_collide(self.metrics.addr, self.server.addr) {
            problems.push_reading(
                "metrics.addr",
                format!(
                    "{} collides with server.addr {}; use another port or set \
                     metrics.enabled = false",
                    self.metrics.addr, self.server.addr
                ),
                &["metrics.enabled", "server.addr"],
            );
        }
        App::check_in(self, problems);
    }
}

/// Two listen addresses collide when they use the same (non-zero) port and the same IP, or one
/// of them is the unspecified address (which binds every interface).
fn addrs_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl ServerTlsConfig {
    /// Files that exist; `client_auth` only with the CAs it is about.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        let files = [
            ("cert_file", Some(&self.cert_file)),
            ("key_file", Some(&self.key_file)),
            ("client_ca_file", self.client_ca_file.as_ref()),
        ];
        file_problems(&files, problems);
        if self.client_auth.is_some() && self.client_ca_file.is_none() {
            let needs = format!(
                "needs {}, the CAs client certificates are checked against",
                problems.key("client_ca_file")
            );
            problems.push("client_auth", needs);
        }
    }
}

/// A problem for each of `files` that is set but is no file.
fn file_problems(files: &[(&str, Option<&PathBuf>)], problems: &mut Problems<'_>) {
    for (key, path) in files {
        if let Some(path) = path.filter(|path| !path.is_file()) {
            problems.push(
                key,
                format!("{} does not exist or is not a file", path.display()),
            );
        }
    }
}

impl TelemetryConfig {
    /// A usable endpoint, a filter that parses, resource names of our own.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        if let Some(endpoint) = &self.otlp_endpoint
            && let Some(message) = url_problem(endpoint, "to disable export", "localhost:4317")
        {
            problems.push("otlp_endpoint", message);
        }
        if self.log_filter.trim().is_empty() {
            problems.push("log_filter", "is empty; use \"off\" to log nothing");
        } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            problems.push(
                "log_filter",
                format!("{:?} is not a valid filter: {e}", self.log_filter),
            );
        }
        for name in self.resource.keys() {
            if name.trim().is_empty() {
                problems.push("resource", "attribute names must not be empty");
            } else if name == "service.name" {
                problems.push(
                    "resource",
                    "service.name comes from the [service] section; remove it here",
                );
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

impl ClientTlsConfig {
    /// Files that exist, a certificate with its key, a name that is one.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        let files = [
            ("ca_file", self.ca_file.as_ref()),
            ("cert_file", self.cert_file.as_ref()),
            ("key_file", self.key_file.as_ref()),
        ];
        file_problems(&files, problems);
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                let message = format!(
                    "missing; {} needs its private key",
                    problems.key("cert_file")
                );
                problems.push("key_file", message);
            }
            (None, Some(_)) => {
                let message = format!(
                    "missing; {} needs its certificate",
                    problems.key("key_file")
                );
                problems.push("cert_file", message);
            }
            _ => {}
        }
        if (self.server_name.as_deref()).is_some_and(|name| name.trim().is_empty()) {
            problems.push(
                "server_name",
                "is empty; remove the key to check the endpoint's host",
            );
        }
    }
}

impl AuthConfig {
    /// Key material matching the algorithm, the key list, the JWKS sources, the claims.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        self.key_material_problems(problems);
        self.key_list_problems(problems);
        if let Some(url) = &self.jwks_url
            && let Some(message) = url_problem(url, "to fetch no key set", "auth:9092")
        {
            problems.push("jwks_url", message);
        }
        if let Some(target) = &self.revocations {
            let problem = match target.strip_prefix("dns:///") {
                Some(name) if name.contains(':') && !name.starts_with(':') => None,
                Some(_) => Some(format!(
                    "{target:?} needs a name and a port (like dns:///auth-service:9092)"
                )),
                None => url_problem(target, "to follow no revocations", "auth:50051"),
            };
            if let Some(message) = problem {
                problems.push("revocations", message);
            }
        }
        if self.jwks_min_refresh > self.jwks_refresh {
            problems.push_reading(
                "jwks_min_refresh",
                format!(
                    "{} is longer than auth.jwks_refresh ({}); at most that",
                    format_duration(self.jwks_min_refresh),
                    format_duration(self.jwks_refresh)
                ),
                &["jwks_refresh"],
            );
        }
        for (key, value, claim) in [
            ("issuer", &self.issuer, "iss"),
            ("audience", &self.audience, "aud"),
        ] {
            if value.as_deref().is_some_and(|s| s.trim().is_empty()) {
                problems.push(
                    key,
                    format!("is empty; remove the key to disable the `{claim}` check"),
                );
            }
        }
    }

    /// The secret or public key must be the one the algorithm verifies with.
    fn key_material_problems(&self, problems: &mut Problems<'_>) {
        const ALG: &[&str] = &["algorithm"];
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
        let mut push = |key: &str, message: String| problems.push_reading(key, message, ALG);

        if alg.is_hmac() {
            match &self.hmac_secret {
                None => push(
                    "hmac_secret",
                    format!("missing; required for {alg} (set KEEL_AUTH__HMAC_SECRET)"),
                ),
                Some(secret) if secret.expose().len() < MIN_HMAC_SECRET_BYTES => push(
                    "hmac_secret",
                    format!(
                        "too short: {} bytes; {alg} needs at least {MIN_HMAC_SECRET_BYTES} bytes",
                        secret.expose().len()
                    ),
                ),
                Some(_) => {}
            }
            let public_keys = [
                ("public_key_pem", self.public_key_pem.is_some()),
                ("public_key_file", self.public_key_file.is_some()),
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
                "hmac_secret",
                format!(
                    "not allowed with {alg}, which verifies with auth.public_key_pem or \
                     auth.public_key_file"
                ),
            );
        }
        match (&self.public_key_pem, &self.public_key_file) {
            (None, None) => problems.push_reading(
                "public_key_pem",
                format!(
                    "missing; {alg} needs exactly one of auth.public_key_pem or \
                     auth.public_key_file (set KEEL_AUTH__PUBLIC_KEY_PEM or \
                     KEEL_AUTH__PUBLIC_KEY_FILE)"
                ),
                &["algorithm", "public_key_file"],
            ),
            (Some(_), Some(_)) => problems.push_reading(
                "public_key_file",
                "auth.public_key_pem is set too; set exactly one of them",
                &["algorithm", "public_key_pem"],
            ),
            (Some(pem), None) if !pem.contains("-----BEGIN") => push(
                "public_key_pem",
                "is not PEM text (no \"-----BEGIN\" line)".to_owned(),
            ),
            (None, Some(path)) if !path.is_file() => push(
                "public_key_file",
                format!("{} does not exist or is not a file", path.display()),
            ),
            _ => {}
        }
    }

    /// `auth.keys` entries and the JWKS source.
    fn key_list_problems(&self, problems: &mut Problems<'_>) {
        let mut push = |message: String| problems.push("keys", message);
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
            (Some(_), Some(_)) => problems.push_reading(
                "jwks_file",
                "auth.jwks is set too; set at most one of them",
                &["jwks"],
            ),
            (Some(jwks), None) => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(jwks) {
                    problems.push("jwks", format!("is not JSON: {e}"));
                }
            }
            (None, Some(path)) if !path.is_file() => problems.push(
                "jwks_file",
                format!("{} does not exist or is not a file", path.display()),
            ),
            _ => {}
        }
    }
}

impl StoreConfig {
    /// A URL scheme a store supports.
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        if !super::store::supported_scheme(self.url.expose()) {
            problems.push("url", format!("{}: {}", self.url, super::STORE_SCHEMES));
        }
    }
}

impl CorsConfig {
    pub(super) fn problems(&self, problems: &mut Problems<'_>) {
        for origin in &self.allowed_origins {
            if let Some(why) = origin_problem(origin) {
                problems.push("allowed_origins", format!("{origin:?} {why}"));
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
