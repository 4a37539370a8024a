//! `cargo xtask policy [--format json]`: every method of the workspace's
//! services with its resolved rules (who may call it, its labels, its
//! validation, deadline, concurrency and rate limits), the table a security review asks for.
//! `cargo xtask gen` keeps a copy in `POLICY.md`, so a change that opens a
//! method shows in its diff (and `gen --check` fails when it is stale).

use std::fmt::Write as _;

use anyhow::{Result, bail};
use keel_rpc_codegen::{
    Access, MethodSpec, RateKey, RateLimit, RetryPolicy, ServiceSpec, StreamLimits,
};

/// The file `cargo xtask gen` writes the table to.
pub const FILE: &str = "POLICY.md";

pub fn run(args: &[&str]) -> Result<()> {
    let json = match args {
        [] | ["--format", "table"] => false,
        ["--format", "json"] => true,
        _ => bail!("usage: cargo xtask policy [--format table|json]"),
    };
    let policies = crate::codegen::policies()?;
    match json {
        true => println!("{}", self::json(&policies)),
        false => print!("{}", table(&policies)),
    }
    Ok(())
}

fn kind(method: &MethodSpec) -> &'static str {
    match (method.client_streaming, method.server_streaming) {
        (false, false) => "unary",
        (true, false) => "client stream",
        (false, true) => "server stream",
        (true, true) => "bidi stream",
    }
}

fn auth(access: &Access) -> String {
    let scopes = |scopes: &[String]| match scopes.is_empty() {
        true => "token".to_owned(),
        false => format!("token with {}", scopes.join(", ")),
    };
    match access {
        Access::Public => "**public**".to_owned(),
        Access::Token(list) => scopes(list),
        Access::Peer {
            peers,
            scopes: list,
        } if list.is_empty() => format!("peer {}", peers.join(" or ")),
        Access::Peer {
            peers,
            scopes: list,
        } => format!("peer {} and {}", peers.join(" or "), scopes(list)),
    }
}

/// A retry policy as the table shows it: `3 on UNAVAILABLE, 100ms..1s ×2`.
fn retry(policy: Option<&RetryPolicy>) -> String {
    policy.map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "{} on {}, {:?}..{:?} ×{}",
                p.max_attempts,
                p.retryable_codes.join(" "),
                p.initial_backoff,
                p.max_backoff,
                p.backoff_multiplier
            )
        },
    )
}

/// A rate limit as the table shows it: `5/s, burst 10, per peer`.
fn rate_limit(limit: Option<&RateLimit>) -> String {
    let Some(limit) = limit else {
        return "-".to_owned();
    };
    let key = match &limit.key {
        RateKey::Global => String::new(),
        key => format!(", per {}", key.to_annotation()),
    };
    format!("{}/s, burst {}{key}", limit.per_second, limit.burst)
}

/// Stream limits as the table shows them: `5m long, 30s idle, 1000 msgs`.
fn stream_limits(limits: &StreamLimits) -> String {
    let parts: Vec<String> = [
        limits.max_duration.map(|d| format!("{d:?} long")),
        limits.idle_timeout.map(|d| format!("{d:?} idle")),
        limits.max_messages.map(|n| format!("{n} msgs")),
    ]
    .into_iter()
    .flatten()
    .collect();
    match parts.is_empty() {
        true => "-".to_owned(),
        false => parts.join(", "),
    }
}

fn duration(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{d:?}"))
}

