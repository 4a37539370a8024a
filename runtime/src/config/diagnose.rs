//! Decoding the merged layers into sections, with every problem described: its key, the
//! offending value (never for secrets) and where the value came from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::error::{Actual, Kind};
use figment::value::{Dict, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;

use super::env::{ENV_LAYER_NAME, env_separator_hint};
use super::secret::REDACTED;
use super::{
    Algorithm, ClientTlsConfig, Config, ConfigError, CorsConfig, DatabaseUrl, Environment,
    KeyConfig, LogFormat, SECTIONS, Secret, ServerTlsConfig,
};

/// A key of a section and how to decode it on its own (for complete error reports).
struct Field {
    name: &'static str,
    /// The errors of decoding the value at the given key (none when it decodes).
    check: fn(&Figment, &str) -> Vec<figment::Error>,
}

const fn field<T: DeserializeOwned>(name: &'static str) -> Field {
    fn check<T: DeserializeOwned>(figment: &Figment, key: &str) -> Vec<figment::Error> {
        let errors = figment.extract_inner::<T>(key).err();
        errors.into_iter().flatten().collect()
    }
    Field {
        name,
        check: check::<T>,
    }
}

// These tables mirror the structs of `Config`; a unit test keeps them in sync with serde's view.
const SERVICE_FIELDS: &[Field] = &[field::<String>("name"), field::<Environment>("environment")];
const SERVER_FIELDS: &[Field] = &[
    field::<SocketAddr>("addr"),
    field::<humantime_serde::Serde<Duration>>("lame_duck"),
    field::<humantime_serde::Serde<Duration>>("drain_timeout"),
    field::<usize>("max_message_bytes"),
    field::<u32>("max_concurrent_streams"),
    field::<u32>("max_connections"),
    field::<humantime_serde::Serde<Duration>>("handshake_timeout"),
    field::<humantime_serde::Serde<Duration>>("idle_timeout"),
    field::<humantime_serde::Serde<Duration>>("keepalive_interval"),
    field::<humantime_serde::Serde<Duration>>("keepalive_timeout"),
    field::<ServerTlsConfig>("tls"),
];
const METRICS_FIELDS: &[Field] = &[
    field::<bool>("enabled"),
    field::<SocketAddr>("addr"),
    field::<ServerTlsConfig>("tls"),
];
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
    field::<Vec<KeyConfig>>("keys"),
    field::<String>("jwks"),
    field::<PathBuf>("jwks_file"),
    field::<String>("jwks_url"),
    field::<humantime_serde::Serde<Duration>>("jwks_refresh"),
    field::<humantime_serde::Serde<Duration>>("jwks_min_refresh"),
];
const STORE_FIELDS: &[Field] = &[
    field::<DatabaseUrl>("url"),
    field::<u32>("max_connections"),
    field::<humantime_serde::Serde<Duration>>("acquire_timeout"),
    field::<humantime_serde::Serde<Duration>>("busy_timeout"),
];
const TELEMETRY_FIELDS: &[Field] = &[
    field::<String>("otlp_endpoint"),
    field::<f64>("sampling_ratio"),
    field::<humantime_serde::Serde<Duration>>("export_timeout"),
    field::<LogFormat>("log_format"),
    field::<String>("log_filter"),
    field::<BTreeMap<String, String>>("resource"),
];
const HTTP_FIELDS: &[Field] = &[field::<bool>("grpc_web"), field::<CorsConfig>("cors")];
const CLIENT_FIELDS: &[Field] = &[
    field::<humantime_serde::Serde<Duration>>("default_deadline"),
    field::<ClientTlsConfig>("tls"),
];

/// Decodes sections of a figment, collecting every problem as a sentence that starts with the
/// key it concerns.
pub(super) struct Decoder<'a> {
    figment: &'a Figment,
    problems: Vec<String>,
    /// Keys (or whole sections) that failed to decode, and so hold their defaults.
    failed: BTreeSet<String>,
}

impl<'a> Decoder<'a> {
    /// A decoder of `figment` whose report starts with `problems`.
    pub fn new(figment: &'a Figment, problems: Vec<String>) -> Self {
        Self {
            figment,
            problems,
            failed: BTreeSet::new(),
        }
    }

