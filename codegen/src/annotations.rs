//! Reads Keel's annotations from a compiled descriptor pool and resolves them
//! into one policy per method, checking every rule on the way.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FileDescriptor, MethodDescriptor,
    ReflectMessage, ServiceDescriptor, Value,
};

use crate::error::Diagnostic;
use crate::http::{self, HttpRoute};

/// Label names Keel's own metrics use; an annotation may not redefine them.
pub const RESERVED_LABELS: &[&str] = &[
    "grpc_type",
    "grpc_service",
    "grpc_method",
    "grpc_code",
    "le",
];

/// `ServiceDescriptorProto.options` and `MethodDescriptorProto.options` field numbers.
const SERVICE_OPTIONS_FIELD: i32 = 3;
const METHOD_OPTIONS_FIELD: i32 = 4;

/// Who may call a method, after defaults and overrides are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Callable without a token.
    Public,
    /// Needs a valid access token carrying every listed scope.
    Token(Vec<String>),
    /// Needs a verified client certificate naming one of `peers`, and, when `scopes` is not
    /// empty, a valid access token carrying them.
    Peer {
        /// The workload identities allowed.
        peers: Vec<String>,
        /// Scopes of the access token also required (none: no token is read).
        scopes: Vec<String>,
    },
}

/// The resolved policy of one method.
#[derive(Clone, Debug)]
pub struct MethodSpec {
    /// Method name as written in the proto (`GetUser`).
    pub name: String,
    /// Whether the client sends a stream.
    pub client_streaming: bool,
    /// Whether the server answers with a stream.
    pub server_streaming: bool,
    /// Who may call it.
    pub access: Access,
    /// Labels after merging service and method level, ordered by key.
    pub labels: BTreeMap<String, String>,
    /// `timeout`, method over service.
    pub timeout: Option<Duration>,
    /// `max_timeout`, method over service.
    pub max_timeout: Option<Duration>,
    /// `max_concurrency`, method over service.
    pub max_concurrency: Option<u32>,
    /// `rate_limit`, method over service.
    pub rate_limit: Option<RateLimit>,
    /// How generated clients retry it: `retry`, method over service, else
    /// the default of an idempotent method; `None` for streaming methods.
    pub retry: Option<RetryPolicy>,
    /// The method's own message-typed options of other packages (an
    /// `extend google.protobuf.MethodOptions` of the user's), by full name,
    /// each its value encoded: carried into the policy table for the user's
    /// layers to decode.
    pub options: Vec<(String, Vec<u8>)>,
    /// Whether its input message has `buf.validate` rules (its requests
    /// are checked before the handler).
    pub validated: bool,
    /// Its HTTP routes (`google.api.http`), the main one first.
    pub http: Vec<HttpRoute>,
    /// The request message's full name.
    pub input: String,
    /// The response message's full name.
    pub output: String,
}

/// A method's client retry policy, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, 2 to 5.
    pub max_attempts: u32,
    /// The pause before the first retry.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How much the pause grows after each retry.
    pub backoff_multiplier: f64,
    /// The codes retried, by their names in the gRPC spec (`UNAVAILABLE`).
    pub retryable_codes: Vec<String>,
}

impl RetryPolicy {
    /// What a method marked idempotent (or without side effects) gets when
    /// it sets no `retry`.
    pub fn idempotent_default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable_codes: vec!["UNAVAILABLE".to_owned()],
        }
    }
}

/// The status codes by their names in the gRPC spec, `OK` aside.
pub const CODE_NAMES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A method's `rate_limit`, checked and with its defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Calls per second on average.
    pub per_second: f64,
    /// Calls at once after a quiet period (at least 1).
    pub burst: u32,
    /// Whose calls share a bucket.
    pub key: RateKey,
}

/// Whose calls share a rate limit's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// Every call of the method.
    Global,
    /// The caller's IP address.
    Peer,
    /// The access token's `sub`.
    Subject,
    /// The access token's claim of this name.
    Claim(String),
}

