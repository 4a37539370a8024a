//! Throttling logins: failures counted per username and per peer address in
//! a [`FailureLedger`] that every replica shares (Redis or the auth store), and
//! attempts in flight bounded per username and per peer on each replica.
//!
//! **Failures** fill a leaky bucket per key (GCRA): a key's `clear_at` is
//! when its failures stop counting; each failure pushes it one `interval`
//! past `max(clear_at, now)`. A key is refused while
//! `clear_at - now > (burst - 1) × interval`, that is once `burst` failures
//! are on record, until one of them has leaked away — exactly the token
//! bucket of `burst` tokens regaining one per `interval` that this throttle
//! used to keep in memory, but as one number per key that the store can
//! update atomically, so that every replica counts every replica's failures.
//! Only failures count: a success, or an attempt that could not be judged
//! (store or hashing error), leaves the ledger as it was — and, as before, a
//! success does not wipe earlier failures either (logging in to an account of
//! one's own between guesses must not reset the count of one's address).
//!
//! **Attempts in flight** are bounded separately, per username and per peer,
//! in each replica: concurrent attempts all pass the failure check before any
//! of them has failed, so without a bound a burst of N concurrent guesses
//! would all be checked however small `burst` is. With it, at most
//! `burst - 1 + username_in_flight` guesses per username (per replica) are
//! checked before the lockout — and concurrent *correct* logins, which never
//! count, are only limited by it (six browser tabs logging in at once all
//! succeed). See [`IN_FLIGHT_RETRY_AFTER`] for what a caller past the bound
//! sees, and why.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_rpc::store::StoreError;

use crate::settings::ThrottleConfig;

/// The retry hint of a login refused because too many attempts for its
/// username (or from its address) are being checked on this replica.
///
/// Such a login is refused at once with `RESOURCE_EXHAUSTED` ("too many
/// concurrent logins …") and this hint in `retry-after-ms`, rather than made
/// to wait for a turn or answered `UNAVAILABLE`:
///
/// - waiting would turn the bound into a queue: a guesser could keep it full
///   and make the account's owner wait behind its guesses, each waiter held
///   open with its password in memory; the argon2 pool already queues the
///   attempts that are let in (`passwords.max_concurrent`);
/// - `UNAVAILABLE` says the service is down: Keel clients retry it at once on
///   another replica (auth.proto's retry policy for `Login`), which multiplies
///   the load of a burst and sidesteps a per-replica bound, and it pages
///   whoever alerts on `UNAVAILABLE`;
/// - `RESOURCE_EXHAUSTED` is gRPC's code for a per-user quota, is never
///   retried automatically, and is what the failure limit answers already, so
///   clients (and the REST mapping, 429) handle both the same way.
///
/// A well-behaved client never has more than a few logins of one user in
/// flight; one that does learns it at once and may retry after the hint —
/// about the time a login takes, by which a slot has usually freed up.
pub const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_millis(200);

/// The longest interval the ledger is given (100 years): longer ones are
/// clamped, so that `clear_at` stays far from `i64::MAX` milliseconds.
const MAX_INTERVAL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A login refused before checking the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit was reached.
    pub scope: ThrottleScope,
    /// Why: failures on record, or attempts in flight.
    pub reason: ThrottleReason,
    /// When the next attempt will be allowed (a hint, for
    /// [`ThrottleReason::InFlight`]).
    pub retry_after: Duration,
}

/// The limit a [`Throttled`] login reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleScope {
    /// Failures for the username, from anywhere.
    Username,
    /// Failures from the peer address, for any username.
    Peer,
}

impl ThrottleScope {
    /// `"username"` or `"peer"`: the `scope` column of the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleScope::Username => "username",
            ThrottleScope::Peer => "peer",
        }
    }
}

impl fmt::Display for ThrottleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a [`Throttled`] login was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleReason {
    /// `burst` failures are on record (on any replica) for the scope's key.
    Failures,
    /// As many attempts for the key as allowed are being checked on this
    /// replica (`username_in_flight`, `peer_in_flight`), or the replica
    /// tracks `max_entries` keys in flight already.
    InFlight,
}