    /// `value`, or every problem reported.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        ConfigError::result(self.problems, value)
    }

    /// Reports `problem` about `key`, naming where the value of `key` came from.
    pub fn report(&mut self, key: &str, problem: impl std::fmt::Display) {
        let problem = format!("{problem}{}", from_source(self.source_of(key)));
        self.problems.push(problem);
    }

    /// Reports `problem` about the value at `key` tagged `tag`, naming the layer it came from
    /// (for keys `figment` cannot find by name, such as entries of arrays).
    pub fn report_tagged(&mut self, key: &str, tag: Tag, problem: impl std::fmt::Display) {
        let source = (self.figment.get_metadata(tag))
            .map(|metadata| describe_source(metadata, self.figment.profile(), key));
        self.problems
            .push(format!("{problem}{}", from_source(source)));
    }

    /// Whether `key` decoded (neither it nor its section failed).
    pub fn decoded(&self, key: &str) -> bool {
        let section = key.split('.').next().unwrap_or(key);
        !self.failed.contains(key) && !self.failed.contains(section)
    }

    /// Reports the top-level sections that are neither built in nor in `extra`.
    pub fn unknown_sections(&mut self, extra: &BTreeSet<String>) {
        let Ok(data) = self.figment.data() else {
            return;
        };
        let mut known: Vec<&str> = SECTIONS.to_vec();
        known.extend(extra.iter().map(String::as_str));
        let names: BTreeSet<&String> = data.values().flat_map(Dict::keys).collect();
        for name in names {
            if known.contains(&name.as_str()) {
                continue;
            }
            let mut problem = format!("{name}: unknown section; {}", one_of(&known));
            let source = self.source_of(name);
            if source
                .as_deref()
                .is_some_and(|s| s.starts_with(ENV_LAYER_NAME))
                && let Some(hint) = env_separator_hint(name)
            {
                problem.push_str(&format!(" (did you mean {hint}?)"));
            }
            problem.push_str(&from_source(source));
            self.problems.push(problem);
        }
    }

    /// The built-in sections, decoded over the built-in defaults.
    pub fn config(&mut self) -> Config {
        let mut config = Config::default();
        self.section("service", SERVICE_FIELDS, &mut config.service);
        self.section("server", SERVER_FIELDS, &mut config.server);
        self.section("http", HTTP_FIELDS, &mut config.http);
        self.section("metrics", METRICS_FIELDS, &mut config.metrics);
        self.section("auth", AUTH_FIELDS, &mut config.auth);
        self.section("telemetry", TELEMETRY_FIELDS, &mut config.telemetry);
        self.section("client", CLIENT_FIELDS, &mut config.client);
        self.section("store", STORE_FIELDS, &mut config.store);
        config
    }

    /// An application section, decoded over `T::default()` (as a whole: its keys are not known
    /// here).
    pub fn app_section<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
        let mut value = T::default();
        self.section(name, &[], &mut value);
        value
    }

    /// Decodes section `name` into `out` when present, reporting its problems.
    ///
    /// serde stops at the first bad field of a struct, so when the section fails to decode, its
    /// keys are checked one by one against `fields` to report every bad one; the section is then
    /// decoded without them, so that `out` holds every good value. Without `fields` (application
    /// sections), or when that finds nothing, figment's view of the section is reported.
    fn section<T: DeserializeOwned>(&mut self, name: &str, fields: &[Field], out: &mut T) {
        if !self.figment.contains(name) {
            return;
        }
        let errors = match self.figment.extract_inner::<T>(name) {
            Ok(value) => {
                *out = value;
                return;
            }
            Err(errors) => errors,
        };
        let problems = match self.without_bad_keys(name, fields) {
            Some((value, bad)) => {
                *out = value;
                let (keys, problems): (Vec<_>, Vec<_>) = bad.into_iter().unzip();
                self.failed
                    .extend(keys.iter().map(|key| format!("{name}.{key}")));
                problems
            }
            None => {
                self.failed.insert(name.to_owned());
                let describe = |error| self.describe_error(name, &error);
                errors.into_iter().map(describe).collect()
            }
        };
        for problem in problems {
            if !self.problems.contains(&problem) {
                self.problems.push(problem);
            }
        }
    }

    /// Section `name` decoded without its bad keys, and `(key, problem)` for each of these
    /// (see [`Decoder::section`]).
    fn without_bad_keys<T: DeserializeOwned>(
        &self,
        name: &str,
        fields: &[Field],
    ) -> Option<(T, Vec<(String, String)>)> {
        if fields.is_empty() {
            return None;
        }
        let Ok(Value::Dict(tag, mut dict)) = self.figment.find_value(name) else {
            return None;
        };
        let bad = self.bad_keys(name, fields, &dict);
        if bad.is_empty() {
            return None;
        }
        for (key, _) in &bad {
            dict.remove(key);
        }
        let value = Value::Dict(tag, dict).deserialize().ok()?;
        Some((value, bad))
    }

    /// Checks every key of the table of `section` on its own, returning `(key, problem)` for
    /// the bad and unknown ones.
    fn bad_keys(&self, section: &str, fields: &[Field], dict: &Dict) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        for name in dict.keys() {
            let key = format!("{section}.{name}");
            match fields.iter().find(|field| field.name == name) {
                Some(field) => {
                    for error in (field.check)(self.figment, &key) {
                        bad.push((name.clone(), self.describe_error(&key, &error)));
                    }
                }
                None => {
                    let known: Vec<&str> = fields.iter().map(|field| field.name).collect();
                    let source = from_source(self.source_of(&key));
                    let problem = format!("{key}: unknown key; {}{source}", one_of(&known));
                    bad.push((name.clone(), problem));
                }
            }
        }
        bad
    }

    /// Turns one figment error of `extract_inner(base)` into a problem sentence.
    fn describe_error(&self, base: &str, error: &figment::Error) -> String {
        let key = error_key(base, error);
        let secret = is_secret_key(&key);
        let message = error_message(&error.kind, secret);
        let got = match &error.kind {
            Kind::UnknownField(..) | Kind::UnknownVariant(..) => String::new(),
            kind => self.got(&key, kind, secret),
        };
        let source = self.source_of(&key).or_else(|| {
            let metadata = error.metadata.as_ref()?;
            Some(describe_source(metadata, self.figment.profile(), &key))
        });
        format!("{key}: {message}{got}{}", from_source(source))
    }

    /// `; got VALUE` for the offending value at `key` (`[redacted]` for secrets), when known.
    fn got(&self, key: &str, kind: &Kind, secret: bool) -> String {
        let actual = match (self.figment.find_value(key), kind) {
            (Ok(value), _) => value.to_actual(),
            (Err(_), Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _)) => {
                actual.clone()
            }
            (Err(_), _) => return String::new(),
        };
        if secret {
            format!("; got {REDACTED}")
        } else {
            format!("; got {}", render_actual(&actual))
        }
    }

    /// Where the value at `key` came from, if it is set in some layer.
    fn source_of(&self, key: &str) -> Option<String> {
        let value = self.figment.find_value(key).ok()?;
        let metadata = self.figment.get_metadata(value.tag())?;
        Some(describe_source(metadata, self.figment.profile(), key))
    }
}