impl RateKey {
    /// The key as written in the annotation.
    pub fn to_annotation(&self) -> String {
        match self {
            RateKey::Global => "global".to_owned(),
            RateKey::Peer => "peer".to_owned(),
            RateKey::Subject => "subject".to_owned(),
            RateKey::Claim(name) => format!("claim:{name}"),
        }
    }
}

/// The smallest `rate_limit.per_second` (one call in about 12 days).
const MIN_PER_SECOND: f64 = 1e-6;

/// The resolved policies of one service.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Fully qualified name (`user.v1.UserService`).
    pub full_name: String,
    /// Its methods, in proto order.
    pub methods: Vec<MethodSpec>,
}

/// One annotation block (service or method level) as written.
#[derive(Default)]
struct Block {
    auth: Option<Access>,
    labels: Vec<(String, String)>,
    timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    max_concurrency: Option<u32>,
    rate_limit: Option<RateLimit>,
    retry: Option<RetryPolicy>,
}

/// `MethodOptions.idempotency_level` values that make a method retryable.
const NO_SIDE_EFFECTS: i32 = 1;
const IDEMPOTENT: i32 = 2;

/// Resolves the policies of every service in `files`, collecting every
/// annotation error instead of stopping at the first.
pub fn resolve(
    pool: &DescriptorPool,
    files: &[FileDescriptor],
    paths: &HashMap<String, PathBuf>,
) -> Result<Vec<ServiceSpec>, Vec<Diagnostic>> {
    let service_ext = pool.get_extension_by_name("keel.v1.service");
    let method_ext = pool.get_extension_by_name("keel.v1.method");
    let http_ext = pool.get_extension_by_name("google.api.http");
    let mut diagnostics = Vec::new();
    let mut specs = Vec::new();
    // Every route of the build so far, by the method that has it.
    let mut routes: Vec<(String, HttpRoute)> = Vec::new();
    for file in files {
        let locate = Locator { file, paths };
        for service in file.services() {
            specs.push(resolve_service(
                &service,
                Extensions {
                    service: service_ext.as_ref(),
                    method: method_ext.as_ref(),
                    http: http_ext.as_ref(),
                },
                &locate,
                &mut routes,
                &mut diagnostics,
            ));
        }
    }
    if diagnostics.is_empty() {
        Ok(specs)
    } else {
        Err(diagnostics)
    }
}

/// The options `resolve_service` reads, when their files are imported.
struct Extensions<'a> {
    service: Option<&'a ExtensionDescriptor>,
    method: Option<&'a ExtensionDescriptor>,
    http: Option<&'a ExtensionDescriptor>,
}

