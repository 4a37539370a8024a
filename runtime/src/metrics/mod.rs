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
//! | `keel_server_rate_limited_total` | counter | `grpc_service`, `grpc_method` (methods with a `rate_limit`) |
//! | `keel_server_request_body_timeouts_total` | counter | `grpc_service`, `grpc_method` (methods taking one request message) |
//! | `keel_server_connections` | gauge | open connections of the gRPC port |
//! | `keel_server_connections_closed_total` | counter | `reason`: `max_connections` (refused), `handshake_timeout`, `idle`, `max_connection_age`, `too_many_pings` |
//!
//! The server's `grpc_server_*` series also carry `protocol`: `grpc`, or
//! `grpc_web` / `rest` for calls that came as gRPC-Web or REST/JSON and were
//! translated on the port (same method, same pipeline, series of their own,
//! so `sum without (protocol)` gives every call of a method).
//!
//! Every metric also carries the static labels the proto annotations name.
//! A Prometheus metric has one set of label names, so each metric carries the
//! union of the annotation keys of all services given to [`Metrics::new`]; a
//! method without a key has it empty, which Prometheus treats as absent.
//!
//! Every method's series start at zero (for every code), as
//! go-grpc-prometheus initializes them. A call updates counts of its own
//! thread, found with no lookup by label and no lock, and a scrape adds up
//! every thread's. The server pipeline records a call's code whether
//! it arrives in the response headers (errors, including auth rejections) or
//! in the trailers (OK and streaming responses).
//!
//! [`ClientMetrics`] are the client-side families (`grpc_client_*`), which the
//! layer of generated clients records into.

mod call;
mod codes;
mod counts;
mod endpoint;
mod protocol;
mod side;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub(crate) use call::CallRecord;
pub use codes::code_name;
pub(crate) use counts::Counts;
use counts::{BOUNDS, ServiceCounts, Total};
pub use endpoint::{CONTENT_TYPE, router};
pub(crate) use protocol::Protocol;
pub(crate) use side::Side;

use crate::policy::{MethodPolicy, ServicePolicy};

/// Keel's server metrics for a fixed set of services, in a Prometheus registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    families: Families,
    /// Calls refused by their method's rate limit (which
    /// `grpc_server_handled_total` counts as `ResourceExhausted` among others).
    rate_limited: MethodCounter,
    /// Calls whose request did not arrive within `server.request_body_timeout`
    /// (which `grpc_server_handled_total` counts as `DeadlineExceeded`, when
    /// they reached the pipeline: REST's are refused before it).
    request_body_timeouts: MethodCounter,
    connections: ConnectionMetrics,
}

/// A counter labelled by `grpc_service` and `grpc_method` for a step only
/// some methods take (a rate limit, a retry policy): only their series exist.
#[derive(Clone, Debug)]
pub(crate) struct MethodCounter(IntCounterVec);

impl MethodCounter {
    fn register(registry: &Registry, name: &str, help: &str) -> Result<Self, prometheus::Error> {
        let vec = IntCounterVec::new(Opts::new(name, help), &["grpc_service", "grpc_method"])?;
        registry.register(Box::new(vec.clone()))?;
        Ok(MethodCounter(vec))
    }

    /// By method index, the counter of each of `policy`'s methods that
    /// `takes` the step (its series made, at zero); `None` for the others.
    pub(crate) fn of(
        &self,
        policy: &ServicePolicy,
        takes: impl Fn(&MethodPolicy) -> bool,
    ) -> Box<[Option<IntCounter>]> {
        (policy.methods.iter())
            .map(|m| takes(m).then(|| self.0.with_label_values(&[policy.name, m.name])))
            .collect()
    }
}

/// Whether a method's calls send one request message (so the time it takes
/// to arrive is bounded by `server.request_body_timeout`).
pub(crate) fn takes_one_message(method: &MethodPolicy) -> bool {
    matches!(
        method.kind,
        crate::policy::MethodKind::Unary | crate::policy::MethodKind::ServerStreaming
    )
}

/// The gRPC port's connections: how many are open, and why the server
/// closed some.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionMetrics {
    open: IntGauge,
    /// Closed as accepted, past `server.max_connections`.
    pub(crate) refused: IntCounter,
    /// No TLS handshake or HTTP/2 preface within `server.handshake_timeout`.
    pub(crate) handshake_timeout: IntCounter,
    /// Sent `GOAWAY` after `server.idle_timeout` without calls.
    pub(crate) idle: IntCounter,
    /// Sent `GOAWAY` at `server.max_connection_age`.
    pub(crate) aged: IntCounter,
    /// Sent `GOAWAY` `ENHANCE_YOUR_CALM` for pinging too often.
    pub(crate) too_many_pings: IntCounter,
}

