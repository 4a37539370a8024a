//! `[rate_limit]`: where the buckets of methods with a `rate_limit` live: in the process (the
//! default), or in Redis, shared by every replica (see `keel_rpc::pipeline`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Secret, Section};

/// Where `rate_limit` buckets are kept (`[rate_limit]`). In the process by default: each
/// replica then admits the declared rate, so three replicas admit three times it. With
/// `backend` set, every bucket is kept in Redis (its GCRA state, one key per bucket, one
/// atomic script call per call of a limited method) and the rate holds for the fleet.
#[derive(Debug, Clone, Section)]
#[config(validate = Self::problems)]
pub struct RateLimitConfig {
    /// Redis for buckets shared by every replica: `redis://HOST[:PORT][/DB]`, or `rediss://`
    /// (TLS, checked as `client.tls` says). No password in the URL: it goes in `password`.
    /// Unset, buckets are the process's own.
    pub backend: Option<String>,
    /// The Redis user (ACL), when the server has users.
    pub username: Option<String>,
    /// The Redis password (`AUTH`).
    pub password: Option<Secret>,
    /// What every bucket's key starts with; the rest is `SERVICE/METHOD` then `:` and, for a
    /// keyed limit, a SHA-256 digest of the key (address, subject or claim).
    #[config(default = "keel:rl:")]
    pub key_prefix: String,
    /// How long a call waits for Redis before `on_backend_error` decides for it.
    #[config(default = "50ms", above = "0s", max = "10s")]
    pub timeout: Duration,
    /// When Redis fails or is slower than `timeout`: `local` (the process's own bucket
    /// decides, as without a backend), `allow` (the call passes) or `deny` (it is refused
    /// `UNAVAILABLE`). After a failure, calls skip Redis for `retry_after`, then one tries it.
    #[config(default = "local")]
    pub on_backend_error: OnBackendError,
    /// How long after a Redis failure calls go straight to `on_backend_error`.
    #[config(default = "1s", above = "0s", max = "1m")]
    pub retry_after: Duration,
}

/// What decides a call when the rate-limit backend cannot (`rate_limit.on_backend_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    /// The process's own bucket, as without a backend (each replica then admits the rate).
    #[default]
    Local,
    /// The call passes.
    Allow,
    /// The call is refused `UNAVAILABLE`.
    Deny,
}

impl RateLimitConfig {
    fn problems(&self, problems: &mut super::Problems<'_>) {
        if let Some(backend) = &self.backend
            && let Some(problem) = backend_problem(backend)
        {
            problems.push("backend", problem);
        }
        if self.key_prefix.len() > 64 {
            problems.push("key_prefix", "must be at most 64 bytes".to_owned());
        }
    }

    /// Whether calls go over TLS to the backend.
    pub fn tls(&self) -> bool {
        self.backend
            .as_deref()
            .is_some_and(|b| b.starts_with("rediss://"))
    }
}

/// What is wrong with a backend URL, if anything.
fn backend_problem(backend: &str) -> Option<String> {
    let Some((scheme, rest)) = backend.split_once("://") else {
        return Some("must be a redis:// or rediss:// URL (like redis://127.0.0.1:6379)".into());
    };
    if scheme != "redis" && scheme != "rediss" {
        return Some(format!(
            "must start with redis:// or rediss://, not {scheme}:// (like redis://127.0.0.1:6379)"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        // Never echo it: the user info may hold a password.
        return Some(
            "must not carry a user or password: set rate_limit.username and rate_limit.password"
                .into(),
        );
    }
    if authority.is_empty() {
        return Some("has no host".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::backend_problem;

    #[test]
    fn backends_are_redis_urls_without_credentials() {
        assert_eq!(backend_problem("redis://127.0.0.1:6379"), None);
        assert_eq!(backend_problem("rediss://cache.internal:6380/2"), None);
        let problem = backend_problem("redis://:hunter2@cache:6379").expect("refused");
        assert!(!problem.contains("hunter2"), "{problem}");
        assert!(backend_problem("http://cache:6379").is_some());
        assert!(backend_problem("redis://").is_some());
        assert!(backend_problem("cache:6379").is_some());
    }
}
