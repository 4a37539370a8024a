//! [`Buckets`]: the rate-limit state of a keyed method, bounded in memory.

use std::sync::{Mutex, PoisonError};

use governor::nanos::Nanos;
use governor::state::StateStore;
use quick_cache::unsync::Cache;

/// Shards of the map, each behind its own lock, so calls of different
/// callers rarely wait for one another.
const SHARDS: usize = 16;

/// The state of up to `capacity` buckets (one theoretical arrival time
/// each, by key hash), in shards of least recently used eviction: a caller
/// rotating keys only pushes out buckets, which then start full again, and
/// never grows the map. governor's own keyed stores grow with every new key
/// until their `retain_recent` runs.
pub(super) struct Buckets {
    shards: Box<[Mutex<Cache<u64, Nanos>>]>,
}

impl Buckets {
    pub(super) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Buckets {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Cache::new(per_shard)))
                .collect(),
        }
    }
}

impl StateStore for Buckets {
    /// A hash of the caller's key (keyed by the process's random hasher, so
    /// a caller cannot aim at another's bucket).
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shard = &self.shards[(*key as usize) % SHARDS];
        let mut cache = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let (outcome, next) = f(cache.get(key).copied())?;
        cache.insert(*key, next);
        Ok(outcome)
    }
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;
    use governor::middleware::NoOpMiddleware;
    use governor::{Quota, RateLimiter};

    use super::*;

    type Limiter = RateLimiter<u64, Buckets, FakeRelativeClock, NoOpMiddleware<Nanos>>;

    #[test]
    fn a_key_has_its_own_bucket_and_the_map_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
        let limiter = Limiter::new(quota, Buckets::new(64), clock.clone());
        assert!(limiter.check_key(&1).is_ok());
        assert!(limiter.check_key(&1).is_err(), "key 1 spent its burst");
        assert!(
            limiter.check_key(&2).is_ok(),
            "key 2 has a bucket of its own"
        );
        // Rotating through many keys neither grows the map past its bound
        // nor lets key 1 skip its wait while it is still remembered…
        for key in 1000..1010 {
            assert!(limiter.check_key(&key).is_ok());
        }
        assert!(limiter.check_key(&1).is_err());
        for key in 10_000..20_000 {
            let _ = limiter.check_key(&key);
        }
        let state = limiter.into_state_store();
        let held: usize = state.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 64 + SHARDS, "{held} buckets for a bound of 64");
    }

    #[test]
    fn a_bucket_refills_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(2).unwrap());
        let limiter = Limiter::new(quota, Buckets::new(8), clock.clone());
        assert!(limiter.check_key(&7).is_ok());
        assert!(limiter.check_key(&7).is_ok());
        assert!(limiter.check_key(&7).is_err());
        clock.advance(std::time::Duration::from_millis(500));
        assert!(limiter.check_key(&7).is_ok(), "one call's share is back");
        assert!(limiter.check_key(&7).is_err());
    }
}
