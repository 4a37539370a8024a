//! The pipeline's rate-limit step, for methods whose policy sets
//! `rate_limit`: a call that finds its bucket empty is answered
//! `RESOURCE_EXHAUSTED`, with a `google.rpc.RetryInfo` detail saying when a
//! call would pass, before the handler runs; it is counted in
//! `keel_server_rate_limited_total`. Buckets follow governor's GCRA; those
//! of a keyed method are bounded ([`Buckets`]). Other methods pay one branch.
//!
//! With `[rate_limit] backend`, the buckets are Redis's ([`RedisBuckets`]),
//! shared by every replica: admitting a call is then a round trip, so the
//! step answers with a future the pipeline awaits before the rest of the
//! call (`rate_limit.on_backend_error` decides when Redis cannot).

mod buckets;
mod redis;

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use governor::clock::{Clock, QuantaClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use prometheus::IntCounter;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Caller;
use crate::config::OnBackendError;
use crate::policy::{MethodPolicy, RateKey, RateLimit, ServicePolicy};
use buckets::Buckets;
pub(crate) use redis::RedisBuckets;
use redis::Taken;
pub use redis::{RateBackendError, backend_client, backend_key};

/// The most buckets a keyed method keeps.
const KEYS_PER_METHOD: usize = 65_536;

/// The rate limits of a service's methods.
#[derive(Debug)]
pub(super) struct RateLimits {
    /// By method index; `None` for methods without a limit.
    methods: Box<[Option<Arc<Limiter>>]>,
}

/// What the rate-limit step says of a call.
pub(super) enum Admission {
    Admitted,
    /// Ask the shared buckets: the call goes on when this says so.
    Ask(Asking),
}

/// A call's admission by the shared buckets, under way.
pub(super) type Asking = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// One method's buckets.
#[derive(Debug)]
struct Limiter {
    limit: RateLimit,
    /// The process's own: the buckets, or what decides when Redis cannot.
    buckets: Keyed,
    /// The fleet's, when `[rate_limit] backend` is set.
    shared: Option<Arc<RedisBuckets>>,
    /// `keel_server_rate_limited_total` of the method.
    refused: IntCounter,
}

#[derive(Debug)]
enum Keyed {
    /// One bucket, lock-free.
    Global(RateLimiter<NotKeyed, InMemoryState, QuantaClock>),
    /// A bucket per key hash.
    By {
        limiter: RateLimiter<u64, Buckets, QuantaClock>,
        hasher: RandomState,
    },
}

impl RateLimits {
    /// The limits of `policy`'s methods; `refused` has, by method index,
    /// each limited method's counter; `shared`, the fleet's buckets if any.
    pub(super) fn new(
        policy: &ServicePolicy,
        refused: Box<[Option<IntCounter>]>,
        shared: Option<&Arc<RedisBuckets>>,
    ) -> Self {
        let methods = (policy.methods.iter().zip(refused))
            .map(|(method, refused)| {
                let limit = method.rate_limit?;
                Some(Arc::new(Limiter {
                    buckets: Keyed::new(&limit),
                    limit,
                    shared: shared.cloned(),
                    refused: refused?,
                }))
            })
            .collect();
        RateLimits { methods }
    }

    /// Takes a call's share of its bucket, or answers why not. `extensions`
    /// are the request's, after the auth step (the caller's address and
    /// claims).
    #[inline]
    pub(super) fn admit(
        &self,
        index: usize,
        method: &MethodPolicy,
        extensions: &http::Extensions,
    ) -> Result<Admission, tonic::Status> {
        match method.rate_limit {
            None => Ok(Admission::Admitted),
            Some(_) => self.check(index, method.path, extensions),
        }
    }

    #[cold]
    #[inline(never)]
    fn check(
        &self,
        index: usize,
        path: &'static str,
        extensions: &http::Extensions,
    ) -> Result<Admission, tonic::Status> {
        let Some(Some(method)) = self.methods.get(index) else {
            return Ok(Admission::Admitted);
        };
        let local = method.buckets.key(method.limit.key, extensions);
        let Some(shared) = &method.shared else {
            return method.take_local(path, local).map(|()| Admission::Admitted);
        };
        let key = shared.key(path, shared_key(method.limit.key, extensions).as_deref());
        let method = method.clone();
        Ok(Admission::Ask(Box::pin(async move {
            method.take_shared(path, &key, local).await
        })))
    }
}

impl Keyed {
    /// The local bucket of a call (its key's hash, for a keyed limit).
    fn key(&self, key: RateKey, extensions: &http::Extensions) -> u64 {
        match self {
            Keyed::Global(_) => 0,
            Keyed::By { hasher, .. } => key_hash(key, hasher, extensions),
        }
    }

    /// The time on the clock the buckets are measured by.
    fn now(&self) -> <QuantaClock as Clock>::Instant {
        match self {
            Keyed::Global(limiter) => limiter.clock().now(),
            Keyed::By { limiter, .. } => limiter.clock().now(),
        }
    }

    fn new(limit: &RateLimit) -> Self {
        // Codegen accepts only rates from one per ~12 days to well under one
        // per nanosecond, and bursts of at least 1.
        let interval = limit
            .interval()
            .unwrap_or(std::time::Duration::from_nanos(1));
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = QuantaClock::default();
        match limit.key {
            RateKey::Global => Keyed::Global(RateLimiter::direct_with_clock(quota, clock)),
            _ => Keyed::By {
                limiter: RateLimiter::new(quota, Buckets::new(KEYS_PER_METHOD), clock),
                hasher: RandomState::new(),
            },
        }
    }
}

impl Limiter {
    /// Takes a call's room in the process's bucket `key`.
    fn take_local(&self, path: &str, key: u64) -> Result<(), tonic::Status> {
        let refused = match &self.buckets {
            Keyed::Global(limiter) => limiter.check().err(),
            Keyed::By { limiter, .. } => limiter.check_key(&key).err(),
        };
        match refused {
            None => Ok(()),
            Some(not_until) => Err(self.refuse(path, not_until.wait_time_from(self.buckets.now()))),
        }
    }

    /// Takes a call's room in the fleet's bucket `key`; when Redis cannot
    /// say, `rate_limit.on_backend_error` does (`local`: the process's
    /// bucket `local`).
    async fn take_shared(&self, path: &str, key: &str, local: u64) -> Result<(), tonic::Status> {
        let Some(shared) = &self.shared else {
            return self.take_local(path, local);
        };
        let interval = self
            .limit
            .interval()
            .unwrap_or(std::time::Duration::from_nanos(1));
        match shared.take(key, interval, self.limit.burst.max(1)).await {
            Ok(Taken::Admitted) => Ok(()),
            Ok(Taken::Refused(wait)) => Err(self.refuse(path, wait)),
            Err(()) => match shared.on_error {
                OnBackendError::Local => self.take_local(path, local),
                OnBackendError::Allow => Ok(()),
                OnBackendError::Deny => Err(tonic::Status::unavailable(format!(
                    "{path} is rate limited and its limit cannot be checked now; retry later"
                ))),
            },
        }
    }

    /// The status of a call refused for `wait`, counted.
    fn refuse(&self, path: &str, wait: std::time::Duration) -> tonic::Status {
        self.refused.inc();
        let RateLimit {
            per_second,
            burst,
            key,
        } = self.limit;
        let whose = match key {
            RateKey::Global => String::new(),
            RateKey::Peer => " per address".to_owned(),
            RateKey::Subject => " per subject".to_owned(),
            RateKey::Claim(name) => format!(" per {name}"),
        };
        let calls = if per_second == 1.0 { "call" } else { "calls" };
        tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            format!(
                "{path} is over its rate limit of {per_second} {calls} per second (burst {burst}){whose}; \
                 retry in {} ms",
                wait.as_millis().max(1)
            ),
            ErrorDetails::with_retry_info(Some(wait)),
        )
    }
}

