//! Outlier ejection, as Envoy's: a replica that fails
//! `client.balance.consecutive_failures` calls in a row (a transport failure
//! or `UNAVAILABLE`) is taken out for `base_ejection` × the number of times
//! it was ejected, never more than `max_ejection_percent` of the set at
//! once; its time over, it is back.
//!
//! Taken out means not ready: the balancer only picks ready replicas, so an
//! ejected one gets no call and is not even compared. Between its first
//! failure and its ejection a replica also loses every choice against one
//! that has not failed for `avoid_after_failure` ([`Score`]): a replica
//! that refuses connections fails fast, which PeakEWMA alone would read as
//! *fast*, and a retry would go back to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tower::load::Load;
use tower::load::completion::{CompleteOnResponse, TrackCompletionFuture};
use tower::load::peak_ewma::{Cost, Handle, PeakEwma};

use super::Shared;
use crate::wire::status_code;

/// PeakEWMA's starting latency estimate of a new replica: none, so that a
/// replica added to a loaded set gets calls at once (an estimate above the
/// others' would decay for many seconds before it got any); its first
/// answer sets the estimate.
const DEFAULT_RTT: Duration = Duration::from_nanos(1);

/// One replica of a balanced target: its connection (a lazy tonic
/// [`Channel`]), its PeakEWMA load, and its health.
pub(super) struct Replica {
    inner: PeakEwma<Channel, CompleteOnResponse>,
    health: Arc<Health>,
    /// While ejected, the end of its ejection (made only then).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("address", &self.health.address)
            .finish_non_exhaustive()
    }
}

impl Replica {
    pub(super) fn new(channel: Channel, address: String, shared: Arc<Shared>) -> Self {
        let decay_ns = shared.decay_ns;
        Replica {
            inner: PeakEwma::new(
                channel,
                DEFAULT_RTT,
                decay_ns,
                CompleteOnResponse::default(),
            ),
            health: Arc::new(Health {
                address,
                shared,
                streak: AtomicU32::new(0),
                failed_at: AtomicU64::new(0),
                ejected: AtomicBool::new(false),
                until: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
            }),
            sleep: None,
        }
    }
}

/// What the balancer compares: a replica that failed lately loses against
/// one that did not, whatever their latencies; else the lower PeakEWMA cost
/// (latency × calls in flight) wins. (Fields compare in order.)
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(super) struct Score {
    failed_lately: bool,
    cost: Cost,
}

impl Load for Replica {
    type Metric = Score;

    fn load(&self) -> Score {
        Score {
            failed_lately: self.health.failed_lately(),
            cost: self.inner.load(),
        }
    }
}

impl Service<Request<Body>> for Replica {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ReplicaFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An ejected replica is not ready until its time is over: the
        // balancer moves it aside and polls it again when the sleep wakes.
        while self.health.ejected.load(Ordering::Acquire) {
            let left = self
                .health
                .until
                .load(Ordering::Acquire)
                .saturating_sub(self.health.shared.now_ns());
            if left == 0 {
                self.sleep = None;
                self.health.restore();
                break;
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_nanos(left))));
            ready!(sleep.as_mut().poll(cx));
            // The sleep is over (tokio's timer and the call clock may
            // differ by a little): look again.
            self.sleep = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> ReplicaFuture {
        ReplicaFuture {
            inner: self.inner.call(request),
            health: self.health.clone(),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Removed from the set (re-resolution) while ejected: it no longer
        // counts against the set's limit.
        if self.health.ejected.swap(false, Ordering::AcqRel) {
            self.health.shared.ejected.fetch_sub(1, Ordering::AcqRel);
            self.health.shared.gauges();
        }
    }
}

pin_project_lite::pin_project! {
    /// A call to one replica, whose outcome the replica's health records.
    pub(super) struct ReplicaFuture {
        #[pin]
        inner: TrackCompletionFuture<
            tonic::transport::channel::ResponseFuture,
            CompleteOnResponse,
            Handle,
        >,
        health: Arc<Health>,
    }
}

impl Future for ReplicaFuture {
    type Output = Result<Response<Body>, tonic::transport::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.inner.poll(cx));
        match &outcome {
            // A status alone, in the headers: the replica refused the call
            // (draining, overloaded). Statuses in trailers are the
            // handler's, not the replica's.
            Ok(response) => match status_code(response.headers()) {
                Some(Code::Unavailable) => this.health.failed(false),
                _ => this.health.succeeded(),
            },
            // The connection failed (refused, reset, GOAWAY'd).
            Err(_) => this.health.failed(true),
        }
        Poll::Ready(outcome)
    }
}

/// One replica's failures and ejection, shared by the replica and its
/// calls in flight.
pub(super) struct Health {
    /// For logs only (metrics are per target).
    address: String,
    shared: Arc<Shared>,
    /// Failures in a row.
    streak: AtomicU32,
    /// When the last failure was ([`Shared::now_ns`]).
    failed_at: AtomicU64,
    ejected: AtomicBool,
    /// When its ejection ends ([`Shared::now_ns`]).
    until: AtomicU64,
    /// Ejections so far, this one included.
    ejections: AtomicU32,
}

impl Health {
    fn succeeded(&self) {
        // Read first: a healthy replica's calls only read the line.
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
    }

    fn failed(&self, connection: bool) {
        let shared = &*self.shared;
        let streak = self
            .streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.failed_at.store(shared.now_ns(), Ordering::Relaxed);
        if connection {
            // The set may have changed (a replica gone, moved): resolve
            // again soon (at most every `client.dns.min_refresh`).
            shared.nudge.notify_one();
        }
        if streak >= shared.consecutive_failures {
            self.eject();
        }
    }

    fn failed_lately(&self) -> bool {
        self.streak.load(Ordering::Relaxed) != 0
            && self
                .shared
                .now_ns()
                .saturating_sub(self.failed_at.load(Ordering::Relaxed))
                < self.shared.avoid_ns
    }

    /// Takes the replica out, unless too many of the set are out already.
    fn eject(&self) {
        let shared = &*self.shared;
        if self.ejected.load(Ordering::Acquire) {
            return;
        }
        let most = shared.size() * shared.max_ejection_percent / 100;
        let room = shared
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            });
        if room.is_err() {
            return;
        }
        let times = self
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let pause = shared
            .base_ejection
            .saturating_mul(times)
            .min(shared.max_ejection);
        let until = shared
            .now_ns()
            .saturating_add(u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX));
        // The end first: a replica seen ejected always has it.
        self.until.store(until, Ordering::Release);
        if self.ejected.swap(true, Ordering::AcqRel) {
            // Another failing call ejected it meanwhile.
            shared.ejected.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.streak.store(0, Ordering::Relaxed);
        shared.gauges();
        tracing::warn!(
            target: "keel_rpc::client",
            client_target = %shared.target,
            replica = %self.address,
            ejection = ?pause,
            "ejecting a replica that failed {} calls in a row",
            shared.consecutive_failures,
        );
    }

    /// Puts the replica back, if it was out.
    fn restore(&self) {
        if self.ejected.swap(false, Ordering::AcqRel) {
            self.streak.store(0, Ordering::Relaxed);
            self.shared.ejected.fetch_sub(1, Ordering::AcqRel);
            self.shared.gauges();
            tracing::info!(
                target: "keel_rpc::client",
                client_target = %self.shared.target,
                replica = %self.address,
                "an ejected replica is back",
            );
        }
    }
}