/// Why [`Throttle::begin`] let no attempt through.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A limit was reached.
    #[error("login throttled ({:?} {})", .0.reason, .0.scope)]
    Throttled(Throttled),
    /// The ledger could not be read: the attempt is refused (fail closed).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A [`FailureLedger`] that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The auth store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis (`[rate_limit] backend`) failed or did not answer in time.
    #[error("the login throttle's Redis: {0}")]
    Backend(String),
}

/// What failures are counted for: a username (as given: credentials are
/// case-sensitive) or a peer address (an IPv4 address, or an IPv6 /64 as
/// `2001:db8:1:2::/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailureKey<'a> {
    /// Username or peer.
    pub scope: ThrottleScope,
    /// The username, or the address as text.
    pub target: &'a str,
}

/// The failures on record for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// When its failures stop counting, Unix milliseconds.
    pub clear_at: i64,
    /// Failures since it was last clear (for logs).
    pub failures: i64,
}

/// Where failed logins are counted, shared by the replicas: Redis when the
/// service's `[rate_limit] backend` names one ([`crate::RedisLedger`]), else
/// the auth store ([`crate::AuthStore`], on SQLite or PostgreSQL). Times are Unix milliseconds from
/// the replicas' clocks (a skew between them shifts a lockout by as much).
#[tonic::async_trait]
pub trait FailureLedger: fmt::Debug + Send + Sync {
    /// The standing of each of `keys`, in order, at `now`: `None` for a key
    /// with no failure that still counts (none on record, or its `clear_at`
    /// is not after `now`).
    async fn standings(
        &self,
        keys: &[FailureKey<'_>],
        now: i64,
    ) -> Result<Vec<Option<Standing>>, LedgerError>;

    /// Counts one failure for each `(key, interval in ms)` at `now` and
    /// returns the new standings, in order. Atomic per key, whoever else
    /// counts failures for it at the same time: `clear_at` becomes
    /// `max(clear_at, now) + interval`, and `failures` one more, or 1 if
    /// `clear_at` had passed.
    async fn record(
        &self,
        failures: &[(FailureKey<'_>, i64)],
        now: i64,
    ) -> Result<Vec<Standing>, LedgerError>;

    /// Forgets the keys whose failures no longer count at `now` (`clear_at`
    /// not after it); returns how many. Expired entries are harmless until
    /// then (`record` and `standings` ignore them), so this only bounds the
    /// size of the ledger; a backend with its own expiry may do nothing.
    async fn sweep(&self, now: i64) -> Result<u64, LedgerError>;
}

/// A login attempt that passed the throttle. Report its failure with
/// [`Throttle::failed`]; dropping it otherwise (success, or an error that
/// leaves the password unjudged) counts nothing. It holds its slots in flight
/// until then.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    username: String,
    /// The ledger target of the peer.
    peer: Option<String>,
    _slots: (Option<Slot<String>>, Option<Slot<IpAddr>>),
}

/// The login throttle of one replica: its limits, the shared ledger and its
/// own tables of attempts in flight.
#[derive(Debug)]
pub struct Throttle {
    username: Limit,
    peer: Limit,
    ledger: Arc<dyn FailureLedger>,
    usernames_in_flight: Arc<InFlight<String>>,
    peers_in_flight: Arc<InFlight<IpAddr>>,
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `burst` failures, one more per `interval` (milliseconds); disabled when
/// either is 0.
#[derive(Clone, Copy, Debug)]
struct Limit {
    burst: i64,
    interval: i64,
}

impl Limit {
    fn new(burst: u32, interval: Duration) -> Limit {
        let interval = match interval.as_millis() {
            0 if interval.is_zero() => 0,
            // Below a millisecond: the ledger's unit.
            0 => 1,
            ms => i64::try_from(ms).unwrap_or(i64::MAX).min(MAX_INTERVAL_MS),
        };
        Limit {
            burst: i64::from(burst),
            interval,
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0 && self.interval > 0
    }

    /// How long until the key of `clear_at` may fail again, if not now: its
    /// bucket is empty until `clear_at - (burst - 1) × interval`.
    fn wait(&self, clear_at: i64, now: i64) -> Option<Duration> {
        let opens_at = clear_at.saturating_sub((self.burst - 1).saturating_mul(self.interval));
        (opens_at > now).then(|| Duration::from_millis(u64::try_from(opens_at - now).unwrap_or(0)))
    }
}

impl Throttle {
    /// Throttling as `config` says, counting failures in `ledger`.
    pub fn new(config: &ThrottleConfig, ledger: Arc<dyn FailureLedger>) -> Self {
        Throttle {
            username: Limit::new(config.username_burst, config.username_interval),
            peer: Limit::new(config.peer_burst, config.peer_interval),
            ledger,
            usernames_in_flight: Arc::new(InFlight::new(
                config.username_in_flight,
                config.max_entries,
            )),
            peers_in_flight: Arc::new(InFlight::new(config.peer_in_flight, config.max_entries)),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn FailureLedger> {
        &self.ledger
    }

    fn limit(&self, scope: ThrottleScope) -> Limit {
        match scope {
            ThrottleScope::Username => self.username,
            ThrottleScope::Peer => self.peer,
        }
    }

    /// The keys of the enabled limits: the peer's first (it is the one
    /// reported when both are reached, as before), then the username's.
    fn keys<'a>(&self, username: &'a str, peer: Option<&'a str>) -> Vec<FailureKey<'a>> {
        let mut keys = Vec::with_capacity(2);
        if let Some(peer) = peer
            && self.peer.enabled()
        {
            keys.push(FailureKey {
                scope: ThrottleScope::Peer,
                target: peer,
            });
        }
        if self.username.enabled() {
            keys.push(FailureKey {
                scope: ThrottleScope::Username,
                target: username,
            });
        }
        keys
    }

    /// Lets an attempt for `username` from `peer` through, or says why not:
    /// too many attempts in flight for either here, or too many failures on
    /// record for either, or the ledger is unavailable.
    pub async fn begin(&self, username: &str, peer: Option<IpAddr>) -> Result<Attempt, Refused> {
        self.begin_at(username, peer, now_millis()).await
    }

    async fn begin_at(
        &self,
        username: &str,
        peer: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt, Refused> {
        let peer = peer.map(peer_key);
        // The slots first: they cost nothing, and bound the ledger reads too.
        let busy = |scope| {
            Refused::Throttled(Throttled {
                scope,
                reason: ThrottleReason::InFlight,
                retry_after: IN_FLIGHT_RETRY_AFTER,
            })
        };
        let peer_slot = match peer {
            Some(ip) => self
                .peers_in_flight
                .enter(ip)
                .map_err(|Full| busy(ThrottleScope::Peer))?,
            None => None,
        };
        let username_slot = self
            .usernames_in_flight
            .enter(username.to_owned())
            .map_err(|Full| busy(ThrottleScope::Username))?;
        let peer = peer.map(peer_target);
        let keys = self.keys(username, peer.as_deref());
        if !keys.is_empty() {
            let standings = self.ledger.standings(&keys, now).await?;
            for (key, standing) in keys.iter().zip(standings) {
                let wait = standing.and_then(|s| self.limit(key.scope).wait(s.clear_at, now));
                if let Some(retry_after) = wait {
                    return Err(Refused::Throttled(Throttled {
                        scope: key.scope,
                        reason: ThrottleReason::Failures,
                        retry_after,
                    }));
                }
            }
        }
        Ok(Attempt {
            username: username.to_owned(),
            peer,
            _slots: (username_slot, peer_slot),
        })
    }

    /// The attempt failed: counts a failure for its username and its peer,
    /// then frees its slots. An error means the failure could not be counted
    /// (the caller should not answer as if it had been).
    pub async fn failed(&self, attempt: Attempt) -> Result<(), LedgerError> {
        self.failed_at(attempt, now_millis()).await
    }

    async fn failed_at(&self, attempt: Attempt, now: i64) -> Result<(), LedgerError> {
        let keys: Vec<(FailureKey<'_>, i64)> = self
            .keys(&attempt.username, attempt.peer.as_deref())
            .into_iter()
            .map(|key| (key, self.limit(key.scope).interval))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let standings = self.ledger.record(&keys, now).await?;
        for ((key, interval), standing) in keys.iter().zip(standings) {
            let limit = self.limit(key.scope);
            // This failure is the one that reached the limit: say so once.
            if let Some(retry_after) = limit.wait(standing.clear_at, now)
                && limit.wait(standing.clear_at - interval, now).is_none()
            {
                tracing::warn!(
                    scope = %key.scope,
                    target = %key.target,
                    failures = standing.failures,
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "too many failed logins; further logins refused for a while"
                );
            }
        }
        drop(attempt);
        Ok(())
    }

    /// Forgets failures that no longer count (see [`FailureLedger::sweep`]);
    /// returns how many keys.
    pub async fn sweep(&self) -> Result<u64, LedgerError> {
        self.ledger.sweep(now_millis()).await
    }
}

/// IPv4 addresses as they are; IPv6 addresses by their /64 network, which a
/// single host usually controls whole.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// The ledger target of a [`peer_key`]: `203.0.113.7`, `2001:db8:1:2::/64`.
fn peer_target(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The attempts in flight per key on this replica: at most `limit` each
/// (none when 0), and at most `max_entries` keys at once.
struct InFlight<K> {
    limit: usize,
    max_entries: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// No slot left.
#[derive(Debug)]
struct Full;

impl<K> fmt::Debug for InFlight<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.counts.lock().map_or(0, |c| c.len());
        f.debug_struct("InFlight")
            .field("limit", &self.limit)
            .field("max_entries", &self.max_entries)
            .field("keys", &keys)
            .finish()
    }
}

impl<K: Eq + Hash + Clone> InFlight<K> {
    fn new(limit: usize, max_entries: usize) -> Self {
        InFlight {
            limit,
            max_entries: max_entries.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `key`, held until dropped (`None` when unbounded).
    fn enter(self: &Arc<Self>, key: K) -> Result<Option<Slot<K>>, Full> {
        if self.limit == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let known = counts.len();
        match counts.get_mut(&key) {
            Some(count) if *count >= self.limit => return Err(Full),
            Some(count) => *count += 1,
            None if known >= self.max_entries => return Err(Full),
            None => {
                counts.insert(key.clone(), 1);
            }
        }
        Ok(Some(Slot {
            table: Arc::clone(self),
            key,
        }))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.len())
    }
}

/// One attempt in flight for `key`; freed when dropped.
struct Slot<K: Eq + Hash> {
    table: Arc<InFlight<K>>,
    key: K,
}

impl<K: Eq + Hash> fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ledger's contract in memory, for the throttle's own tests (the
    /// store's implementation is tested in `tests/store.rs`).
    #[derive(Debug, Default)]
    struct MemoryLedger {
        entries: Mutex<HashMap<(ThrottleScope, String), Standing>>,
    }

    #[tonic::async_trait]
    impl FailureLedger for MemoryLedger {
        async fn standings(
            &self,
            keys: &[FailureKey<'_>],
            now: i64,
        ) -> Result<Vec<Option<Standing>>, LedgerError> {
            let entries = self.entries.lock().unwrap();
            Ok(keys
                .iter()
                .map(|k| {
                    entries
                        .get(&(k.scope, k.target.to_owned()))
                        .copied()
                        .filter(|s| s.clear_at > now)
                })
                .collect())
        }

        async fn record(
            &self,
            failures: &[(FailureKey<'_>, i64)],
            now: i64,
        ) -> Result<Vec<Standing>, LedgerError> {
            let mut entries = self.entries.lock().unwrap();
            Ok(failures
                .iter()
                .map(|(k, interval)| {
                    let entry = entries
                        .entry((k.scope, k.target.to_owned()))
                        .or_insert(Standing {
                            clear_at: now,
                            failures: 0,
                        });
                    *entry = if entry.clear_at > now {
                        Standing {
                            clear_at: entry.clear_at + interval,
                            failures: entry.failures + 1,
                        }
                    } else {
                        Standing {
                            clear_at: now + interval,
                            failures: 1,
                        }
                    };
                    *entry
                })
                .collect())
        }

        async fn sweep(&self, now: i64) -> Result<u64, LedgerError> {
            let mut entries = self.entries.lock().unwrap();
            let before = entries.len();
            entries.retain(|_, s| s.clear_at > now);
            Ok((before - entries.len()) as u64)
        }
    }

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            username_burst: 3,
            username_interval: Duration::from_secs(10),
            peer_burst: 5,
            peer_interval: Duration::from_secs(2),
            username_in_flight: 8,
            peer_in_flight: 16,
            max_entries: 100,
        }
    }

    fn throttle(config: &ThrottleConfig) -> Throttle {
        Throttle::new(config, Arc::new(MemoryLedger::default()))
    }

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)));
    const T0: i64 = 1_700_000_000_000;

    fn refused(result: Result<Attempt, Refused>) -> Throttled {
        match result {
            Err(Refused::Throttled(throttled)) => throttled,
            other => panic!("not throttled: {other:?}"),
        }
    }

    async fn fail(throttle: &Throttle, username: &str, peer: Option<IpAddr>, now: i64) {
        let attempt = throttle.begin_at(username, peer, now).await.unwrap();
        throttle.failed_at(attempt, now).await.unwrap();
    }

    #[tokio::test]
    async fn failures_per_username_are_limited_then_refill() {
        let throttle = throttle(&ThrottleConfig {
            peer_burst: 0,
            ..config()
        });
        for _ in 0..3 {
            fail(&throttle, "ada", PEER, T0).await;
        }
        let refused = refused(throttle.begin_at("ada", PEER, T0).await);
        assert_eq!(refused.scope, ThrottleScope::Username);
        assert_eq!(refused.reason, ThrottleReason::Failures);
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        // Other usernames are not affected.
        fail(&throttle, "bob", PEER, T0).await;
        // One failure leaks away per interval.
        let later = T0 + 10_000;
        fail(&throttle, "ada", PEER, later).await;
        assert!(throttle.begin_at("ada", PEER, later).await.is_err());
        // All of them after burst intervals.
        let clear = later + 30_000;
        for _ in 0..3 {
            fail(&throttle, "ada", PEER, clear).await;
        }
    }

    #[tokio::test]
    async fn failures_per_peer_are_limited_across_usernames() {
        let throttle = throttle(&config());
        for i in 0..5 {
            fail(&throttle, &format!("user{i}"), PEER, T0).await;
        }
        let refused = refused(throttle.begin_at("someone", PEER, T0).await);
        assert_eq!(refused.scope, ThrottleScope::Peer);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        let other: Option<IpAddr> = Some("10.0.0.7".parse().unwrap());
        let _ = throttle.begin_at("someone", other, T0).await.unwrap();
    }

    #[tokio::test]
    async fn successes_do_not_count_but_do_not_reset_failures() {
        let throttle = throttle(&config());
        for _ in 0..50 {
            let attempt = throttle.begin_at("ada", PEER, T0).await.unwrap();
            drop(attempt); // succeeded
        }
        for _ in 0..3 {
            fail(&throttle, "ada", PEER, T0).await;
        }
        drop(throttle.begin_at("bob", PEER, T0).await.unwrap());
        assert!(throttle.begin_at("ada", PEER, T0).await.is_err());
    }

    #[tokio::test]
    async fn attempts_in_flight_do_not_count_as_failures() {
        // The flaw this design fixes: attempts used to take their token up
        // front, so more concurrent logins than `burst` were refused.
        let throttle = throttle(&config());
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(throttle.begin_at("ada", PEER, T0).await.unwrap());
        }
        drop(held);
        // The concurrent failures all count, and then lock the username out.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(throttle.begin_at("ada", PEER, T0).await.unwrap());
        }
        for attempt in held {
            throttle.failed_at(attempt, T0).await.unwrap();
        }
        let refused = refused(throttle.begin_at("ada", PEER, T0).await);
        assert_eq!(refused.reason, ThrottleReason::Failures);
    }

    #[tokio::test]
    async fn attempts_in_flight_are_bounded_per_username_and_per_peer() {
        let throttle = throttle(&ThrottleConfig {
            username_in_flight: 2,
            peer_in_flight: 3,
            ..config()
        });
        let first = throttle.begin_at("ada", PEER, T0).await.unwrap();
        let second = throttle.begin_at("ada", PEER, T0).await.unwrap();
        let busy = refused(throttle.begin_at("ada", PEER, T0).await);
        assert_eq!(
            busy,
            Throttled {
                scope: ThrottleScope::Username,
                reason: ThrottleReason::InFlight,
                retry_after: IN_FLIGHT_RETRY_AFTER,
            }
        );
        // Another address, same username: still the username's bound.
        let other: Option<IpAddr> = Some("10.0.0.7".parse().unwrap());
        assert!(throttle.begin_at("ada", other, T0).await.is_err());
        // Another username, same address: the peer's bound (3).
        let third = throttle.begin_at("bob", PEER, T0).await.unwrap();
        let busy = refused(throttle.begin_at("carol", PEER, T0).await);
        assert_eq!(busy.scope, ThrottleScope::Peer);
        assert_eq!(busy.reason, ThrottleReason::InFlight);
        // A refused attempt held nothing; a finished one frees its slots.
        drop(first);
        let _again = throttle.begin_at("ada", PEER, T0).await.unwrap();
        throttle.failed_at(second, T0).await.unwrap();
        throttle.failed_at(third, T0).await.unwrap();
        assert_eq!(throttle.usernames_in_flight.len(), 1);
        assert_eq!(throttle.peers_in_flight.len(), 1);
    }

    #[tokio::test]
    async fn zero_disables_a_bound_and_the_tables_stay_bounded() {
        let unbounded = throttle(&ThrottleConfig {
            username_in_flight: 0,
            peer_in_flight: 0,
            ..config()
        });
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(unbounded.begin_at("ada", PEER, T0).await.unwrap());
        }
        assert_eq!(unbounded.usernames_in_flight.len(), 0);

        let small = throttle(&ThrottleConfig {
            max_entries: 10,
            ..config()
        });
        let mut held = Vec::new();
        for i in 0..1000 {
            if let Ok(attempt) = small.begin_at(&format!("user{i}"), None, T0).await {
                held.push(attempt);
            }
        }
        assert_eq!(held.len(), 10);
        assert!(small.usernames_in_flight.len() <= 10);
        drop(held);
        assert_eq!(small.usernames_in_flight.len(), 0);
    }

    #[tokio::test]
    async fn sweeping_forgets_only_what_no_longer_counts() {
        let ledger = Arc::new(MemoryLedger::default());
        let throttle = Throttle::new(&config(), ledger.clone());
        fail(&throttle, "ada", PEER, T0).await;
        // The peer's failure (2 s) has leaked away at T0 + 5 s, ada's (10 s)
        // has not.
        assert_eq!(ledger.sweep(T0 + 5_000).await.unwrap(), 1);
        assert_eq!(ledger.entries.lock().unwrap().len(), 1);
    }

    #[test]
    fn ipv6_peers_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        assert_eq!(peer_target(peer_key(a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(peer_key(mapped), PEER.unwrap());
        assert_eq!(peer_target(peer_key(mapped)), "127.0.0.1");
    }

    #[test]
    fn intervals_are_milliseconds_at_least_one_and_clamped() {
        assert_eq!(Limit::new(1, Duration::from_micros(10)).interval, 1);
        assert_eq!(Limit::new(1, Duration::ZERO).interval, 0);
        assert!(!Limit::new(1, Duration::ZERO).enabled());
        assert_eq!(Limit::new(1, Duration::MAX).interval, MAX_INTERVAL_MS);
    }
}
