//! Reads one annotation block (`keel.v1.ServiceOptions` /
//! `keel.v1.MethodOptions`) from a service's or method's options as
//! prost-reflect holds them, checking each value as it is read.

use std::time::Duration;

use prost_reflect::{DynamicMessage, ExtensionDescriptor, ReflectMessage, Value};

use super::check::{label_name_problem, peer_problem};
use super::{Access, CODE_NAMES, Criticality, MIN_PER_SECOND, RateKey, RateLimit, RetryPolicy};
use crate::error::closest;
use crate::locate::Step;

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
    pub(super) max_stream_duration: Option<Duration>,
    pub(super) stream_idle_timeout: Option<Duration>,
    pub(super) max_stream_messages: Option<u64>,
    pub(super) criticality: Option<Criticality>,
}

/// Reads and checks a `keel.v1.RetryPolicy` block.
fn read_retry(
    block: &DynamicMessage,
    report: &mut impl FnMut(&[Step<'_>], String),
) -> Option<RetryPolicy> {
    // Each problem at the field of `retry` it is about.
    let mut problem = |field: Step<'_>, message: String| {
        report(&[("retry", 0), field], format!("retry: {message}"))
    };
    let max_attempts = block
        .get_field_by_name("max_attempts")
        .and_then(|v| v.as_u32())
        .unwrap_or(0);
    let mut ok = true;
    if !(2..=5).contains(&max_attempts) {
        problem(
            ("max_attempts", 0),
            format!(
                "max_attempts must be 2 to 5, the first attempt included (found {max_attempts})"
            ),
        );
        ok = false;
    }
    let mut backoff = |name: &str| match field_message(block, name).map(|d| duration_of(&d)) {
        Some(Ok(duration)) => Some(duration),
        Some(Err((seconds, nanos))) => {
            problem(
                (name, 0),
                format!("{name} must be a positive duration (seconds: {seconds}, nanos: {nanos})"),
            );
            None
        }
        None => {
            problem((name, 0), format!("{name} is required"));
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
        problem(
            ("backoff_multiplier", 0),
            format!("backoff_multiplier must be positive (found {backoff_multiplier})"),
        );
        ok = false;
    }
    let retryable_codes = string_list(block, "retryable_codes");
    if retryable_codes.is_empty() {
        problem(
            ("retryable_codes", 0),
            "retryable_codes must name at least one code (such as \"UNAVAILABLE\")".to_owned(),
        );
        ok = false;
    }
    for (i, code) in retryable_codes.iter().enumerate() {
        if !CODE_NAMES.contains(&code.as_str()) {
            problem(
                ("retryable_codes", i),
                format!(
                    "retryable_codes: {code:?} is not a status code that can be retried ({}){}",
                    CODE_NAMES.join(", "),
                    closest(code, CODE_NAMES)
                        .map(|name| format!("; did you mean {name:?}?"))
                        .unwrap_or_default()
                ),
            );
            ok = false;
        }
    }
    let (initial_backoff, max_backoff) = (initial_backoff?, max_backoff?);
    if max_backoff < initial_backoff {
        problem(
            ("max_backoff", 0),
            format!(
                "max_backoff ({max_backoff:?}) is shorter than initial_backoff ({initial_backoff:?})"
            ),
        );
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
    report: &mut impl FnMut(&[Step<'_>], String),
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
                    &[("rate_limit", 0), ("key", 0)],
                    format!(
                        "rate_limit: key {other:?} is not one of \"global\", \"peer\", \
                         \"subject\" or \"claim:<name>\"{}",
                        rate_key_suggestion(other)
                            .map(|key| format!("; did you mean {key:?}?"))
                            .unwrap_or_default()
                    ),
                );
                None
            }
        },
    };
    if !(per_second.is_finite() && per_second >= MIN_PER_SECOND) {
        report(
            &[("rate_limit", 0), ("per_second", 0)],
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
///
/// Each problem is reported with the field of the block it is about.
pub(super) fn read_block(
    options: &DynamicMessage,
    ext: Option<&ExtensionDescriptor>,
    report: &mut impl FnMut(&[Step<'_>], String),
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
        for (i, scope) in scopes.iter().enumerate() {
            let at = [("auth", 0), ("scopes", i)];
            if scope.is_empty() {
                report(&at, "auth: empty scope".to_owned());
            } else if scope.chars().any(char::is_whitespace) {
                report(&at, format!("auth: scope {scope:?} contains whitespace"));
            }
        }
        let peers = string_list(&auth, "peers");
        for (i, peer) in peers.iter().enumerate() {
            let at = [("auth", 0), ("peers", i)];
            if let Some(problem) = peer_problem(peer) {
                report(&at, format!("auth: peer {peer:?} {problem}"));
            } else if peers[..i].contains(peer) {
                report(&at, format!("auth: peer {peer:?} is listed twice"));
            }
        }
        out.auth = Some(if public {
            if !scopes.is_empty() {
                report(
                    &[("auth", 0), ("scopes", 0)],
                    format!(
                        "auth: a public method cannot require scopes (found {}); drop `public` or the scopes",
                        scopes.join(", ")
                    ),
                );
            }
            if !peers.is_empty() {
                report(
                    &[("auth", 0), ("peers", 0)],
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
        for (i, label) in labels.iter().filter_map(Value::as_message).enumerate() {
            let key = string_field(label, "key");
            let value = string_field(label, "value");
            let at = [("labels", i), ("key", 0)];
            if let Some(problem) = label_name_problem(&key) {
                report(&at, format!("labels: {problem}"));
            } else if out.labels.iter().any(|(k, _)| *k == key) {
                report(
                    &at,
                    format!("labels: duplicate key {key:?} in the same block"),
                );
            }
            out.labels.push((key, value));
        }
    }
    if let Some(rate_limit) = field_message(block, "rate_limit") {
        out.rate_limit = read_rate_limit(&rate_limit, report);
    }
    if let Some(retry) = field_message(block, "retry") {
        out.retry = read_retry(&retry, report);
    }
    out.max_concurrency = block
        .get_field_by_name("max_concurrency")
        .and_then(|v| v.as_u32())
        .filter(|n| *n > 0);
    out.criticality = block
        .get_field_by_name("criticality")
        .and_then(|v| v.as_enum_number())
        .and_then(Criticality::from_number);
    out.max_stream_messages = block
        .get_field_by_name("max_stream_messages")
        .and_then(|v| v.as_u64())
        .filter(|n| *n > 0);
    for (name, slot) in [
        ("timeout", &mut out.timeout),
        ("max_timeout", &mut out.max_timeout),
        ("max_stream_duration", &mut out.max_stream_duration),
        ("stream_idle_timeout", &mut out.stream_idle_timeout),
    ] {
        if let Some(duration) = field_message(block, name) {
            match duration_of(&duration) {
                Ok(duration) => *slot = Some(duration),
                Err((seconds, nanos)) => report(
                    &[(name, 0)],
                    format!(
                        "{name}: must be a positive duration (seconds: {seconds}, nanos: {nanos})"
                    ),
                ),
            }
        }
    }
    out
}

/// The key meant by a rate limit's `key` that is none, when one is close:
/// a named key, or `claim:` misspelt before a claim's name.
fn rate_key_suggestion(key: &str) -> Option<String> {
    match key.split_once(':') {
        Some((prefix, name)) if !name.is_empty() && prefix != "claim" => {
            closest(prefix, ["claim"]).map(|_| format!("claim:{name}"))
        }
        Some(_) => None,
        None => closest(key, ["global", "peer", "subject"]).map(str::to_owned),
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