fn resolve_service(
    service: &ServiceDescriptor,
    ext: Extensions<'_>,
    locate: &Locator<'_>,
    routes: &mut Vec<(String, HttpRoute)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> ServiceSpec {
    let (service_ext, method_ext) = (ext.service, ext.method);
    let mut report = |path: Vec<i32>, message: String| {
        diagnostics.push(locate.at(&path, message));
    };
    let mut service_path = service.path().to_vec();
    service_path.push(SERVICE_OPTIONS_FIELD);
    if let Some(ext) = service_ext {
        service_path.push(ext.number() as i32);
    }
    let service_block = read_block(&service.options(), service_ext, &service_path, &mut report);

    let methods = service
        .methods()
        .map(|method| {
            let mut path = method.path().to_vec();
            path.push(METHOD_OPTIONS_FIELD);
            if let Some(ext) = method_ext {
                path.push(ext.number() as i32);
            }
            let block = read_block(&method.options(), method_ext, &path, &mut report);
            if block.retry.is_some() && (method.is_client_streaming() || method.is_server_streaming()) {
                report(
                    path.clone(),
                    "retry: streaming calls are not retried; only a unary method may have a retry policy"
                        .to_owned(),
                );
            }
            let mut spec = merge(&method, &service_block, block);
            let mut http_path = method.path().to_vec();
            http_path.push(METHOD_OPTIONS_FIELD);
            if let Some(ext) = ext.http {
                http_path.push(ext.number() as i32);
            }
            spec.http = http::routes(&method, ext.http, &mut |problem| {
                report(http_path.clone(), problem)
            });
            let name = format!("{}/{}", service.full_name(), method.name());
            for route in &spec.http {
                if let Some(other) = http::clash(routes, route) {
                    report(
                        http_path.clone(),
                        format!("google.api.http: {route} is also a route of {other}"),
                    );
                }
                routes.push((name.clone(), route.clone()));
            }
            if let (Some(timeout), Some(max)) = (spec.timeout, spec.max_timeout)
                && timeout > max
            {
                report(
                    path.clone(),
                    format!(
                        "timeout ({timeout:?}) is longer than max_timeout ({max:?}), \
                         with the service's defaults applied"
                    ),
                );
            }
            if let Some(problem) = spec
                .rate_limit
                .as_ref()
                .and_then(|r| key_problem(r, &spec.access))
            {
                report(path, problem);
            }
            spec
        })
        .collect();
    ServiceSpec {
        full_name: service.full_name().to_owned(),
        methods,
    }
}

/// Applies the service-level defaults under a method's own block.
fn merge(method: &MethodDescriptor, service: &Block, own: Block) -> MethodSpec {
    let access = own
        .auth
        .or_else(|| service.auth.clone())
        .unwrap_or(Access::Token(Vec::new()));
    let mut labels: BTreeMap<String, String> = service.labels.iter().cloned().collect();
    labels.extend(own.labels);
    MethodSpec {
        name: method.name().to_owned(),
        client_streaming: method.is_client_streaming(),
        server_streaming: method.is_server_streaming(),
        access,
        labels,
        timeout: own.timeout.or(service.timeout),
        max_timeout: own.max_timeout.or(service.max_timeout),
        max_concurrency: own.max_concurrency.or(service.max_concurrency),
        rate_limit: own.rate_limit.or_else(|| service.rate_limit.clone()),
        retry: retry_of(method, own.retry.or_else(|| service.retry.clone())),
        options: custom_options(method),
        validated: false,
        http: Vec::new(),
        input: method.input().full_name().to_owned(),
        output: method.output().full_name().to_owned(),
    }
}

/// The message-typed extensions of `method`'s options that are not Keel's,
/// encoded, by full name. Scalar extensions (of other tools, often) are
/// left out: a layer decodes a message.
fn custom_options(method: &MethodDescriptor) -> Vec<(String, Vec<u8>)> {
    let options = method.options();
    let mut found: Vec<(String, Vec<u8>)> = options
        .extensions()
        .filter(|(ext, _)| !ext.full_name().starts_with("keel.v1."))
        .filter_map(|(ext, value)| {
            Some((
                ext.full_name().to_owned(),
                prost::Message::encode_to_vec(value.as_message()?),
            ))
        })
        .collect();
    found.sort();
    found
}

/// The retry policy of `method`: the one annotated, else the default of an
/// idempotent method; never one for a streaming method.
fn retry_of(method: &MethodDescriptor, annotated: Option<RetryPolicy>) -> Option<RetryPolicy> {
    if method.is_client_streaming() || method.is_server_streaming() {
        return None;
    }
    let idempotency = method
        .options()
        .get_field_by_name("idempotency_level")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    annotated.or_else(|| {
        matches!(idempotency, NO_SIDE_EFFECTS | IDEMPOTENT).then(RetryPolicy::idempotent_default)
    })
}

/// Reads and checks a `keel.v1.RetryPolicy` block.
fn read_retry(
    block: &DynamicMessage,
    path: &[i32],
    report: &mut impl FnMut(Vec<i32>, String),
) -> Option<RetryPolicy> {
    let mut problem = |message: String| report(path.to_vec(), format!("retry: {message}"));
    let max_attempts = block
        .get_field_by_name("max_attempts")
        .and_then(|v| v.as_u32())
        .unwrap_or(0);
    let mut ok = true;
    if !(2..=5).contains(&max_attempts) {
        problem(format!(
            "max_attempts must be 2 to 5, the first attempt included (found {max_attempts})"
        ));
        ok = false;
    }
    let mut backoff = |name: &str| match field_message(block, name).map(|d| duration_of(&d)) {
        Some(Ok(duration)) => Some(duration),
        Some(Err((seconds, nanos))) => {
            problem(format!(
                "{name} must be a positive duration (seconds: {seconds}, nanos: {nanos})"
            ));
            None
        }
        None => {
            problem(format!("{name} is required"));
            None
        }
    };
    let initial_backoff = backoff("initial_backoff");
    let max_backoff = backoff("max_backoff");
    let backoff_multiplier = block
        .get_field_by_name("backoff_multiplier")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    if !(backoff_multiplier.is_finite() && backoff_multiplier > 0.0) {
        problem(format!(
            "backoff_multiplier must be positive (found {backoff_multiplier})"
        ));
        ok = false;
    }
    let retryable_codes = string_list(block, "retryable_codes");
    if retryable_codes.is_empty() {
        problem("retryable_codes must name at least one code (such as \"UNAVAILABLE\")".to_owned());
        ok = false;
    }
    for code in &retryable_codes {
        if !CODE_NAMES.contains(&code.as_str()) {
            problem(format!(
                "retryable_codes: {code:?} is not a status code that can be retried ({})",
                CODE_NAMES.join(", ")
            ));
            ok = false;
        }
    }
    let (initial_backoff, max_backoff) = (initial_backoff?, max_backoff?);
    if max_backoff < initial_backoff {
        problem(format!(
            "max_backoff ({max_backoff:?}) is shorter than initial_backoff ({initial_backoff:?})"
        ));
        ok = false;
    }
    ok.then_some(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_codes,
    })
}

