//! [`RedisBuckets`]: the buckets of `rate_limit` methods kept in Redis
//! (`[rate_limit] backend`), so that every replica draws on the same ones.
//!
//! Each bucket is one Redis key holding its GCRA state, the theoretical
//! arrival time in microseconds (on the Redis server's clock, so replicas'
//! clocks do not matter), set by one Lua script per call: one round trip,
//! atomic. The key expires when the bucket would be full again, so a
//! caller rotating subjects leaves nothing behind once it stops.
//!
//! Key layout: `{key_prefix}{package.Service}/{Method}` for a global
//! limit, then `:` and the first 16 bytes of the SHA-256 of the key, in
//! hex, for a keyed one (the address as text, the subject, or the claim's
//! value; nothing when the call has none): no caller's data in Redis, and
//! no key longer than ~100 bytes.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use crate::clock;
use crate::config::{ClientTlsConfig, OnBackendError, RateLimitConfig};

/// GCRA, as go-redis's redis_rate: admits a call when the bucket's
/// theoretical arrival time, advanced by one emission interval, is within
/// `burst` intervals of now. `KEYS[1]`: the bucket; `ARGV[1]`: the
/// emission interval in microseconds; `ARGV[2]`: the burst. Returns
/// `{1, 0}` when admitted, `{0, µs until one would be}` when not. Times
/// are integers of microseconds written with `%.0f`: Lua's own number
/// formatting keeps 14 digits, and these have 16.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call("GET", KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
local allow_at = next - interval * burst
if allow_at > now then
  return {0, allow_at - now}
end
redis.call("SET", KEYS[1], string.format("%.0f", next), "PX", math.ceil((next - now) / 1000))
return {1, 0}
"#;

/// Why the rate-limit backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RateBackendError {
    /// The URL or the TLS files were refused by the Redis client.
    #[error("rate_limit.backend: {0}")]
    Client(String),
}

/// What Redis said of one call.
pub(super) enum Taken {
    Admitted,
    /// Refused: the bucket has a call's room again after this long.
    Refused(Duration),
}

/// The Redis backend of a process's rate limits; see the module docs.
pub(crate) struct RedisBuckets {
    client: redis::Client,
    /// Made on first use, inside the runtime; it reconnects by itself.
    manager: OnceLock<Result<ConnectionManager, String>>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    pub(super) on_error: OnBackendError,
    retry_after: Duration,
    /// Until when calls skip Redis, after a failure (ns on the call clock).
    down_until: AtomicU64,
    /// Whether the last attempt failed (for logging the recovery once).
    down: AtomicBool,
    base: quanta::Instant,
    /// `keel_rate_limit_backend_errors_total`.
    errors: IntCounter,
}

impl std::fmt::Debug for RedisBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBuckets")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl RedisBuckets {
    /// The backend `config` names, if any.
    pub(crate) fn new(
        config: &RateLimitConfig,
        tls: &ClientTlsConfig,
        errors: IntCounter,
    ) -> Result<Option<Self>, RateBackendError> {
        let Some(client) = backend_client(config, tls)? else {
            return Ok(None);
        };
        Ok(Some(RedisBuckets {
            client,
            manager: OnceLock::new(),
            script: redis::Script::new(GCRA),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            on_error: config.on_backend_error,
            retry_after: config.retry_after,
            down_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            base: clock::now(),
            errors,
        }))
    }

    /// The key of a method's bucket: `path` is the method's
    /// (`/pkg.Service/Method`), `key` the call's, for a keyed limit.
    pub(super) fn key(&self, path: &str, key: Option<&[u8]>) -> String {
        backend_key(&self.prefix, path.strip_prefix('/').unwrap_or(path), key)
    }

    /// Takes a call's room in bucket `key`, of a limit of one call per
    /// `interval` and bursts of `burst`; `Err` when Redis did not answer
    /// in `rate_limit.timeout` (or failed lately).
    pub(super) async fn take(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Taken, ()> {
        let now = self.now_ns();
        if now < self.down_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let manager = self.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
                .set_max_delay(Duration::from_secs(2));
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.to_string())
        });
        let mut manager = match manager {
            Ok(manager) => manager.clone(),
            Err(error) => {
                self.failed(error);
                return Err(());
            }
        };
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(interval_us).arg(burst);
        let answer = invocation.invoke_async::<(i64, i64)>(&mut manager);
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok((admitted, wait_us))) => {
                self.recovered();
                Ok(match admitted {
                    1 => Taken::Admitted,
                    _ => Taken::Refused(Duration::from_micros(wait_us.max(1) as u64)),
                })
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                Err(())
            }
            Err(_) => {
                self.failed("no answer within rate_limit.timeout");
                Err(())
            }
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(clock::since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a failure, and has calls skip Redis for `retry_after`;
    /// logged once per outage.
    fn failed(&self, why: &str) {
        self.errors.inc();
        let retry_after = u64::try_from(self.retry_after.as_nanos()).unwrap_or(u64::MAX);
        let until = self.now_ns().saturating_add(retry_after);
        self.down_until.fetch_max(until, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                on_backend_error = ?self.on_error,
                "the rate-limit backend failed; rate_limit.on_backend_error decides calls until it answers again"
            );
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the rate-limit backend answers again");
        }
    }
}

