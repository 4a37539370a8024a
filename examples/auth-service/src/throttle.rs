//! Throttling failed logins: token buckets per username and per peer.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::ThrottleConfig;

/// A login refused before checking the password: too many recent failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit was reached.
    pub scope: ThrottleScope,
    /// When the next attempt will be allowed.
    pub retry_after: Duration,
}

/// The limit a [`Throttled`] login reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleScope {
    /// Failures for the username, from anywhere.
    Username,
    /// Failures from the peer address, for any username.
    Peer,
}

/// A login attempt that passed the throttle; its failure must be reported
/// with [`Throttle::failed`], its success with [`Throttle::succeeded`].
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    username: String,
    peer: Option<IpAddr>,
}

/// The buckets of failed logins. Each failure takes one token from the
/// username's bucket and one from the peer's; a bucket holds at most `burst`
/// tokens and regains one per `interval`. An attempt is let through only
/// when both buckets have a token, and takes it up front (so concurrent
/// attempts cannot overdraw); a success gives them back.
#[derive(Debug)]
pub struct Throttle {
    usernames: Buckets<String>,
    peers: Buckets<IpAddr>,
}

impl Throttle {
    /// Throttling as `config` says.
    pub fn new(config: &ThrottleConfig) -> Self {
        Throttle {
            usernames: Buckets::new(
                config.username_burst,
                config.username_interval,
                config.max_entries,
            ),
            peers: Buckets::new(config.peer_burst, config.peer_interval, config.max_entries),
        }
    }

    /// Lets an attempt for `username` from `peer` through, or says how long
    /// to wait.
    pub fn begin(&self, username: &str, peer: Option<IpAddr>) -> Result<Attempt, Throttled> {
        self.begin_at(username, peer, Instant::now())
    }

    fn begin_at(
        &self,
        username: &str,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Throttled> {
        let peer = peer.map(peer_key);
        if let Some(peer) = peer {
            self.peers
                .take(peer, now)
                .map_err(|retry_after| Throttled {
                    scope: ThrottleScope::Peer,
                    retry_after,
                })?;
        }
        if let Err(retry_after) = self.usernames.take(username.to_owned(), now) {
            if let Some(peer) = peer {
                self.peers.give_back(&peer, now);
            }
            return Err(Throttled {
                scope: ThrottleScope::Username,
                retry_after,
            });
        }
        Ok(Attempt {
            username: username.to_owned(),
            peer,
        })
    }

    /// The attempt failed: its tokens stay taken.
    pub fn failed(&self, attempt: Attempt) {
        drop(attempt);
    }

    /// The attempt could not be judged (the store was unavailable): it does
    /// not count.
    pub fn cancel(&self, attempt: Attempt) {
        self.refund(attempt);
    }

    /// The attempt succeeded: it does not count either. Earlier failures
    /// still do, until their tokens refill: logging in to an account of
    /// one's own between guesses does not reset a limit.
    pub fn succeeded(&self, attempt: Attempt) {
        self.refund(attempt);
    }

    fn refund(&self, attempt: Attempt) {
        let now = Instant::now();
        self.usernames.give_back(&attempt.username, now);
        if let Some(peer) = attempt.peer {
            self.peers.give_back(&peer, now);
        }
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

#[derive(Debug)]
struct Buckets<K> {
    burst: f64,
    interval: Duration,
    max_entries: usize,
    map: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    fn new(burst: u32, interval: Duration, max_entries: usize) -> Self {
        Buckets {
            burst: f64::from(burst),
            interval,
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0.0 && !self.interval.is_zero()
    }

    /// The bucket's tokens at `now`, refilled.
    fn level(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed / self.interval.as_secs_f64()).min(self.burst)
    }

    /// Takes a token, or returns how long until one is available.
    fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= self.max_entries {
            self.evict(&mut map, now);
        }
        let bucket = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let level = self.level(bucket, now);
        if level >= 1.0 {
            *bucket = Bucket {
                tokens: level - 1.0,
                at: now,
            };
            Ok(())
        } else {
            let missing = 1.0 - level;
            Err(Duration::from_secs_f64(
                missing * self.interval.as_secs_f64(),
            ))
        }
    }

    fn give_back(&self, key: &K, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = map.get_mut(key) {
            let level = self.level(bucket, now);
            *bucket = Bucket {
                tokens: (level + 1.0).min(self.burst),
                at: now,
            };
        }
    }

    /// Makes room: drops the buckets that are full again (they hold nothing
    /// a new bucket would not); if that is not enough, drops an arbitrary
    /// eighth of the table (`HashMap` order is randomly seeded), so the cost
    /// of a full table is amortized.
    fn evict(&self, map: &mut HashMap<K, Bucket>, now: Instant) {
        map.retain(|_, bucket| self.level(bucket, now) < self.burst);
        if map.len() >= self.max_entries {
            let excess = map.len() + 1 - self.max_entries * 7 / 8;
            let victims: Vec<K> = map.keys().take(excess).cloned().collect();
            for key in victims {
                map.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            username_burst: 3,
            username_interval: Duration::from_secs(10),
            peer_burst: 5,
            peer_interval: Duration::from_secs(2),
            max_entries: 100,
        }
    }

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)));

    #[test]
    fn failures_per_username_are_limited_then_refill() {
        let throttle = Throttle::new(&ThrottleConfig {
            peer_burst: 0,
            ..config()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            throttle.failed(throttle.begin_at("ada", PEER, t0).unwrap());
        }
        let refused = throttle.begin_at("ada", PEER, t0).unwrap_err();
        assert_eq!(refused.scope, ThrottleScope::Username);
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        // Other usernames are not affected.
        throttle.failed(throttle.begin_at("bob", PEER, t0).unwrap());
        // One token back after an interval.
        let later = t0 + Duration::from_secs(10);
        throttle.failed(throttle.begin_at("ada", PEER, later).unwrap());
        assert!(throttle.begin_at("ada", PEER, later).is_err());
    }

    #[test]
    fn failures_per_peer_are_limited_across_usernames() {
        let throttle = Throttle::new(&config());
        let t0 = Instant::now();
        for i in 0..5 {
            throttle.failed(throttle.begin_at(&format!("user{i}"), PEER, t0).unwrap());
        }
        let refused = throttle.begin_at("someone", PEER, t0).unwrap_err();
        assert_eq!(refused.scope, ThrottleScope::Peer);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        let other: Option<IpAddr> = Some("10.0.0.7".parse().unwrap());
        assert!(throttle.begin_at("someone", other, t0).is_ok());
    }

    #[test]
    fn successes_do_not_count_but_do_not_reset_failures() {
        let throttle = Throttle::new(&config());
        let t0 = Instant::now();
        for _ in 0..50 {
            let attempt = throttle.begin_at("ada", PEER, t0).unwrap();
            throttle.succeeded(attempt);
        }
        for _ in 0..3 {
            throttle.failed(throttle.begin_at("ada", PEER, t0).unwrap());
        }
        throttle.succeeded(throttle.begin_at("bob", PEER, t0).unwrap());
        assert!(throttle.begin_at("ada", PEER, t0).is_err());
    }

    #[test]
    fn ipv6_peers_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(peer_key(mapped), PEER.unwrap());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let throttle = Throttle::new(&ThrottleConfig {
            max_entries: 10,
            ..config()
        });
        let t0 = Instant::now();
        for i in 0..1000 {
            let _ = throttle.begin_at(&format!("user{i}"), None, t0);
        }
        assert!(throttle.usernames.len() <= 10);
    }
}