/// A `google.protobuf.Duration` message as a positive `Duration`, or its
/// fields when it is not one.
fn duration_of(duration: &DynamicMessage) -> Result<Duration, (i64, i32)> {
    let seconds = duration
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let nanos = duration
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or(0);
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(s), Ok(n)) if n < 1_000_000_000 && (s, n) != (0, 0) => Ok(Duration::new(s, n)),
        _ => Err((seconds, nanos)),
    }
}

/// Why a rate limit's key cannot apply to a method with `access`, if it
/// cannot: a key from the token needs a method that reads one.
fn key_problem(rate_limit: &RateLimit, access: &Access) -> Option<String> {
    let reads_token = match access {
        Access::Public => false,
        Access::Token(_) => true,
        Access::Peer { scopes, .. } => !scopes.is_empty(),
    };
    match rate_limit.key {
        RateKey::Subject | RateKey::Claim(_) if !reads_token => Some(format!(
            "rate_limit: key {:?} comes from the access token, but this method reads none \
             (it is public, or peers without scopes); use \"peer\" or \"global\"",
            rate_limit.key.to_annotation()
        )),
        _ => None,
    }
}

/// Reads and checks a `keel.v1.RateLimit` block.
fn read_rate_limit(
    block: &DynamicMessage,
    path: &[i32],
    report: &mut impl FnMut(Vec<i32>, String),
) -> Option<RateLimit> {
    let per_second = block
        .get_field_by_name("per_second")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let burst = block
        .get_field_by_name("burst")
        .and_then(|v| v.as_u32())
        .unwrap_or(0);
    let key = string_field(block, "key");
    let key = match key.as_str() {
        "" | "global" => Some(RateKey::Global),
        "peer" => Some(RateKey::Peer),
        "subject" => Some(RateKey::Subject),
        other => match other.strip_prefix("claim:") {
            Some(name) if !name.is_empty() && !name.chars().any(char::is_whitespace) => {
                Some(RateKey::Claim(name.to_owned()))
            }
            _ => {
                report(
                    path.to_vec(),
                    format!(
                        "rate_limit: key {other:?} is not one of \"global\", \"peer\", \
                         \"subject\" or \"claim:<name>\""
                    ),
                );
                None
            }
        },
    };
    if !(per_second.is_finite() && per_second >= MIN_PER_SECOND) {
        report(
            path.to_vec(),
            format!(
                "rate_limit: per_second must be at least {MIN_PER_SECOND} calls per second (found {per_second})"
            ),
        );
        return None;
    }
    let burst = match burst {
        0 => (per_second.ceil() as u32).max(1),
        burst => burst,
    };
    Some(RateLimit {
        per_second,
        burst,
        key: key?,
    })
}

