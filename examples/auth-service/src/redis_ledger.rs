//! [`RedisLedger`]: the throttle's failed logins in Redis, when the auth
//! service's `[rate_limit] backend` names one (the Redis its replicas already
//! share for their rate limits); else they are counted in the store.
//!
//! Each key is one hash, `{rate_limit.key_prefix}login:{scope}:{digest}`
//! (the digest: the first 16 bytes of the SHA-256 of the username or
//! address, in hex, so that no username reaches Redis as it is), with the
//! fields `c` (`clear_at`, Unix milliseconds) and `f` (failures). A failure
//! updates it in one script call, atomic whoever else counts failures for it,
//! and sets it to expire at `clear_at`: once its failures no longer count it
//! is gone, so there is nothing to sweep.

use std::time::Duration;

use keel_rpc::config::{ClientTlsConfig, RateLimitConfig};
use keel_rpc::pipeline::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use keel_rpc::pipeline::{RateBackendError, redis};

use crate::throttle::{FailureKey, FailureLedger, LedgerError, Standing};

/// Counts one failure of `KEYS[1]` at `ARGV[1]` (ms) with `ARGV[2]` (ms)
/// per failure; returns `{clear_at, failures}`.
const RECORD: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'c', 'f')
local clear_at = tonumber(held[1])
local failures = tonumber(held[2])
if clear_at and clear_at > now then
  clear_at = clear_at + interval
  failures = (failures or 0) + 1
else
  clear_at = now + interval
  failures = 1
end
redis.call('HSET', KEYS[1], 'c', string.format('%.0f', clear_at), 'f', failures)
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', clear_at))
return {clear_at, failures}
";

/// The failed logins of every replica, in Redis; see the module docs.
pub struct RedisLedger {
    manager: ConnectionManager,
    record: redis::Script,
    prefix: String,
    /// `rate_limit.timeout`, at least 250 ms: a login is not a hot path,
    /// and a throttle that cannot answer refuses it.
    timeout: Duration,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// The ledger in the Redis of `config`'s `backend`, if it names one.
    pub fn new(
        config: &RateLimitConfig,
        tls: &ClientTlsConfig,
    ) -> Result<Option<Self>, RateBackendError> {
        let Some(client) = keel_rpc::pipeline::backend_client(config, tls)? else {
            return Ok(None);
        };
        let timeout = config.timeout.max(Duration::from_millis(250));
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, settings)
            .map_err(|e| RateBackendError::Client(e.to_string()))?;
        Ok(Some(RedisLedger {
            manager,
            record: redis::Script::new(RECORD),
            prefix: config.key_prefix.clone(),
            timeout,
        }))
    }

    fn key(&self, key: &FailureKey<'_>) -> String {
        let name = format!("login:{}", key.scope.as_str());
        keel_rpc::pipeline::backend_key(&self.prefix, &name, Some(key.target.as_bytes()))
    }

    /// `query`, failing after [`timeout`](Self::timeout).
    async fn within<T>(
        &self,
        query: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LedgerError> {
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(LedgerError::Backend(error.to_string())),
            Err(_) => Err(LedgerError::Backend(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[tonic::async_trait]
impl FailureLedger for RedisLedger {
    async fn standings(
        &self,
        keys: &[FailureKey<'_>],
        now: i64,
    ) -> Result<Vec<Option<Standing>>, LedgerError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(self.key(key)).arg("c").arg("f");
        }
        let mut manager = self.manager.clone();
        let held: Vec<(Option<i64>, Option<i64>)> =
            self.within(pipe.query_async(&mut manager)).await?;
        Ok(held
            .into_iter()
            .map(|(clear_at, failures)| match clear_at {
                Some(clear_at) if clear_at > now => Some(Standing {
                    clear_at,
                    failures: failures.unwrap_or(0),
                }),
                _ => None,
            })
            .collect())
    }

    async fn record(
        &self,
        failures: &[(FailureKey<'_>, i64)],
        now: i64,
    ) -> Result<Vec<Standing>, LedgerError> {
        let mut standings = Vec::with_capacity(failures.len());
        for (key, interval) in failures {
            let mut invocation = self.record.key(self.key(key));
            invocation.arg(now).arg(*interval);
            let mut manager = self.manager.clone();
            let (clear_at, failures): (i64, i64) =
                self.within(invocation.invoke_async(&mut manager)).await?;
            standings.push(Standing { clear_at, failures });
        }
        Ok(standings)
    }

    /// Nothing to do: each key expires when its failures stop counting.
    async fn sweep(&self, _now: i64) -> Result<u64, LedgerError> {
        Ok(0)
    }
}
