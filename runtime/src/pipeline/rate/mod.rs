//! The pipeline's rate-limit step, for methods whose policy sets
//! `rate_limit`: a call that finds its bucket empty is answered
//! `RESOURCE_EXHAUSTED`, with a `google.rpc.RetryInfo` detail saying when a
//! call would pass, before the handler runs; it is counted in
//! `keel_server_rate_limited_total`. Buckets follow governor's GCRA; those
//! of a keyed method are bounded ([`Buckets`]). Other methods pay one branch.

mod buckets;

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, QuantaClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use prometheus::IntCounter;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Caller;
use crate::policy::{MethodPolicy, RateKey, RateLimit, ServicePolicy};
use buckets::Buckets;

/// The most buckets a keyed method keeps.
const KEYS_PER_METHOD: usize = 65_536;

/// The rate limits of a service's methods.
#[derive(Debug)]
pub(super) struct RateLimits {
    /// By method index; `None` for methods without a limit.
    methods: Box<[Option<Limiter>]>,
}

/// One method's buckets.
#[derive(Debug)]
struct Limiter {
    limit: RateLimit,
    buckets: Keyed,
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
    /// each limited method's counter.
    pub(super) fn new(policy: &ServicePolicy, refused: Box<[Option<IntCounter>]>) -> Self {
        let methods = (policy.methods.iter().zip(refused))
            .map(|(method, refused)| {
                let limit = method.rate_limit?;
                Some(Limiter {
                    buckets: Keyed::new(&limit),
                    limit,
                    refused: refused?,
                })
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
    ) -> Result<(), tonic::Status> {
        match method.rate_limit {
            None => Ok(()),
            Some(_) => self.check(index, method.path, extensions),
        }
    }

    #[cold]
    #[inline(never)]
    fn check(
        &self,
        index: usize,
        path: &str,
        extensions: &http::Extensions,
    ) -> Result<(), tonic::Status> {
        let Some(Some(method)) = self.methods.get(index) else {
            return Ok(());
        };
        let refused = match &method.buckets {
            Keyed::Global(limiter) => limiter.check().err(),
            Keyed::By { limiter, hasher } => {
                let key = key_hash(method.limit.key, hasher, extensions);
                limiter.check_key(&key).err()
            }
        };
        match refused {
            None => Ok(()),
            Some(not_until) => Err(method.refuse(path, &not_until)),
        }
    }
}

impl Keyed {
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
    /// The status of a refused call, counted.
    fn refuse(
        &self,
        path: &str,
        not_until: &NotUntil<<QuantaClock as Clock>::Instant>,
    ) -> tonic::Status {
        self.refused.inc();
        let wait = not_until.wait_time_from(self.buckets.now());
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
