//! The checks of what the readers found that are not about one value as
//! written: a retry policy on a streaming method, a timeout over its cap,
//! a rate limit keyed by a token the method does not read, and the rules of
//! workload identities and label names.

use prost_reflect::MethodDescriptor;

use super::read::Block;
use super::{Access, MethodSpec, RESERVED_LABELS, RateKey, RateLimit};

/// Why a method's own block cannot have a `retry`, if it cannot: streaming
/// calls are not retried.
pub(super) fn streaming_retry(method: &MethodDescriptor, block: &Block) -> Option<String> {
    (block.retry.is_some() && (method.is_client_streaming() || method.is_server_streaming())).then(
        || {
            "retry: streaming calls are not retried; only a unary method may have a retry policy"
                .to_owned()
        },
    )
}

/// Why a method's own block cannot have one of the stream limits, if it
/// cannot: the field, and the reason. A unary call is bounded by its
/// deadline; `max_stream_messages` counts what a client streams.
pub(super) fn stream_limit_problem(
    method: &MethodDescriptor,
    block: &Block,
) -> Option<(&'static str, String)> {
    let streams = method.is_client_streaming() || method.is_server_streaming();
    for (name, set) in [
        ("max_stream_duration", block.max_stream_duration.is_some()),
        ("stream_idle_timeout", block.stream_idle_timeout.is_some()),
    ] {
        if set && !streams {
            return Some((
                name,
                format!(
                    "{name}: only a streaming method has streams to limit; a unary call is bounded by its timeout"
                ),
            ));
        }
    }
    if block.max_stream_messages.is_some() && !method.is_client_streaming() {
        return Some((
            "max_stream_messages",
            "max_stream_messages: counts the messages a client streams; only a client or bidi streaming method has them".to_owned(),
        ));
    }
    None
}

/// Why a method's `timeout` cannot apply, if it cannot: it is longer than
/// its `max_timeout`.
pub(super) fn timeout_problem(spec: &MethodSpec) -> Option<String> {
    if let (Some(timeout), Some(max)) = (spec.timeout, spec.max_timeout)
        && timeout > max
    {
        return Some(format!(
            "timeout ({timeout:?}) is longer than max_timeout ({max:?}), \
             with the service's defaults applied"
        ));
    }
    None
}

/// Why a rate limit's key cannot apply to a method with `access`, if it
/// cannot: a key from the token needs a method that reads one.
pub(super) fn key_problem(rate_limit: &RateLimit, access: &Access) -> Option<String> {
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

/// What is wrong with a workload identity of `auth.peers`, if anything: it must be `dns:` and a
/// DNS name, or an absolute URI with an authority (`spiffe://trust-domain/path`), as a
/// certificate's SAN would carry it.
pub(super) fn peer_problem(peer: &str) -> Option<&'static str> {
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

/// Why `key` cannot be a Keel label name, if it cannot.
pub(super) fn label_name_problem(key: &str) -> Option<String> {
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
