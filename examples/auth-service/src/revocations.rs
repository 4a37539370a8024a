//! The feed of revoked sessions that `WatchRevocations` streams to
//! verifiers (`auth.revocations` in a Keel service's configuration).
//!
//! The store is the source of truth: each revocation commits with the next
//! number of one counter (migration 0004), so "everything after cursor N" is
//! a query, and a subscriber that reconnects with its cursor misses nothing,
//! whichever replica it reaches. Each replica learns that the counter moved,
//! on any replica, from one [`Feed`] task that reads it every [`POLL`] while
//! someone subscribes, and at once after its own revocations; every stream
//! then reads the rows after its own cursor. (PostgreSQL's `LISTEN/NOTIFY`
//! would save the polling but hold a connection per replica and still need
//! it after every reconnect, when notifications are lost; a primary-key read
//! four times a second is cheaper than either.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::auth_v1::{Revocation, WatchRevocationsResponse};
use crate::db::AuthStore;
use crate::service::{now_millis, store_status};

/// How often a replica with subscribers reads the revocation counter: the
/// most a revocation made on another replica waits before it is streamed.
pub const POLL: Duration = Duration::from_millis(250);

/// A stream with nothing to send sends an empty message this often, so that
/// its subscriber can tell a quiet feed from a dead connection (Keel's
/// gives up on one silent for three of them).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// At most this many revocations in one message; more follow at once.
pub const BATCH: u32 = 1000;

/// A replica's view of the revocation counter, shared by its streams.
#[derive(Debug)]
pub struct Feed {
    store: AuthStore,
    /// The last counter read; receivers wake when it moves.
    last: watch::Sender<u64>,
    /// Cancelled when the server starts draining: the streams end then,
    /// rather than hold the drain until `server.drain_timeout`.
    draining: CancellationToken,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Feed {
    /// The feed of `store`'s revocations, whose streams end when `draining`
    /// is cancelled.
    pub fn new(store: AuthStore, draining: CancellationToken) -> Arc<Self> {
        Arc::new(Feed {
            store,
            last: watch::Sender::new(0),
            draining,
            poller: Mutex::new(None),
        })
    }

    /// Wakes the streams after a revocation this replica committed.
    pub fn committed(&self) {
        self.last.send_modify(|_| {});
    }

    /// A receiver that wakes when the counter moves, with the poller running
    /// (started by the first subscriber, and again after the last one left).
    pub fn subscribe(self: &Arc<Self>) -> watch::Receiver<u64> {
        let changes = self.last.subscribe();
        let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        if poller.as_ref().is_none_or(|task| task.is_finished()) {
            let feed = Arc::downgrade(self);
            *poller = Some(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(POLL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(feed) = feed.upgrade() else { return };
                    if feed.last.receiver_count() == 0 {
                        return;
                    }
                    match feed.store.last_revocation().await {
                        Ok(seq) => {
                            feed.last.send_if_modified(|last| {
                                let moved = seq != *last;
                                *last = seq;
                                moved
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reading the revocation counter failed")
                        }
                    }
                }
            }));
        }
        changes
    }

    /// `WatchRevocations` from cursor `after`, for tokens that live
    /// `access_ttl`: first what is after the cursor, then each change of the
    /// counter; a heartbeat after a quiet [`HEARTBEAT`]; the end when the
    /// server drains.
    pub fn watch(
        self: Arc<Self>,
        after: u64,
        access_ttl: Duration,
    ) -> impl Stream<Item = Result<WatchRevocationsResponse, Status>> + Send + 'static {
        // A session's access tokens were all issued before it was revoked,
        // so none outlives `revoked_at + access_ttl`: older revocations no
        // longer matter (a minute more, for clocks that disagree).
        let relevant = i64::try_from(access_ttl.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(60_000);
        let access_ttl = i64::try_from(access_ttl.as_secs()).unwrap_or(i64::MAX);
        let changes = self.subscribe();
        // The cursor, the counter's changes, and whether a message is due
        // without waiting (the first one, or the rest of a full batch).
        let state = Some((after, changes, true));
        futures_util::stream::unfold(state, move |state| {
            let feed = Arc::clone(&self);
            async move {
                let (mut cursor, mut changes, mut due) = state?;
                loop {
                    // Wait for the counter to move, unless a message is due;
                    // after a quiet HEARTBEAT, say so, so that the subscriber
                    // can tell a quiet feed from a dead connection.
                    if !due {
                        let changed = tokio::select! {
                            // Draining: end, so that the drain need not wait
                            // for this stream; the subscriber follows
                            // another replica from its cursor.
                            _ = feed.draining.cancelled() => return None,
                            changed = tokio::time::timeout(HEARTBEAT, changes.changed()) => changed,
                        };
                        match changed {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return None,
                            Err(_) => {
                                let beat = WatchRevocationsResponse {
                                    revocations: Vec::new(),
                                    cursor,
                                };
                                return Some((Ok(beat), Some((cursor, changes, due))));
                            }
                        }
                    }
                    let since = now_millis().saturating_sub(relevant);
                    let rows = match feed.store.revocations_after(cursor, since, BATCH).await {
                        Ok(rows) => rows,
                        Err(error) => return Some((Err(store_status(error)), None)),
                    };
                    let was_due = std::mem::replace(&mut due, rows.len() as u32 >= BATCH);
                    if rows.is_empty() && !was_due {
                        continue;
                    }
                    if let Some((_, seq, _)) = rows.last() {
                        cursor = *seq;
                    }
                    let revocations = rows
                        .into_iter()
                        .map(|(session_id, _, revoked_at)| Revocation {
                            session_id,
                            expires_at: (revoked_at / 1000)
                                .saturating_add(access_ttl)
                                .saturating_add(1),
                        })
                        .collect();
                    let message = WatchRevocationsResponse {
                        revocations,
                        cursor,
                    };
                    return Some((Ok(message), Some((cursor, changes, due))));
                }
            }
        })
    }
}
