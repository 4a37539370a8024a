//! [`Revocations`]: the sessions the auth service has revoked, which a
//! [`Verifier`](super::Verifier) refuses, and [`RevocationFeed`], which
//! follows the auth service's `WatchRevocations` stream (`auth.revocations`)
//! to keep them.
//!
//! A verifier checks tokens locally, so without this a revoked session's
//! access tokens stay valid until they expire. With it, the auth service
//! streams each revocation as it commits (on any of its replicas) and every
//! Keel service following it refuses that session's tokens within about a
//! second, cached or not. A session is kept until its last access token
//! expires (plus `auth.leeway`), so the list is bounded by the revocations of
//! one token lifetime. When the stream breaks, the feed reconnects with
//! backoff and the cursor of the last message, and the auth service sends
//! what it missed. Meanwhile `auth.revocations_when_behind` decides: `serve`
//! as usual, or `refuse` the tokens issued before the gap once it is longer
//! than `auth.revocations_max_lag`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio_util::sync::CancellationToken;

use super::{AuthError, Claims};
use crate::client::{Client, Transport};
use crate::config::{AuthConfig, RevocationsWhenBehind};

/// The auth service's stream of revocations.
const WATCH: &str = "/keel.auth.v1.AuthService/WatchRevocations";

/// The first pause before reconnecting; doubled after each failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A feed silent this long is taken for a dead connection and followed
/// again: the auth service sends an empty message every 10 s when it has
/// nothing to say, so that a connection lost without a word (a node gone)
/// is not taken for a quiet feed.
const SILENCE: Duration = Duration::from_secs(30);

/// `keel.auth.v1.WatchRevocationsRequest` (auth.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRevocationsRequest {
    /// The last cursor seen; 0 for every revocation still relevant.
    #[prost(uint64, tag = "1")]
    pub after: u64,
}

/// `keel.auth.v1.WatchRevocationsResponse` (auth.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRevocationsResponse {
    /// Sessions revoked since the last message.
    #[prost(message, repeated, tag = "1")]
    pub revocations: Vec<Revocation>,
    /// Where the subscriber stands: `after` when it reconnects.
    #[prost(uint64, tag = "2")]
    pub cursor: u64,
}

/// `keel.auth.v1.Revocation` (auth.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Revocation {
    /// The `sid` of the session's access tokens.
    #[prost(string, tag = "1")]
    pub session_id: String,
    /// Unix seconds after which none of its access tokens is valid.
    #[prost(int64, tag = "2")]
    pub expires_at: i64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The revoked sessions a verifier refuses, and whether the feed that keeps
/// them is current.
#[derive(Debug)]
pub struct Revocations {
    /// Session id → when it may be forgotten (Unix seconds: its tokens'
    /// longest `exp` plus the leeway).
    sessions: RwLock<HashMap<Box<str>, u64>>,
    /// `sessions.len()`, read without the lock: an empty list costs a call
    /// one atomic load.
    count: AtomicUsize,
    /// Unix seconds since when the feed has not been current (from startup
    /// until the first message); 0 while it is.
    behind_since: AtomicU64,
    refuse_when_behind: bool,
    max_lag: u64,
    leeway: u64,
}

impl Revocations {
    /// The list a verifier with `config` keeps, if `auth.revocations` is set.
    pub(crate) fn from_config(config: &AuthConfig) -> Option<Self> {
        config.revocations.as_ref()?;
        Some(Revocations {
            sessions: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            behind_since: AtomicU64::new(unix_now().max(1)),
            refuse_when_behind: config.revocations_when_behind == RevocationsWhenBehind::Refuse,
            max_lag: config.revocations_max_lag.as_secs(),
            leeway: config.leeway.as_secs(),
        })
    }