/// The key an error of `extract_inner(base)` is about.
fn error_key(base: &str, error: &figment::Error) -> String {
    // figment 0.10.19's `extract_inner` *appends* `base` to the error path
    // (`["addr", "server"]` for `extract_inner("server")`): rebuild the key ourselves.
    let mut key: Vec<&str> = base.split('.').collect();
    let mut path: Vec<&str> = error.path.iter().map(String::as_str).collect();
    if path.ends_with(&key) {
        path.truncate(path.len() - key.len());
    } else if path.starts_with(&key) {
        path.drain(..key.len());
    }
    key.extend(path);
    key.join(".")
}

/// What is wrong, by the kind of error (without the offending value).
fn error_message(kind: &Kind, secret: bool) -> String {
    match kind {
        Kind::UnknownField(_, expected) => format!("unknown key; {}", one_of(expected)),
        Kind::UnknownVariant(value, expected) => {
            let shown = if secret { REDACTED } else { value };
            let mut message = format!("unknown value {shown:?}; {}", one_of(expected));
            if let Some(close) = expected.iter().find(|e| e.eq_ignore_ascii_case(value)) {
                message.push_str(&format!(
                    " (names are case-sensitive: did you mean {close:?}?)"
                ));
            }
            message
        }
        Kind::InvalidType(actual, expected) => format!(
            "invalid type: expected {expected}, found {}",
            actual_kind(actual)
        ),
        Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
        _ if secret => "invalid value".to_owned(),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

fn one_of(expected: &[&str]) -> String {
    format!("expected one of: {}", expected.join(", "))
}

/// ` (from SOURCE)`, or nothing.
fn from_source(source: Option<String>) -> String {
    source.map(|s| format!(" (from {s})")).unwrap_or_default()
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
    last.contains("secret") || last.contains("password") || last.contains("private")
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
    use figment::providers::{Format, Toml};

    use super::*;
    use crate::config::{
        AuthConfig, ClientConfig, HttpConfig, MetricsConfig, ServerConfig, ServiceConfig,
        StoreConfig, TelemetryConfig,
    };

    /// The keys serde knows for section `section`, from its unknown-field error.
    fn serde_fields<T: DeserializeOwned + std::fmt::Debug>(section: &str) -> Vec<&'static str> {
        let figment = Figment::from(Toml::string(&format!("[{section}]\n__probe__ = 1\n")));
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
        assert_eq!(
            names(TELEMETRY_FIELDS),
            serde_fields::<TelemetryConfig>("telemetry")
        );
        assert_eq!(names(CLIENT_FIELDS), serde_fields::<ClientConfig>("client"));
        assert_eq!(names(HTTP_FIELDS), serde_fields::<HttpConfig>("http"));
        assert_eq!(names(STORE_FIELDS), serde_fields::<StoreConfig>("store"));
    }
}