/// What is wrong with a workload identity of `auth.peers`, if anything: it must be `dns:` and a
/// DNS name, or an absolute URI with an authority (`spiffe://trust-domain/path`), as a
/// certificate's SAN would carry it.
fn peer_problem(peer: &str) -> Option<&'static str> {
    if let Some(name) = peer.strip_prefix("dns:") {
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        return (!(name.len() <= 253 && name.split('.').all(label_ok)))
            .then_some("is not a DNS name (dns:host.example.org)");
    }
    let Some((scheme, rest)) = peer.split_once("://") else {
        return Some("must be a URI SAN (spiffe://trust-domain/path) or dns:name");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let authority = rest.split('/').next().unwrap_or_default();
    if !scheme_ok {
        Some("has an invalid URI scheme")
    } else if authority.is_empty() {
        Some("has no authority (the trust domain of spiffe://trust-domain/path)")
    } else if peer.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        Some("must not contain whitespace, a query or a fragment")
    } else if scheme == "spiffe" && (peer.ends_with('/') || rest.contains("//")) {
        Some("is not a SPIFFE ID (no empty path segment, no trailing '/')")
    } else {
        None
    }
}

/// Reads and checks one `keel.v1.ServiceOptions` / `keel.v1.MethodOptions` block.
fn read_block(
    options: &DynamicMessage,
    ext: Option<&ExtensionDescriptor>,
    path: &[i32],
    report: &mut impl FnMut(Vec<i32>, String),
) -> Block {
    let Some(ext) = ext.filter(|ext| options.has_extension(ext)) else {
        return Block::default();
    };
    let value = options.get_extension(ext);
    let Some(block) = value.as_message() else {
        return Block::default();
    };
    let mut out = Block::default();
    if let Some(auth) = field_message(block, "auth") {
        let public = auth
            .get_field_by_name("public")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let scopes = string_list(&auth, "scopes");
        for scope in &scopes {
            if scope.is_empty() {
                report(path.to_vec(), "auth: empty scope".to_owned());
            } else if scope.chars().any(char::is_whitespace) {
                report(
                    path.to_vec(),
                    format!("auth: scope {scope:?} contains whitespace"),
                );
            }
        }
        let peers = string_list(&auth, "peers");
        for (i, peer) in peers.iter().enumerate() {
            if let Some(problem) = peer_problem(peer) {
                report(path.to_vec(), format!("auth: peer {peer:?} {problem}"));
            } else if peers[..i].contains(peer) {
                report(
                    path.to_vec(),
                    format!("auth: peer {peer:?} is listed twice"),
                );
            }
        }
        out.auth = Some(if public {
            if !scopes.is_empty() {
                report(
                    path.to_vec(),
                    format!(
                        "auth: a public method cannot require scopes (found {}); drop `public` or the scopes",
                        scopes.join(", ")
                    ),
                );
            }
            if !peers.is_empty() {
                report(
                    path.to_vec(),
                    "auth: a public method cannot require peers; drop `public` or the peers"
                        .to_owned(),
                );
            }
            Access::Public
        } else if peers.is_empty() {
            Access::Token(scopes)
        } else {
            Access::Peer { peers, scopes }
        });
    }
    if let Some(Value::List(labels)) = block.get_field_by_name("labels").as_deref() {
        for label in labels.iter().filter_map(Value::as_message) {
            let key = string_field(label, "key");
            let value = string_field(label, "value");
            if let Some(problem) = label_name_problem(&key) {
                report(path.to_vec(), format!("labels: {problem}"));
            } else if out.labels.iter().any(|(k, _)| *k == key) {
                report(
                    path.to_vec(),
                    format!("labels: duplicate key {key:?} in the same block"),
                );
            }
            out.labels.push((key, value));
        }
    }
    if let Some(rate_limit) = field_message(block, "rate_limit") {
        out.rate_limit = read_rate_limit(&rate_limit, path, report);
    }
    if let Some(retry) = field_message(block, "retry") {
        out.retry = read_retry(&retry, path, report);
    }
    out.max_concurrency = block
        .get_field_by_name("max_concurrency")
        .and_then(|v| v.as_u32())
        .filter(|n| *n > 0);
    for (name, slot) in [
        ("timeout", &mut out.timeout),
        ("max_timeout", &mut out.max_timeout),
    ] {
        if let Some(duration) = field_message(block, name) {
            match duration_of(&duration) {
                Ok(duration) => *slot = Some(duration),
                Err((seconds, nanos)) => report(
                    path.to_vec(),
                    format!(
                        "{name}: must be a positive duration (seconds: {seconds}, nanos: {nanos})"
                    ),
                ),
            }
        }
    }
    out
}

