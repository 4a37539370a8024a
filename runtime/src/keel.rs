//! [`Keel`]: what generated code needs at run time, built once from config.

use std::sync::Arc;

use tower::Layer;
use tower::layer::util::Stack;

use crate::Error;
use crate::auth::{AuthLayer, AuthService, Verifier};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsLayer, MetricsService};
use crate::policy::ServicePolicy;
use crate::recover::{Recover, RecoverLayer};
use crate::telemetry::{TraceLayer, TraceService};

/// A generated server wrapped in Keel's layers, outermost first: tracing
/// (one span per RPC, covering everything below), metrics (so rejected and
/// panicking calls are counted), auth, panic recovery.
pub type KeelService<S> = TraceService<MetricsService<AuthService<Recover<S>>>>;

/// The layer that makes a [`KeelService`].
pub type KeelLayer = Stack<Stack<RecoverLayer, Stack<AuthLayer, MetricsLayer>>, TraceLayer>;

/// The shared runtime of a process's Keel services: the token verifier, the
/// metrics of every service it serves, and the limits from configuration.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keel {
    verifier: Arc<Verifier>,
    metrics: Metrics,
    max_message_bytes: usize,
}

impl Keel {
    /// Builds the runtime for `services` (the generated `*_POLICY` tables of
    /// every service this process serves) from `config`.
    pub fn new(config: &Config, services: &[&'static ServicePolicy]) -> Result<Self, Error> {
        Ok(Keel {
            verifier: Arc::new(Verifier::from_config(&config.auth)?),
            metrics: Metrics::new(services)?,
            max_message_bytes: config.server.max_message_bytes,
        })
    }

    /// Assembles a runtime from parts built elsewhere (a shared registry, a
    /// custom verifier).
    pub fn from_parts(verifier: Arc<Verifier>, metrics: Metrics, max_message_bytes: usize) -> Self {
        Keel {
            verifier,
            metrics,
            max_message_bytes,
        }
    }

    /// The layer applying `policy`.
    pub fn layer(&self, policy: &'static ServicePolicy) -> Result<KeelLayer, Error> {
        let service = self
            .metrics
            .service(policy)
            .ok_or(Error::UndeclaredService(policy.name))?;
        Ok(Stack::new(
            Stack::new(
                RecoverLayer::new(policy),
                Stack::new(
                    AuthLayer::new(policy, self.verifier.clone()),
                    MetricsLayer::new(service).max_message_bytes(self.max_message_bytes),
                ),
            ),
            TraceLayer::new(policy),
        ))
    }

    /// Wraps a generated tonic server in the layer applying `policy`. The
    /// generated `user_service(handler, &keel)` functions call this.
    pub fn wrap<S>(
        &self,
        policy: &'static ServicePolicy,
        server: S,
    ) -> Result<KeelService<S>, Error> {
        Ok(self.layer(policy)?.layer(server))
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The largest message a service accepts or sends (`server.max_message_bytes`).
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }
}