    /// Refuses a token of a revoked session, or, with `refuse` while the
    /// feed is behind, one issued before it fell behind.
    pub(crate) fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.count.load(Ordering::Acquire) > 0
            && let Some(sid) = &claims.sid
        {
            let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
            if sessions.contains_key(sid.as_str()) {
                return Err(AuthError::Revoked);
            }
        }
        if self.refuse_when_behind {
            let since = self.behind_since.load(Ordering::Acquire);
            if since != 0
                && unix_now().saturating_sub(since) > self.max_lag
                && claims.iat.is_none_or(|iat| iat <= since)
            {
                return Err(AuthError::RevocationsBehind);
            }
        }
        Ok(())
    }

    /// Whether the feed is current: it answered, and has not broken since.
    pub fn is_current(&self) -> bool {
        self.behind_since.load(Ordering::Acquire) == 0
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `revoked`, and forgets the sessions whose tokens have all
    /// expired by `now`.
    fn apply(&self, revoked: Vec<Revocation>, now: u64) -> usize {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        for revocation in revoked {
            let until = u64::try_from(revocation.expires_at)
                .unwrap_or(0)
                .saturating_add(self.leeway);
            if until > now {
                sessions.insert(revocation.session_id.into_boxed_str(), until);
            }
        }
        sessions.retain(|_, until| *until > now);
        self.count.store(sessions.len(), Ordering::Release);
        sessions.len()
    }

    /// The feed is current: nothing is missing.
    fn current(&self) {
        self.behind_since.store(0, Ordering::Release);
    }

    /// The feed broke at `now` (if it was current: a gap starts once).
    fn behind(&self, now: u64) {
        let _ =
            self.behind_since
                .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Follows `auth.revocations` into a verifier's [`Revocations`]: the auth
/// service's `WatchRevocations` stream, from the cursor of its last message
/// whenever it reconnects (with backoff, and after 30 s without a message).
pub struct RevocationFeed {
    target: String,
    client: Client,
    revocations: Arc<Revocations>,
    /// `keel_auth_revocations_received_total`.
    received: IntCounter,
    /// `keel_auth_revocation_feed_reconnects_total`.
    reconnects: IntCounter,
    /// `keel_auth_revoked_sessions`.
    held: IntGauge,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("target", &self.target)
            .field("sessions", &self.revocations.len())
            .finish_non_exhaustive()
    }
}

impl RevocationFeed {
    /// The feed of `target` (`auth.revocations`) into `revocations`, calling
    /// through `client` (its `client.tls` and `client.dns`), with its
    /// metrics registered in `registry`.
    pub(crate) fn new(
        target: String,
        client: Client,
        revocations: Arc<Revocations>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let received = IntCounter::new(
            "keel_auth_revocations_received_total",
            "Revoked sessions received from the auth service's feed (auth.revocations).",
        )?;
        let reconnects = IntCounter::new(
            "keel_auth_revocation_feed_reconnects_total",
            "Times the feed of revoked sessions broke and was followed again, catching up.",
        )?;
        let held = IntGauge::new(
            "keel_auth_revoked_sessions",
            "Revoked sessions whose access tokens are refused now.",
        )?;
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(RevocationFeed {
            target,
            client,
            revocations,
            received,
            reconnects,
            held,
        })
    }

    /// Follows the feed until `stop`, reconnecting (with backoff, from the
    /// last cursor) whenever it breaks.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let transport = match self.client.connect(self.target.as_str()) {
            Ok(transport) => transport,
            Err(error) => {
                tracing::error!(target: "keel_rpc::auth", %error, "auth.revocations: cannot call the feed; revoked sessions are not refused");
                return;
            }
        };
        let mut grpc = tonic::client::Grpc::new(transport);
        let mut cursor = 0;
        let mut backoff = MIN_BACKOFF;
        let mut expiry = tokio::time::interval(Duration::from_secs(60));
        // Warned of the outage under way (once: the retries are debug).
        let mut warned = false;
        loop {
            let mut caught_up = false;
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.follow(&mut grpc, &mut cursor, &mut caught_up, &mut expiry) => outcome,
            };
            self.revocations.behind(unix_now());
            self.reconnects.inc();
            if caught_up {
                backoff = MIN_BACKOFF;
            }
            // A stream that was following ends now and then (the auth
            // replica recycles its connections, or drains): not a warning
            // unless following it again fails too.
            match (caught_up, std::mem::replace(&mut warned, !caught_up)) {
                (true, _) => {
                    tracing::info!(target: "keel_rpc::auth", revocations = %self.target, %outcome, "the feed of revoked sessions ended; following it again")
                }
                (false, false) => {
                    tracing::warn!(target: "keel_rpc::auth", revocations = %self.target, %outcome, "the feed of revoked sessions is unavailable; trying again until it answers")
                }
                (false, true) => {
                    tracing::debug!(target: "keel_rpc::auth", revocations = %self.target, %outcome, "the feed of revoked sessions is still unavailable")
                }
            }
            let pause = backoff.mul_f64(0.5 + unit() / 2.0);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One subscription: catches up from `cursor`, then applies each message
    /// until the stream ends or fails (the status says why).
    async fn follow(
        &self,
        grpc: &mut tonic::client::Grpc<Transport>,
        cursor: &mut u64,
        caught_up: &mut bool,
        expiry: &mut tokio::time::Interval,
    ) -> tonic::Status {
        if let Err(error) = grpc.ready().await {
            return tonic::Status::unavailable(format!("{}: {error}", self.target));
        }
        let codec =
            tonic_prost::ProstCodec::<WatchRevocationsRequest, WatchRevocationsResponse>::default();
        let request = tonic::Request::new(WatchRevocationsRequest { after: *cursor });
        let path = PathAndQuery::from_static(WATCH);
        let mut stream = match grpc.server_streaming(request, path, codec).await {
            Ok(response) => response.into_inner(),
            Err(status) => return status,
        };
        loop {
            let message = tokio::select! {
                message = tokio::time::timeout(SILENCE, stream.message()) => match message {
                    Ok(message) => message,
                    Err(_) => return tonic::Status::unavailable(format!(
                        "no message from the feed in {SILENCE:?}"
                    )),
                },
                // Forget sessions whose tokens have expired, revocations or not.
                _ = expiry.tick() => {
                    self.held.set(self.revocations.apply(Vec::new(), unix_now()) as i64);
                    continue;
                }
            };
            match message {
                Ok(Some(message)) => {
                    let count = message.revocations.len() as u64;
                    let held = self.revocations.apply(message.revocations, unix_now());
                    *cursor = (*cursor).max(message.cursor);
                    self.revocations.current();
                    self.received.inc_by(count);
                    self.held.set(held as i64);
                    if !*caught_up {
                        *caught_up = true;
                        tracing::info!(target: "keel_rpc::auth", revocations = %self.target, cursor = *cursor, held, "following the feed of revoked sessions");
                    }
                }
                Ok(None) => return tonic::Status::unavailable("the feed ended"),
                Err(status) => return status,
            }
        }
    }
}