/// Why `key` cannot be a Keel label name, if it cannot.
pub fn label_name_problem(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => return Some("empty label key".to_owned()),
    };
    if !valid {
        Some(format!(
            "invalid Prometheus label name {key:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"
        ))
    } else if key.starts_with("__") {
        Some(format!(
            "label name {key:?} starts with \"__\", which Prometheus reserves"
        ))
    } else if RESERVED_LABELS.contains(&key) {
        Some(format!(
            "label key {key:?} is reserved by Keel's own metrics ({})",
            RESERVED_LABELS.join(", ")
        ))
    } else {
        None
    }
}

fn field_message(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    let field = message.descriptor().get_field_by_name(name)?;
    if !message.has_field(&field) {
        return None;
    }
    message.get_field(&field).as_message().cloned()
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn string_list(message: &DynamicMessage, name: &str) -> Vec<String> {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Finds the source position of a descriptor path in a file.
pub(crate) struct Locator<'a> {
    pub(crate) file: &'a FileDescriptor,
    pub(crate) paths: &'a HashMap<String, PathBuf>,
}

impl Locator<'_> {
    /// A diagnostic at the innermost recorded location enclosing `path`.
    pub(crate) fn at(&self, path: &[i32], message: String) -> Diagnostic {
        let name = self.file.name();
        let file = self
            .paths
            .get(name)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(name));
        let span = self
            .file
            .file_descriptor_proto()
            .source_code_info
            .as_ref()
            .and_then(|info| {
                info.location
                    .iter()
                    .filter(|loc| path.starts_with(&loc.path))
                    .max_by_key(|loc| loc.path.len())
            })
            .map(|loc| loc.span.clone())
            .unwrap_or_default();
        Diagnostic {
            file,
            line: span.first().map_or(0, |l| *l as usize + 1),
            column: span.get(1).map_or(0, |c| *c as usize + 1),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::label_name_problem;

    #[test]
    fn label_names() {
        assert_eq!(label_name_problem("tier"), None);
        assert_eq!(label_name_problem("_x9"), None);
        assert!(label_name_problem("9x").is_some());
        assert!(label_name_problem("a-b").is_some());
        assert!(label_name_problem("").is_some());
        assert!(label_name_problem("__name").is_some());
        assert!(
            label_name_problem("grpc_code")
                .unwrap()
                .contains("reserved")
        );
    }
}
