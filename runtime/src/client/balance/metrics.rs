//! The balancing families: `keel_client_endpoints{target,state}` and
//! `keel_client_resolutions_total{target,result}`. Labelled by target, never
//! by address, so their series stay as many as the targets a process calls.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::metrics::MetricsError;

/// The two families, shared by every target of a [`Client`](crate::client::Client).
#[derive(Clone, Debug)]
pub(crate) struct BalanceMetrics {
    endpoints: IntGaugeVec,
    resolutions: IntCounterVec,
}

impl BalanceMetrics {
    /// The families, not registered anywhere (a client built from parts).
    pub(crate) fn unregistered() -> Self {
        // The names and labels are constants: they cannot be refused.
        let endpoints = IntGaugeVec::new(
            Opts::new(
                "keel_client_endpoints",
                "Replicas of each balanced client target, by state (ready or ejected).",
            ),
            &["target", "state"],
        );
        let resolutions = IntCounterVec::new(
            Opts::new(
                "keel_client_resolutions_total",
                "Resolutions of each balanced client target's replicas, by result (ok or error).",
            ),
            &["target", "result"],
        );
        match (endpoints, resolutions) {
            (Ok(endpoints), Ok(resolutions)) => BalanceMetrics {
                endpoints,
                resolutions,
            },
            _ => unreachable!("constant metric options are valid"),
        }
    }

    /// The families, registered in `registry`.
    pub(crate) fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.endpoints.clone()))?;
        registry.register(Box::new(metrics.resolutions.clone()))?;
        Ok(metrics)
    }

    /// The series of one target, made now (at zero).
    pub(super) fn target(&self, target: &str) -> TargetMetrics {
        TargetMetrics {
            ready: self.endpoints.with_label_values(&[target, "ready"]),
            ejected: self.endpoints.with_label_values(&[target, "ejected"]),
            resolved: self.resolutions.with_label_values(&[target, "ok"]),
            failed: self.resolutions.with_label_values(&[target, "error"]),
        }
    }
}

/// One target's series.
#[derive(Debug)]
pub(super) struct TargetMetrics {
    pub(super) ready: IntGauge,
    pub(super) ejected: IntGauge,
    pub(super) resolved: IntCounter,
    pub(super) failed: IntCounter,
}