/// A client of the Redis that `config` names (`[rate_limit] backend`), if
/// any: its URL with `username` and `password`, and for `rediss://` the CAs
/// and certificate of `[client.tls]`. No connection is made yet. What the
/// rate limits' buckets use, and what a service may use to keep other
/// fleet-wide state in the same Redis (the auth service's failed logins).
///
/// ```
/// # fn run() -> Result<(), keel_rpc::pipeline::RateBackendError> {
/// let config = keel_rpc::config::Config::<()>::default();
/// let client = keel_rpc::pipeline::backend_client(&config.rate_limit, &config.client.tls)?;
/// assert!(client.is_none(), "no backend by default");
/// # Ok(()) }
/// ```
pub fn backend_client(
    config: &RateLimitConfig,
    tls: &ClientTlsConfig,
) -> Result<Option<redis::Client>, RateBackendError> {
    let Some(backend) = &config.backend else {
        return Ok(None);
    };
    let mut info: redis::ConnectionInfo = backend
        .as_str()
        .parse()
        .map_err(|e: redis::RedisError| RateBackendError::Client(e.to_string()))?;
    let mut settings = info.redis_settings().clone();
    if let Some(username) = &config.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let client = match config.tls() {
        false => redis::Client::open(info),
        true => redis::Client::build_with_tls(info, certificates(tls)?),
    }
    .map_err(|e| RateBackendError::Client(e.to_string()))?;
    Ok(Some(client))
}

/// A key in the rate-limit backend: `{prefix}{name}`, then for a keyed
/// entry `:` and the first 16 bytes of the SHA-256 of `key` in hex (so that
/// no caller's key reaches Redis as it is, and every key has one length).
/// The layout of the buckets' keys, and of other fleet-wide state kept in
/// the same Redis (the auth service's failed logins).
///
/// ```
/// let key = keel_rpc::pipeline::backend_key("keel:rl:", "login:username", Some(b"ada"));
/// assert!(key.starts_with("keel:rl:login:username:"));
/// assert_eq!(key.len(), "keel:rl:login:username:".len() + 32);
/// ```
pub fn backend_key(prefix: &str, name: &str, key: Option<&[u8]>) -> String {
    match key {
        None => format!("{prefix}{name}"),
        Some(key) => {
            let digest = Sha256::digest(key);
            let mut text = format!("{prefix}{name}:");
            for byte in &digest[..16] {
                let _ = write!(text, "{byte:02x}");
            }
            text
        }
    }
}

/// The CAs and client certificate of `[client.tls]`, for `rediss://`.
fn certificates(tls: &ClientTlsConfig) -> Result<redis::TlsCertificates, RateBackendError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| RateBackendError::Client(format!("reading {}: {e}", path.display())))
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}
