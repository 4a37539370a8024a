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
//!
//! [`ClientMetrics`] are the client-side families (`grpc_client_*`), which the
//! layer of generated clients records into.

pub(crate) mod body;
pub(crate) mod codes;
mod endpoint;
mod layer;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

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
        let families = Families::new(Side::Server, extra)?;
        families.register(&registry)?;
        let services = services
            .iter()
            .map(|policy| families.bind(policy))
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

    /// The handles of the method at `index` in the policy.
    pub(crate) fn method(&self, index: usize) -> &MethodMetrics {
        &self.methods[index]
    }
}

/// Which side of calls a set of metric families describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `grpc_server_*`: calls this process serves.
    Server,
    /// `grpc_client_*`: calls this process makes.
    Client,
}

/// The five go-grpc-prometheus metric families of one side.
#[derive(Clone, Debug)]
struct Families {
    /// Annotation label keys every sample carries after the standard ones.
    extra: Vec<&'static str>,
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
}

impl Families {
    /// The families of `side`, with go-grpc-prometheus's names and help texts.
    fn new(side: Side, extra: Vec<&'static str>) -> Result<Self, prometheus::Error> {
        let names = |with_code: bool| {
            let mut names = vec!["grpc_type", "grpc_service", "grpc_method"];
            if with_code {
                names.push("grpc_code");
            }
            names.extend(&extra);
            names
        };
        let help = match side {
            Side::Server => [
                (
                    "grpc_server_started_total",
                    "Total number of RPCs started on the server.",
                ),
                (
                    "grpc_server_handled_total",
                    "Total number of RPCs completed on the server, regardless of success or failure.",
                ),
                (
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                ),
                (
                    "grpc_server_msg_received_total",
                    "Total number of RPC stream messages received on the server.",
                ),
                (
                    "grpc_server_msg_sent_total",
                    "Total number of gRPC stream messages sent by the server.",
                ),
            ],
            Side::Client => [
                (
                    "grpc_client_started_total",
                    "Total number of RPCs started on the client.",
                ),
                (
                    "grpc_client_handled_total",
                    "Total number of RPCs completed by the client, regardless of success or failure.",
                ),
                (
                    "grpc_client_handling_seconds",
                    "Histogram of response latency (seconds) of the gRPC until it is finished by the application.",
                ),
                (
                    "grpc_client_msg_received_total",
                    "Total number of RPC stream messages received by the client.",
                ),
                (
                    "grpc_client_msg_sent_total",
                    "Total number of gRPC stream messages sent by the client.",
                ),
            ],
        };
        let [started, handled, handling, msg_received, msg_sent] = help;
        Ok(Families {
            started: IntCounterVec::new(Opts::new(started.0, started.1), &names(false))?,
            handled: IntCounterVec::new(Opts::new(handled.0, handled.1), &names(true))?,
            handling: HistogramVec::new(HistogramOpts::new(handling.0, handling.1), &names(false))?,
            msg_received: IntCounterVec::new(
                Opts::new(msg_received.0, msg_received.1),
                &names(false),
            )?,
            msg_sent: IntCounterVec::new(Opts::new(msg_sent.0, msg_sent.1), &names(false))?,
            extra,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.started.clone()))?;
        registry.register(Box::new(self.handled.clone()))?;
        registry.register(Box::new(self.handling.clone()))?;
        registry.register(Box::new(self.msg_received.clone()))?;
        registry.register(Box::new(self.msg_sent.clone()))?;
        Ok(())
    }

    /// Binds (and zeroes, for every code) the handles of `policy`'s methods.
    fn bind(&self, policy: &'static ServicePolicy) -> Arc<ServiceMetrics> {
        let methods = policy
            .methods
            .iter()
            .map(|method| {
                let mut values = label_values(policy, method, &self.extra);
                let started = self.started.with_label_values(&values);
                let handling = self.handling.with_label_values(&values);
                let msg_received = self.msg_received.with_label_values(&values);
                let msg_sent = self.msg_sent.with_label_values(&values);
                values.insert(3, "");
                let handled = std::array::from_fn(|code| {
                    values[3] = code_name(tonic::Code::from_i32(code as i32));
                    self.handled.with_label_values(&values)
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
    }
}

/// Keel's client metrics, the go-grpc-prometheus client families:
///
/// | metric | type | labels |
/// |---|---|---|
/// | `grpc_client_started_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_client_handled_total` | counter | the same and `grpc_code` |
/// | `grpc_client_handling_seconds` | histogram | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_client_msg_received_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_client_msg_sent_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
///
/// The services called are not known up front: a service's handles are bound
/// (and its series zeroed) the first time a client of it is built, then
/// shared by every later client of it, so a call only increments pre-bound
/// atomics. Annotation labels are the server's business and are not added.
/// Cheap to clone; register it once per registry.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    families: Arc<Families>,
    bound: Arc<Mutex<Vec<Arc<ServiceMetrics>>>>,
}

impl ClientMetrics {
    /// Registers the client families in `registry` (typically the one of the
    /// server's [`Metrics`], so one `/metrics` shows both sides).
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let families = Families::new(Side::Client, Vec::new())?;
        families.register(registry)?;
        Ok(ClientMetrics {
            families: Arc::new(families),
            bound: Arc::default(),
        })
    }

    /// The handles of calls to `policy`'s methods, bound on first use.
    pub fn service(&self, policy: &'static ServicePolicy) -> Arc<ServiceMetrics> {
        let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(service) = bound.iter().find(|s| s.policy == policy) {
            return service.clone();
        }
        let service = self.families.bind(policy);
        bound.push(service.clone());
        service
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
