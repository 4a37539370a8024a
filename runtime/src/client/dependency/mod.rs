//! What a process knows of each service its generated clients call, shared
//! by every client of it (clones of a [`Client`](super::Client), and the
//! clients derived per request with a caller's token): its retry budget
//! ([`RetryBudget`]) and its breaker ([`Breaker`]). They are what keeps a
//! failing service's outage from being made worse by its callers: retries
//! stop once it fails everything, and calls fail locally until it answers
//! a probe.
//!
//! Kept by service, not by target: the clients of one service in a
//! process call it at one target, and a per-request client knows its
//! service's policy, not where its transport goes.

mod breaker;
mod budget;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use quanta::Instant;
use tonic::Code;

pub(crate) use breaker::Ticket;
use breaker::{Breaker, Refused};
pub(crate) use budget::RetryBudget;

use crate::clock;
use crate::config::{BreakerConfig, RetryBudgetConfig};
use crate::metrics::MetricsError;
use crate::policy::ServicePolicy;

/// The dependencies of one client, by service name.
#[derive(Debug)]
pub(crate) struct Dependencies {
    by_service: Mutex<HashMap<&'static str, Arc<Dependency>>>,
    budget: RetryBudgetConfig,
    breaker: BreakerConfig,
    metrics: DependencyMetrics,
}

/// One service called: its retry budget, its breaker (when on) and their
/// series.
#[derive(Debug)]
pub(crate) struct Dependency {
    name: &'static str,
    pub(crate) budget: RetryBudget,
    breaker: Option<Breaker>,
    /// `keel_client_breaker_rejected_total`, of this service.
    rejected: IntCounter,
    /// `keel_client_breaker_open`, of this service.
    open: IntGauge,
}

impl Dependencies {
    pub(crate) fn new(
        budget: &RetryBudgetConfig,
        breaker: &BreakerConfig,
        metrics: DependencyMetrics,
    ) -> Self {
        Dependencies {
            by_service: Mutex::default(),
            budget: budget.clone(),
            breaker: breaker.clone(),
            metrics,
        }
    }

    /// The dependency of `policy`'s service, made on first use.
    pub(crate) fn of(&self, policy: &'static ServicePolicy) -> Arc<Dependency> {
        let mut by_service = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        (by_service.entry(policy.name))
            .or_insert_with(|| {
                Arc::new(Dependency {
                    name: policy.name,
                    budget: RetryBudget::new(&self.budget),
                    breaker: (self.breaker.enabled)
                        .then(|| Breaker::new(&self.breaker, clock::now())),
                    rejected: self.metrics.rejected.with_label_values(&[policy.name]),
                    open: self.metrics.open.with_label_values(&[policy.name]),
                })
            })
            .clone()
    }
}

impl Dependency {
    /// Whether a call starting at `now` may be sent: what it reports when
    /// it ends, or the status it fails with at once.
    pub(crate) fn admit(&self, now: Instant) -> Result<Option<Ticket>, tonic::Status> {
        let Some(breaker) = &self.breaker else {
            return Ok(None);
        };
        match breaker.admit(now) {
            Ok(ticket) => Ok(Some(ticket)),
            Err(refused) => Err(self.refuse(refused)),
        }
    }

    #[cold]
    #[inline(never)]
    fn refuse(&self, refused: Refused) -> tonic::Status {
        self.rejected.inc();
        tonic::Status::unavailable(format!(
            "{} is failing (most of its recent calls were UNAVAILABLE): calls fail fast for \
             {} ms more, then one is let through to see whether it answers again",
            self.name,
            refused.retry_in.as_millis().max(1)
        ))
    }

    /// A call let through with `ticket` ended with `code`.
    pub(crate) fn ended(&self, ticket: Option<Ticket>, code: Code) {
        if code == Code::Ok {
            self.budget.succeeded();
        }
        let (Some(breaker), Some(ticket)) = (&self.breaker, ticket) else {
            return;
        };
        match breaker.record(ticket, code, clock::now()) {
            None => {}
            Some(true) => {
                self.open.set(1);
                tracing::warn!(
                    target: "keel_rpc::rpc",
                    service = self.name,
                    "calls fail fast: most recent calls of the service were UNAVAILABLE"
                );
            }
            Some(false) => {
                self.open.set(0);
                tracing::info!(
                    target: "keel_rpc::rpc",
                    service = self.name,
                    "the service answers again: calls go through"
                );
            }
        }
    }
}

/// `keel_client_breaker_rejected_total{grpc_service}` and
/// `keel_client_breaker_open{grpc_service}`.
#[derive(Clone, Debug)]
pub(crate) struct DependencyMetrics {
    rejected: IntCounterVec,
    open: IntGaugeVec,
}

impl DependencyMetrics {
    /// The families, not registered anywhere (a client built from parts).
    pub(crate) fn unregistered() -> Self {
        // The names and labels are constants: they cannot be refused.
        let rejected = IntCounterVec::new(
            Opts::new(
                "keel_client_breaker_rejected_total",
                "Calls generated clients failed locally, UNAVAILABLE, because the service was failing.",
            ),
            &["grpc_service"],
        );
        let open = IntGaugeVec::new(
            Opts::new(
                "keel_client_breaker_open",
                "1 while generated clients fail calls of the service fast, else 0.",
            ),
            &["grpc_service"],
        );
        match (rejected, open) {
            (Ok(rejected), Ok(open)) => DependencyMetrics { rejected, open },
            _ => unreachable!("constant metric options are valid"),
        }
    }

    /// The families, registered in `registry`.
    pub(crate) fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.rejected.clone()))?;
        registry.register(Box::new(metrics.open.clone()))?;
        Ok(metrics)
    }
}
