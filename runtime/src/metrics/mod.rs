//! Prometheus metrics compatible with go-grpc-prometheus, so existing
//! dashboards work unchanged:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `grpc_server_started_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_handled_total` | counter | the same and `grpc_code` (`OK`, `NotFound`, …) |
//! | `grpc_server_handling_seconds` | histogram | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_msg_received_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_msg_sent_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//!
//! Every metric also carries the static labels the proto annotations name.
//! A Prometheus metric has one set of label names, so each metric carries the
//! union of the annotation keys of all services given to [`Metrics::new`]; a
//! method without a key has it empty, which Prometheus treats as absent.
//!
//! Each method's label handles are bound once, at construction, and every
//! series starts at zero (for every code), as go-grpc-prometheus initializes
//! them. [`MetricsLayer`] records a request's code whether it arrives in the
//! response headers (errors, including auth rejections) or in the trailers
//! (OK and streaming responses).

mod body;
mod codes;
mod endpoint;
mod layer;

use std::collections::BTreeSet;
use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

pub use codes::code_name;
pub use endpoint::{CONTENT_TYPE, router};
pub use layer::{MetricsLayer, MetricsService};

use crate::policy::{MethodPolicy, ServicePolicy};

/// Keel's server metrics for a fixed set of services, in a Prometheus registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    services: Vec<Arc<ServiceMetrics>>,
}

/// Pre-bound metric handles of one service's methods.
#[derive(Debug)]
pub struct ServiceMetrics {
    policy: &'static ServicePolicy,
    methods: Box<[MethodMetrics]>,
}

/// Pre-bound metric handles of one method.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    pub(crate) started: IntCounter,
    /// Indexed by gRPC code number (0..=16).
    pub(crate) handled: [IntCounter; 17],
    pub(crate) handling: Histogram,
    pub(crate) msg_received: IntCounter,
    pub(crate) msg_sent: IntCounter,
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The registry refused a metric (for example, a name already registered
    /// with other labels).
    #[error("registering metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The same service was given twice.
    #[error("service {0} given twice")]
    DuplicateService(&'static str),
}

impl Metrics {
    /// Metrics for `services` in a new registry.
    pub fn new(services: &[&'static ServicePolicy]) -> Result<Self, MetricsError> {
        Self::with_registry(Registry::new(), services)
    }

    /// Metrics for `services`, registered in `registry` (which may hold the
    /// application's own metrics too).
    pub fn with_registry(
        registry: Registry,
        services: &[&'static ServicePolicy],
    ) -> Result<Self, MetricsError> {
        for (i, s) in services.iter().enumerate() {
            if services[..i].contains(s) {
                return Err(MetricsError::DuplicateService(s.name));
            }
        }
        let extra: Vec<&'static str> = services
            .iter()
            .flat_map(|s| s.methods.iter())
            .flat_map(|m| m.labels.iter().map(|(k, _)| *k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names = |with_code: bool| {
            let mut names = vec!["grpc_type", "grpc_service", "grpc_method"];
            if with_code {
                names.push("grpc_code");
            }
            names.extend(&extra);
            names
        };
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &names(false),
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &names(true),
        )?;
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &names(false),
        )?;
        let msg_received = IntCounterVec::new(
            Opts::new(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
            ),
            &names(false),
        )?;
        let msg_sent = IntCounterVec::new(
            Opts::new(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
            ),
            &names(false),
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling.clone()))?;
        registry.register(Box::new(msg_received.clone()))?;
        registry.register(Box::new(msg_sent.clone()))?;

        let services = services
            .iter()
            .map(|policy| {
                let methods = policy
                    .methods
                    .iter()
                    .map(|method| {
                        let mut values = label_values(policy, method, &extra);
                        let started = started.with_label_values(&values);
                        let handling = handling.with_label_values(&values);
                        let msg_received = msg_received.with_label_values(&values);
                        let msg_sent = msg_sent.with_label_values(&values);
                        values.insert(3, "");
                        let handled = std::array::from_fn(|code| {
                            values[3] = code_name(tonic::Code::from_i32(code as i32));
                            handled.with_label_values(&values)
                        });
                        MethodMetrics {
                            started,
                            handled,
                            handling,
                            msg_received,
                            msg_sent,
                        }
                    })
                    .collect();
                Arc::new(ServiceMetrics { policy, methods })
            })
            .collect();
        Ok(Metrics { registry, services })
    }

    /// The registry holding the metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The bound metrics of one service, if it was given to [`Metrics::new`].
    pub fn service(&self, policy: &'static ServicePolicy) -> Option<Arc<ServiceMetrics>> {
        self.services.iter().find(|s| s.policy == policy).cloned()
    }

    /// The registry's metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        // Encoding into a Vec only fails for metric families without a type,
        // which the registry never yields.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl ServiceMetrics {
    /// The policy these metrics follow.
    pub fn policy(&self) -> &'static ServicePolicy {
        self.policy
    }
}

/// `grpc_type`, `grpc_service`, `grpc_method`, then one value per extra label.
fn label_values<'a>(
    policy: &'a ServicePolicy,
    method: &'a MethodPolicy,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut values = vec![method.kind.as_str(), policy.name, method.name];
    values.extend(extra.iter().map(|key| {
        method
            .labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| *v)
    }));
    values
}
