//! Reads one annotation block (`keel.v1.ServiceOptions` /
//! `keel.v1.MethodOptions`) from a service's or method's options as
//! prost-reflect holds them, checking each value as it is read.

use std::time::Duration;

use prost_reflect::{DynamicMessage, ExtensionDescriptor, ReflectMessage, Value};

use super::check::{label_name_problem, peer_problem};
use super::{Access, CODE_NAMES, MIN_PER_SECOND, RateKey, RateLimit, RetryPolicy};

/// One annotation block (service or method level) as written.
#[derive(Default)]
pub(super) struct Block {
    pub(super) auth: Option<Access>,
    pub(super) labels: Vec<(String, String)>,
    pub(super) timeout: Option<Duration>,
    pub(super) max_timeout: Option<Duration>,
    pub(super) max_concurrency: Option<u32>,
    pub(super) rate_limit: Option<RateLimit>,
    pub(super) retry: Option<RetryPolicy>,
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

/// Reads and checks one `keel.v1.ServiceOptions` / `keel.v1.MethodOptions` block.
pub(super) fn read_block(
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
