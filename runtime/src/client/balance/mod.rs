//! Balancing calls over the replicas of a target, per call: tower's
//! power-of-two-choices [`Balance`] over PeakEWMA loads (as linkerd's), fed
//! by a [`tower::discover`] stream from a resolver ([`discover`]), with
//! Envoy's outlier ejection ([`eject`]).
//!
//! What a call does here, after [`ClientService`](super::ClientService):
//! it goes through a [`Buffer`] (one bounded channel send and a oneshot
//! answer, as a tonic `Channel`'s own buffer) to the task that owns the
//! balancer; the balancer picks two ready replicas at random and compares
//! their loads (a clock read and a locked EWMA decay each, and one atomic
//! load of their health), calls the lesser (PeakEWMA's `Arc` handle, and
//! the replica's health `Arc` in its future), and re-polls that replica's
//! readiness (tower's `ReadyCache`). The replica is a tonic `Channel`: its
//! own buffer and its one HTTP/2 connection. When the answer's headers
//! come, the replica's latency estimate and failure streak are updated (a
//! header lookup of `grpc-status`, an atomic load).

mod discover;
mod eject;
mod metrics;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::Notify;
use tonic::body::Body;
use tower::Service;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;

pub(crate) use metrics::BalanceMetrics;
use metrics::TargetMetrics;

use super::ClientError;
use super::layer::BoxError;
use super::resolve::Resolver;
use crate::clock;
use crate::config::{BalanceConfig, DnsConfig};

/// Calls that may wait for the balancer at once (tonic's channel's bound).
const BUFFER: usize = 1024;

/// The balanced service of one target, cloned by every client of it.
pub(super) type Balanced = Buffer<Request<Body>, GateFuture>;

/// Starts balancing over what `resolver` finds: its driver task, and the
/// balancer's. `target` names it in errors, logs and metrics.
pub(super) fn start(
    resolver: Resolver,
    target: String,
    balance: &BalanceConfig,
    dns: &DnsConfig,
    metrics: &BalanceMetrics,
) -> Result<Balanced, ClientError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ClientError::NoRuntime(target));
    }
    let shared = Arc::new(Shared {
        metrics: metrics.target(&target),
        target,
        nudge: Notify::new(),
        base: clock::now(),
        size: AtomicUsize::new(0),
        ejected: AtomicUsize::new(0),
        consecutive_failures: balance.consecutive_failures,
        base_ejection: balance.base_ejection,
        max_ejection: balance.max_ejection,
        max_ejection_percent: balance.max_ejection_percent.min(50) as usize,
        decay_ns: balance.latency_decay.as_nanos() as f64,
        avoid_ns: u64::try_from(balance.avoid_after_failure.as_nanos()).unwrap_or(u64::MAX),
        failure: Mutex::new(None),
    });
    let (updates, received) = tokio::sync::mpsc::unbounded_channel();
    let gate = Gate {
        balance: Balance::new(discover::Changes { updates: received }),
        shared: shared.clone(),
        refusal: None,
    };
    let schedule = discover::Schedule {
        refresh: dns.refresh,
        min_refresh: dns.min_refresh,
    };
    tokio::spawn(discover::drive(resolver, shared, updates, schedule));
    Ok(Buffer::new(gate, BUFFER))
}

/// What a target's driver, replicas and balancer share.
struct Shared {
    /// The target as given (`dns:///users:50051`), for errors, logs and
    /// the metrics' `target` label.
    target: String,
    metrics: TargetMetrics,
    /// Asks the driver to resolve again soon.
    nudge: Notify,
    /// What [`now_ns`](Self::now_ns) counts from.
    base: quanta::Instant,
    /// Replicas in the set, ejected ones included.
    size: AtomicUsize,
    ejected: AtomicUsize,
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejection_percent: usize,
    /// `client.balance.latency_decay`, for PeakEWMA.
    decay_ns: f64,
    /// `client.balance.avoid_after_failure`.
    avoid_ns: u64,
    /// Why there is no replica to call, while the target has never
    /// resolved.
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// Nanoseconds since the target was made, on the call clock.
    fn now_ns(&self) -> u64 {
        u64::try_from(clock::since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// The set now has `size` replicas.
    fn resolved(&self, size: usize) {
        self.size.store(size, Ordering::Release);
        if let Ok(mut failure) = self.failure.lock() {
            *failure = None;
        }
        self.gauges();
    }

    /// The target could not be resolved, and has no replica.
    fn fail(&self, why: String) {
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some(why);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|failure| failure.clone())
    }

    fn gauges(&self) {
        let ejected = self.ejected.load(Ordering::Acquire);
        let size = self.size();
        self.metrics.ejected.set(ejected as i64);
        self.metrics.ready.set(size.saturating_sub(ejected) as i64);
    }
}

/// The balancer, which answers at once, `UNAVAILABLE` naming the target,
/// while the target has no replica because resolving it failed (tower's
/// balancer would make the call wait for one).
pub(super) struct Gate {
    balance: Balance<discover::Changes, Request<Body>>,
    shared: Arc<Shared>,
    /// Why the call made next is refused.
    refusal: Option<String>,
}

impl Service<Request<Body>> for Gate {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = GateFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.balance.poll_ready(cx) {
            Poll::Ready(ready) => {
                self.refusal = None;
                Poll::Ready(ready)
            }
            // No replica yet: wait, unless resolving failed.
            Poll::Pending => match self.balance.is_empty() {
                true => match self.shared.failure() {
                    Some(why) => {
                        self.refusal = Some(why);
                        Poll::Ready(Ok(()))
                    }
                    None => Poll::Pending,
                },
                false => Poll::Pending,
            },
        }
    }

    fn call(&mut self, request: Request<Body>) -> GateFuture {
        match self.refusal.take() {
            Some(why) => GateFuture::Refused {
                status: Some(tonic::Status::unavailable(why)),
            },
            None => GateFuture::Called {
                inner: self.balance.call(request),
            },
        }
    }
}

type BalanceFuture = <Balance<discover::Changes, Request<Body>> as Service<Request<Body>>>::Future;

pin_project_lite::pin_project! {
    /// A call through [`Gate`].
    #[project = GateProjection]
    pub(crate) enum GateFuture {
        /// Sent to a replica.
        Called { #[pin] inner: BalanceFuture },
        /// Refused at once.
        Refused { status: Option<tonic::Status> },
    }
}

impl std::future::Future for GateFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateProjection::Called { inner } => inner.poll(cx),
            GateProjection::Refused { status } => {
                Poll::Ready(Err(Box::new(status.take().unwrap_or_else(|| {
                    tonic::Status::unavailable("polled after completion")
                }))))
            }
        }
    }
}