/// A random number in [0, 1), for jitter.
fn unit() -> f64 {
    getrandom::u64().unwrap_or(u64::MAX / 2) as f64 / u64::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations(when_behind: RevocationsWhenBehind) -> Revocations {
        let config = AuthConfig {
            revocations: Some("http://127.0.0.1:1".into()),
            revocations_when_behind: when_behind,
            revocations_max_lag: Duration::from_secs(5),
            leeway: Duration::from_secs(30),
            ..AuthConfig::default()
        };
        Revocations::from_config(&config).expect("configured")
    }

    fn claims(sid: &str, iat: u64) -> Claims {
        Claims {
            sub: "ada".into(),
            scope: String::new(),
            exp: iat + 900,
            nbf: None,
            iat: Some(iat),
            iss: None,
            aud: Vec::new(),
            sid: Some(sid.into()),
            jti: None,
            token_use: None,
            other: Default::default(),
        }
    }

    #[test]
    fn revoked_sessions_are_refused_until_their_tokens_expire() {
        let list = revocations(RevocationsWhenBehind::Serve);
        let now = unix_now();
        list.current();
        let revoked = |sid: &str, expires_at: u64| Revocation {
            session_id: sid.into(),
            expires_at: expires_at as i64,
        };
        assert_eq!(
            list.apply(
                vec![revoked("s1", now + 600), revoked("old", now - 31)],
                now
            ),
            1
        );
        assert_eq!(list.check(&claims("s1", now)), Err(AuthError::Revoked));
        assert_eq!(list.check(&claims("s2", now)), Ok(()));
        // Kept through the leeway, then forgotten.
        assert_eq!(list.apply(Vec::new(), now + 629), 1);
        assert_eq!(list.apply(Vec::new(), now + 630), 0);
        assert_eq!(list.check(&claims("s1", now)), Ok(()));
    }

    #[test]
    fn when_behind_refuse_refuses_older_tokens_after_the_lag() {
        let serve = revocations(RevocationsWhenBehind::Serve);
        let refuse = revocations(RevocationsWhenBehind::Refuse);
        let now = unix_now();
        for list in [&serve, &refuse] {
            list.current();
            list.behind(now - 10);
            // A second break does not move the start of the gap.
            list.behind(now);
        }
        assert_eq!(serve.check(&claims("s", now - 20)), Ok(()));
        assert_eq!(
            refuse.check(&claims("s", now - 20)),
            Err(AuthError::RevocationsBehind)
        );
        // Issued after the gap began: accepted.
        assert_eq!(refuse.check(&claims("s", now - 5)), Ok(()));
        refuse.current();
        assert_eq!(refuse.check(&claims("s", now - 20)), Ok(()));
        // A gap shorter than the lag refuses nothing.
        refuse.behind(now - 2);
        assert_eq!(refuse.check(&claims("s", now - 20)), Ok(()));
    }
}