/// The key of a call's bucket in the fleet's buckets (`None`: one bucket
/// for every call). A call without the key shares the bucket of the empty
/// key, as in the process's.
fn shared_key(key: RateKey, extensions: &http::Extensions) -> Option<Vec<u8>> {
    let claims = || extensions.get::<Caller>().map(|caller| &*caller.0);
    let text = match key {
        RateKey::Global => return None,
        RateKey::Peer => peer_ip(extensions).map(|ip| ip.to_string()),
        RateKey::Subject => claims().map(|c| c.sub.clone()),
        RateKey::Claim(name) => claims().and_then(|c| c.claim(name)).map(Into::into),
    };
    Some(text.unwrap_or_default().into_bytes())
}

/// The hash of the bucket key of a call. A call without the key (no
/// address, a token without the claim) shares the bucket of the empty key.
fn key_hash(key: RateKey, hasher: &RandomState, extensions: &http::Extensions) -> u64 {
    let claims = || extensions.get::<Caller>().map(|caller| &*caller.0);
    match key {
        RateKey::Peer => hasher.hash_one(peer_ip(extensions)),
        RateKey::Subject => hasher.hash_one(claims().map(|c| c.sub.as_str())),
        RateKey::Claim(name) => hasher.hash_one(claims().and_then(|c| c.claim(name))),
        RateKey::Global => 0,
    }
}

/// The IP address of the connection a request came on.
fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    let tcp = (extensions.get::<TcpConnectInfo>()).or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|tls| tls.get_ref())
    })?;
    tcp.remote_addr().map(|addr| addr.ip())
}