impl ConnectionMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGauge::new(
            "keel_server_connections",
            "Open connections of the gRPC port.",
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "keel_server_connections_closed_total",
                "Connections of the gRPC port the server closed, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(ConnectionMetrics {
            open,
            refused: closed.with_label_values(&["max_connections"]),
            handshake_timeout: closed.with_label_values(&["handshake_timeout"]),
            idle: closed.with_label_values(&["idle"]),
            aged: closed.with_label_values(&["max_connection_age"]),
            too_many_pings: closed.with_label_values(&["too_many_pings"]),
        })
    }

    /// Counts a connection as open until the guard drops.
    pub(crate) fn open(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// An open connection, counted in `keel_server_connections` until dropped.
pub(crate) struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The counts of one service's calls, which its families report.
#[derive(Debug)]
pub struct ServiceMetrics {
    policy: &'static ServicePolicy,
    counts: ServiceCounts,
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
        Self::serving(registry, services, false)
    }

    /// Metrics for `services`, whose gRPC-Web series exist from the start
    /// when `grpc_web` (`http.grpc_web`) is on; otherwise they appear with
    /// the first gRPC-Web call.
    pub(crate) fn serving(
        registry: Registry,
        services: &[&'static ServicePolicy],
        grpc_web: bool,
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
        let families = Families::new(Side::Server, extra, grpc_web)?;
        for policy in services {
            families.service(policy);
        }
        registry.register(Box::new(families.clone()))?;
        let rate_limited = MethodCounter::register(
            &registry,
            "keel_server_rate_limited_total",
            "Total number of RPCs refused for being over their method's rate limit.",
        )?;
        for policy in services {
            rate_limited.of(policy, |m| m.rate_limit.is_some());
        }
        let request_body_timeouts = MethodCounter::register(
            &registry,
            "keel_server_request_body_timeouts_total",
            "Total number of RPCs whose request did not arrive within server.request_body_timeout.",
        )?;
        for policy in services {
            request_body_timeouts.of(policy, takes_one_message);
        }
        let connections = ConnectionMetrics::register(&registry)?;
        Ok(Metrics {
            registry,
            families,
            rate_limited,
            request_body_timeouts,
            connections,
        })
    }

    /// The metrics of the gRPC port's connections.
    pub(crate) fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// `keel_rate_limit_backend_errors_total`, registered: calls whose
    /// rate limit Redis did not answer (with `[rate_limit] backend`).
    pub(crate) fn rate_limit_backend_errors(&self) -> Result<IntCounter, MetricsError> {
        let counter = IntCounter::new(
            "keel_rate_limit_backend_errors_total",
            "Calls of rate-limited methods whose shared bucket the backend (Redis) did not answer in rate_limit.timeout.",
        )?;
        self.registry().register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    /// By method index, the count of each rate-limited method's calls its
    /// limit refused.
    pub(crate) fn rate_limited(&self, policy: &ServicePolicy) -> Box<[Option<IntCounter>]> {
        self.rate_limited.of(policy, |m| m.rate_limit.is_some())
    }

    /// By method index, the count of each method's calls whose request did
    /// not arrive within `server.request_body_timeout`: the methods taking
    /// one request message (unary and server streaming); `None` for streams
    /// of requests, which are exempt.
    pub(crate) fn request_body_timeouts(
        &self,
        policy: &ServicePolicy,
    ) -> Box<[Option<IntCounter>]> {
        self.request_body_timeouts.of(policy, takes_one_message)
    }

    /// The registry holding the metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics of one service, if it was given to [`Metrics::new`].
    pub fn service(&self, policy: &'static ServicePolicy) -> Option<Arc<ServiceMetrics>> {
        self.families.find(policy)
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

    /// This thread's counts of a method's calls by one protocol, at
    /// [`Protocol::slot`].
    #[inline]
    pub(crate) fn slot(&self, slot: usize) -> &Counts {
        self.counts.slot(slot)
    }

    /// How many slots of counts there are (one per method and protocol).
    pub(crate) fn slots(&self) -> usize {
        self.policy.methods.len() * Protocol::COUNT
    }
}

/// The five go-grpc-prometheus metric families of one side, as one
/// Prometheus collector of the services given to it: every method's series,
/// for every code, exist (at zero) from the moment its service is.
///
/// A server's series also have a `protocol` label: `grpc` for every method,
/// `rest` for each method with `google.api.http` routes, `grpc_web` for
/// every method when gRPC-Web is served. A client's calls are all gRPC, and
/// not labelled so.
#[derive(Clone, Debug)]
struct Families {
    side: Side,
    /// Whether gRPC-Web is served: its series exist from the start.
    grpc_web: bool,
    /// Annotation label keys every sample carries after the standard ones.
    extra: Arc<[&'static str]>,
    /// `started`, `handled`, `handling`, `msg_received`, `msg_sent`.
    descs: Arc<[Desc; 5]>,
    services: Arc<Mutex<Vec<Arc<ServiceMetrics>>>>,
}

impl Families {
    /// The families of `side`, with go-grpc-prometheus's names and help texts.
    fn new(
        side: Side,
        extra: Vec<&'static str>,
        grpc_web: bool,
    ) -> Result<Self, prometheus::Error> {
        let names = |with_code: bool| {
            let mut names = vec!["grpc_type", "grpc_service", "grpc_method"];
            if with_code {
                names.push("grpc_code");
            }
            if side == Side::Server {
                names.push("protocol");
            }
            names.extend(&extra);
            names.into_iter().map(String::from).collect()
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
        let [started, handled, handling, received, sent] = help;
        let desc = |(name, help): (&str, &str), with_code| {
            Desc::new(name.into(), help.into(), names(with_code), HashMap::new())
        };
        let descs = [
            desc(started, false)?,
            desc(handled, true)?,
            desc(handling, false)?,
            desc(received, false)?,
            desc(sent, false)?,
        ];
        Ok(Families {
            side,
            grpc_web,
            extra: extra.into(),
            descs: Arc::new(descs),
            services: Arc::default(),
        })
    }

    /// Whether `method`'s series of `protocol` are shown: a gRPC-Web call
    /// before any came shows them even when not served from the start.
    fn has_series(&self, method: &MethodPolicy, protocol: Protocol, total: &Total) -> bool {
        match protocol {
            Protocol::Grpc => true,
            Protocol::GrpcWeb => self.grpc_web || total.started > 0,
            Protocol::Rest => self.side == Side::Server && !method.http.is_empty(),
        }
    }

    /// The metrics of `policy`'s calls, if they were made.
    fn find(&self, policy: &'static ServicePolicy) -> Option<Arc<ServiceMetrics>> {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.iter().find(|s| s.policy == policy).cloned()
    }

    /// The metrics of `policy`'s calls, made (with every series at zero) the
    /// first time it is asked for.
    fn service(&self, policy: &'static ServicePolicy) -> Arc<ServiceMetrics> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(service) = services.iter().find(|s| s.policy == policy) {
            return service.clone();
        }
        let service = Arc::new(ServiceMetrics {
            policy,
            counts: ServiceCounts::new(policy.methods.len() * Protocol::COUNT),
        });
        services.push(service.clone());
        service
    }
}

impl Collector for Families {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = (*self.descs).clone().map(|desc| {
            let mut family = MetricFamily::default();
            family.set_name(desc.fq_name);
            family.set_help(desc.help);
            family
        });
        let [started, handled, handling, received, sent] = &mut families;
        handling.set_field_type(MetricType::HISTOGRAM);
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for service in services.iter() {
            let policy = service.policy;
            for (index, method) in policy.methods.iter().enumerate() {
                for protocol in Protocol::ALL {
                    let total = service.counts.total(protocol.slot(index));
                    if !self.has_series(method, protocol, &total) {
                        continue;
                    }
                    let mut labels = label_pairs(policy, method, &self.extra);
                    if self.side == Side::Server {
                        labels.push(label_pair("protocol", protocol.as_str()));
                    }
                    started
                        .mut_metric()
                        .push(counter(labels.clone(), total.started));
                    received
                        .mut_metric()
                        .push(counter(labels.clone(), total.msg_received));
                    sent.mut_metric()
                        .push(counter(labels.clone(), total.msg_sent));
                    handling
                        .mut_metric()
                        .push(histogram(labels.clone(), &total));
                    for (code, &count) in total.handled.iter().enumerate() {
                        let mut labels = labels.clone();
                        let name = code_name(tonic::Code::from_i32(code as i32));
                        labels.push(label_pair("grpc_code", name));
                        handled.mut_metric().push(counter(labels, count));
                    }
                }
            }
        }
        families.into()
    }
}

/// A counter sample of `value`, with `labels`.
fn counter(labels: Vec<LabelPair>, value: u64) -> proto::Metric {
    let mut metric = metric(labels);
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric
}

/// The latency histogram of `total`, with `labels`.
fn histogram(labels: Vec<LabelPair>, total: &Total) -> proto::Metric {
    let mut cumulative = 0;
    let buckets = BOUNDS
        .iter()
        .zip(total.buckets)
        .map(|(&bound, count)| {
            cumulative += count;
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(total.buckets.iter().sum());
    histogram.set_sample_sum(total.seconds);
    let mut metric = metric(labels);
    metric.set_histogram(histogram);
    metric
}

/// A sample with `labels`, sorted by name as Prometheus' own metrics have them.
fn metric(mut labels: Vec<LabelPair>) -> proto::Metric {
    labels.sort();
    proto::Metric::from_label(labels)
}

/// The label `name="value"`.
fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.into());
    pair.set_value(value.into());
    pair
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
/// | `keel_client_retries_total` | counter | `grpc_service`, `grpc_method` (methods with a retry policy) |
/// | `keel_client_transparent_retries_total` | counter | `grpc_service`, `grpc_method` (unary methods) |
/// | `keel_client_retries_throttled_total` | counter | `grpc_service`, `grpc_method` (methods with a retry policy) |
///
/// The services called are not known up front: a service's series appear
/// (at zero) the first time a client of it is built, and its counts are
/// shared by every later client of it. Annotation labels are the server's
/// business and are not added. Cheap to clone; register it once per
/// registry.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    families: Families,
    /// `keel_client_retries_total`: attempts after a call's first.
    retries: MethodCounter,
    /// `keel_client_transparent_retries_total`: calls sent again because
    /// no server processed them (gRFC A6's transparent retries).
    transparent: MethodCounter,
    /// `keel_client_retries_throttled_total`: retries not made because the
    /// service's retry budget was spent.
    throttled: MethodCounter,
}

/// The retry counters of one unary method.
#[derive(Clone, Debug)]
pub(crate) struct MethodRetries {
    /// `keel_client_retries_total`, when the method has a retry policy.
    pub(crate) policy: Option<IntCounter>,
    /// `keel_client_transparent_retries_total`.
    pub(crate) transparent: IntCounter,
    /// `keel_client_retries_throttled_total`, when the method has a retry
    /// policy.
    pub(crate) throttled: Option<IntCounter>,
}

impl ClientMetrics {
    /// Registers the client families in `registry` (typically the one of the
    /// server's [`Metrics`], so one `/metrics` shows both sides).
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let families = Families::new(Side::Client, Vec::new(), false)?;
        registry.register(Box::new(families.clone()))?;
        let retries = MethodCounter::register(
            registry,
            "keel_client_retries_total",
            "Total number of attempts generated clients made after a call's first.",
        )?;
        let transparent = MethodCounter::register(
            registry,
            "keel_client_transparent_retries_total",
            "Total number of calls generated clients sent again because no server had processed them.",
        )?;
        let throttled = MethodCounter::register(
            registry,
            "keel_client_retries_throttled_total",
            "Total number of retries generated clients did not make because the service's retry budget was spent.",
        )?;
        Ok(ClientMetrics {
            families,
            retries,
            transparent,
            throttled,
        })
    }

    /// By method index, the retry counters of each of `policy`'s unary
    /// methods (their series made, at zero); `None` for the others.
    pub(crate) fn retries(&self, policy: &'static ServicePolicy) -> Box<[Option<MethodRetries>]> {
        let unary = |m: &MethodPolicy| m.kind == crate::policy::MethodKind::Unary;
        let retried = |m: &MethodPolicy| unary(m) && m.retry.is_some();
        let with_policy = self.retries.of(policy, retried);
        let throttled = self.throttled.of(policy, retried);
        let transparent = self.transparent.of(policy, unary);
        (with_policy
            .into_vec()
            .into_iter()
            .zip(throttled)
            .zip(transparent))
        .map(|((policy, throttled), transparent)| {
            Some(MethodRetries {
                policy,
                transparent: transparent?,
                throttled,
            })
        })
        .collect()
    }

    /// The metrics of calls to `policy`'s methods, made on first use.
    pub fn service(&self, policy: &'static ServicePolicy) -> Arc<ServiceMetrics> {
        self.families.service(policy)
    }
}

/// `grpc_type`, `grpc_service`, `grpc_method`, then one pair per extra
/// label (empty where the method has no such label).
fn label_pairs(policy: &ServicePolicy, method: &MethodPolicy, extra: &[&str]) -> Vec<LabelPair> {
    let mut pairs = vec![
        label_pair("grpc_type", method.kind.as_str()),
        label_pair("grpc_service", policy.name),
        label_pair("grpc_method", method.name),
    ];
    pairs.extend(extra.iter().map(|key| {
        let value = method
            .labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| *v);
        label_pair(key, value)
    }));
    pairs
}