/// The Markdown table: one row per method, services in the order of
/// `cargo xtask gen`'s targets.
pub fn table(services: &[(&str, Vec<ServiceSpec>)]) -> String {
    let mut out = String::from(
        "# Method policies\n\n\
         Every method of the workspace's services with its resolved annotations, method over service.\n\
         Written by `cargo xtask gen` (checked by `cargo xtask gen --check`); `cargo xtask policy --format json`\n\
         prints the same as JSON.\n\n\
         | service | method | kind | auth | labels | validated | timeout | max timeout | max concurrency | criticality | rate limit | stream limits | client retry | own options | HTTP routes | proto |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (proto, specs) in services {
        for service in specs {
            for m in &service.methods {
                let labels: Vec<String> =
                    m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | `{proto}` |",
                    service.full_name,
                    m.name,
                    kind(m),
                    auth(&m.access),
                    labels.join(", "),
                    if m.validated { "yes" } else { "-" },
                    duration(m.timeout),
                    duration(m.max_timeout),
                    m.max_concurrency
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    m.criticality.as_str(),
                    rate_limit(m.rate_limit.as_ref()),
                    stream_limits(&m.stream),
                    retry(m.retry.as_ref()),
                    m.options
                        .iter()
                        .map(|(name, _)| format!("({name})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.http
                        .iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
    }
    out
}

/// The same as JSON: a list of methods.
fn json(services: &[(&str, Vec<ServiceSpec>)]) -> String {
    let mut methods = Vec::new();
    for (proto, specs) in services {
        for service in specs {
            for m in &service.methods {
                let access = match &m.access {
                    Access::Public => serde_json::json!({ "public": true }),
                    Access::Token(scopes) => serde_json::json!({ "scopes": scopes }),
                    Access::Peer { peers, scopes } => {
                        serde_json::json!({ "peers": peers, "scopes": scopes })
                    }
                };
                methods.push(serde_json::json!({
                    "service": service.full_name,
                    "method": m.name,
                    "path": format!("/{}/{}", service.full_name, m.name),
                    "kind": kind(m),
                    "auth": access,
                    "labels": m.labels,
                    "validated": m.validated,
                    "timeout_ms": m.timeout.map(|d| d.as_millis() as u64),
                    "max_timeout_ms": m.max_timeout.map(|d| d.as_millis() as u64),
                    "max_concurrency": m.max_concurrency,
                    "criticality": m.criticality.as_str(),
                    "rate_limit": m.rate_limit.as_ref().map(|r| serde_json::json!({
                        "per_second": r.per_second,
                        "burst": r.burst,
                        "key": r.key.to_annotation(),
                    })),
                    "stream": serde_json::json!({
                        "max_duration_ms": m.stream.max_duration.map(|d| d.as_millis() as u64),
                        "idle_timeout_ms": m.stream.idle_timeout.map(|d| d.as_millis() as u64),
                        "max_messages": m.stream.max_messages,
                    }),
                    "retry": m.retry.as_ref().map(|r| serde_json::json!({
                        "max_attempts": r.max_attempts,
                        "initial_backoff_ms": r.initial_backoff.as_millis() as u64,
                        "max_backoff_ms": r.max_backoff.as_millis() as u64,
                        "backoff_multiplier": r.backoff_multiplier,
                        "retryable_codes": r.retryable_codes,
                    })),
                    "options": m.options.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                    "http": m.http.iter().map(|r| serde_json::json!({
                        "method": r.method,
                        "path": r.path.to_string(),
                        "body": r.body,
                        "response_body": r.response_body,
                    })).collect::<Vec<_>>(),
                    "proto": proto,
                }));
            }
        }
    }
    serde_json::to_string_pretty(&methods).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use keel_rpc_codegen::Criticality;

    use super::*;

    fn method(name: &str, access: Access) -> MethodSpec {
        MethodSpec {
            name: name.to_owned(),
            client_streaming: false,
            server_streaming: true,
            access,
            labels: [("team".to_owned(), "core".to_owned())].into(),
            timeout: Some(std::time::Duration::from_millis(1500)),
            max_timeout: None,
            max_concurrency: Some(8),
            rate_limit: None,
            retry: None,
            stream: StreamLimits::default(),
            criticality: Criticality::default(),
            options: Vec::new(),
            validated: true,
            http: Vec::new(),
            input: "t.v1.Req".to_owned(),
            output: "t.v1.Res".to_owned(),
        }
    }

    #[test]
    fn a_row_per_method_says_who_may_call_it() {
        let service = ServiceSpec {
            full_name: "t.v1.S".to_owned(),
            methods: vec![
                method("Open", Access::Public),
                MethodSpec {
                    rate_limit: Some(RateLimit {
                        per_second: 0.5,
                        burst: 3,
                        key: RateKey::Claim("tenant".into()),
                    }),
                    retry: Some(RetryPolicy::idempotent_default()),
                    options: vec![("t.v1.audit".into(), vec![10, 1, b'x'])],
                    stream: StreamLimits {
                        idle_timeout: Some(std::time::Duration::from_secs(30)),
                        ..StreamLimits::default()
                    },
                    criticality: Criticality::Sheddable,
                    ..method("Read", Access::Token(vec!["r".into()]))
                },
                method(
                    "Internal",
                    Access::Peer {
                        peers: vec!["dns:a.example".into()],
                        scopes: vec![],
                    },
                ),
            ],
        };
        let table = table(&[("t.proto", vec![service.clone()])]);
        for row in [
            "| t.v1.S | Open | server stream | **public** | team=core | yes | 1.5s | - | 8 | CRITICAL | - | - | - |  |  | `t.proto` |",
            "| t.v1.S | Read | server stream | token with r | team=core | yes | 1.5s | - | 8 | SHEDDABLE | 0.5/s, burst 3, per claim:tenant | 30s idle | 3 on UNAVAILABLE, 100ms..1s ×2 | (t.v1.audit) |  | `t.proto` |",
            "| t.v1.S | Internal | server stream | peer dns:a.example |",
        ] {
            assert!(table.contains(row), "{row} in:\n{table}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&json(&[("t.proto", vec![service])])).unwrap();
        assert_eq!(json[0]["auth"]["public"], true);
        assert_eq!(json[1]["auth"]["scopes"][0], "r");
        assert_eq!(json[2]["path"], "/t.v1.S/Internal");
        assert_eq!(json[0]["timeout_ms"], 1500);
        assert_eq!(json[0]["validated"], true);
        assert_eq!(json[0]["rate_limit"], serde_json::Value::Null);
        assert_eq!(json[1]["rate_limit"]["key"], "claim:tenant");
        assert_eq!(json[1]["retry"]["retryable_codes"][0], "UNAVAILABLE");
        assert_eq!(json[1]["options"][0], "t.v1.audit");
        assert_eq!(json[1]["stream"]["idle_timeout_ms"], 30_000);
        assert_eq!(json[1]["criticality"], "SHEDDABLE");
        assert_eq!(json[0]["stream"]["max_messages"], serde_json::Value::Null);
    }
}
