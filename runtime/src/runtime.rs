//! [`Keel`]: what generated code needs at run time, built once from config.

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::Error;
use crate::auth::{RemoteKeys, RevocationFeed, Verifier};
use crate::config::{Config, TrustCriticality};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineLayer, RedisBuckets, Settings};
use crate::policy::ServicePolicy;

/// The shared runtime of a process's Keel services: the token verifier, the
/// metrics of every service it serves, and the limits from configuration.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keel {
    verifier: Arc<Verifier>,
    metrics: Metrics,
    max_message_bytes: usize,
    /// How long a call's one request message has to arrive
    /// (`server.request_body_timeout`).
    request_body_timeout: Duration,
    /// Whose `keel-criticality` is honoured (`server.trust_criticality`).
    trust_criticality: TrustCriticality,
    /// The keys of `auth.jwks_url`, which [`Keel::server`]'s `serve` fetches and refreshes.
    remote_keys: Option<Arc<RemoteKeys>>,
    /// The services it was built for (their REST routes are served).
    services: Arc<[&'static ServicePolicy]>,
    /// The fleet's rate-limit buckets (`[rate_limit] backend`), if any.
    shared_buckets: Option<Arc<RedisBuckets>>,
    /// The feed of `auth.revocations`, which `serve` follows.
    revocation_feed: Option<Arc<RevocationFeed>>,
    /// Cancelled when a server of this runtime starts draining.
    draining: tokio_util::sync::CancellationToken,
}

impl Keel {
    /// Builds the runtime for `services` (the generated `*_POLICY` tables of
    /// every service this process serves) from `config`.
    pub fn new<App>(
        config: &Config<App>,
        services: &[&'static ServicePolicy],
    ) -> Result<Self, Error> {
        // The per-call clock (quanta's, on the TSC where the CPU allows)
        // calibrates on first use, for up to 200 ms: here, not on a request.
        crate::clock::now();
        if config.service.environment.is_development() {
            tracing::warn!(
                service = %config.service.name,
                "service.environment is \"development\": development credentials may be in use; \
                 never deploy this configuration"
            );
        }
        let verifier = Arc::new(Verifier::from_config(&config.auth)?);
        let metrics =
            Metrics::serving(prometheus::Registry::new(), services, config.http.grpc_web)?;
        let remote_keys = RemoteKeys::new(config, verifier.clone(), metrics.registry())?;
        let shared_buckets = match &config.rate_limit.backend {
            None => None,
            Some(_) => {
                let errors = metrics.rate_limit_backend_errors()?;
                RedisBuckets::new(&config.rate_limit, &config.client.tls, errors)?.map(Arc::new)
            }
        };
        let revocation_feed = match (&config.auth.revocations, verifier.revocations()) {
            (Some(target), Some(revocations)) => {
                // Its own client metrics stay out of the service's registry:
                // the feed's are registered there instead.
                let client = crate::client::Client::new(config, &prometheus::Registry::new())?;
                Some(Arc::new(
                    RevocationFeed::new(
                        target.clone(),
                        client,
                        revocations.clone(),
                        metrics.registry(),
                    )
                    .map_err(crate::metrics::MetricsError::from)?,
                ))
            }
            _ => None,
        };
        Ok(Keel {
            draining: tokio_util::sync::CancellationToken::new(),
            revocation_feed,
            verifier,
            metrics,
            max_message_bytes: config.server.max_message_bytes,
            request_body_timeout: config.server.request_body_timeout,
            trust_criticality: TrustCriticality::resolve(
                config.server.trust_criticality,
                config.service.environment,
            ),
            remote_keys: remote_keys.map(Arc::new),
            services: services.into(),
            shared_buckets,
        })
    }

    /// The services it was built for.
    pub(crate) fn services(&self) -> &[&'static ServicePolicy] {
        &self.services
    }

    /// Assembles a runtime from parts built elsewhere (a shared registry, a
    /// custom verifier).
    pub fn from_parts(verifier: Arc<Verifier>, metrics: Metrics, max_message_bytes: usize) -> Self {
        Keel {
            verifier,
            metrics,
            max_message_bytes,
            request_body_timeout: crate::config::ServerConfig::default().request_body_timeout,
            trust_criticality: TrustCriticality::Peers,
            remote_keys: None,
            shared_buckets: None,
            revocation_feed: None,
            draining: tokio_util::sync::CancellationToken::new(),
            services: Arc::new([]),
        }
    }

    /// The layer putting a server behind the [pipeline](crate::pipeline) of
    /// `policy`'s methods: the server span, metrics (so rejected and
    /// panicking calls are counted), auth, rate and concurrency limits, panic
    /// recovery. Fails when
    /// `policy` is not one of the services this runtime was built for.
    pub fn layer(&self, policy: &'static ServicePolicy) -> Result<PipelineLayer, Error> {
        self.pipeline_layer(policy, false)
    }

    fn pipeline_layer(
        &self,
        policy: &'static ServicePolicy,
        exposes_method: bool,
    ) -> Result<PipelineLayer, Error> {
        let metrics = self
            .metrics
            .service(policy)
            .ok_or(Error::UndeclaredService(policy.name))?;
        Ok(PipelineLayer::new(
            &self.metrics,
            metrics,
            self.verifier.clone(),
            Settings {
                max_message_bytes: self.max_message_bytes,
                request_body_timeout: self.request_body_timeout,
                trust_criticality: self.trust_criticality,
            },
            exposes_method,
            self.shared_buckets.as_ref(),
        ))
    }

    /// Puts a generated tonic server behind the pipeline of `policy`. The
    /// generated `user_service(handler, &keel)` functions call this.
    pub fn wrap<S>(&self, policy: &'static ServicePolicy, server: S) -> Result<Pipeline<S>, Error> {
        Ok(self.layer(policy)?.layer(server))
    }

    /// Puts a generated tonic server behind `layer`, a tower layer of your
    /// own, and both behind the pipeline of `policy`: the layer runs after
    /// the pipeline's own steps (auth, limits, message counting), just before
    /// the server, inside its panic recovery, and finds the call's
    /// [`CalledMethod`](crate::pipeline::CalledMethod) in the request's
    /// extensions, with which an
    /// [`OptionTable`](crate::pipeline::OptionTable) gives the method's own
    /// options. The generated `user_service_with(handler, &keel, layer)`
    /// functions call this. Methods' calls through other pipelines carry no
    /// `CalledMethod`.
    ///
    /// ```no_run
    /// # mod user_v1 { pub static USER_SERVICE_POLICY: keel_rpc::codegen::ServicePolicy =
    /// #   keel_rpc::codegen::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None }; }
    /// # fn run<S>(keel: keel_rpc::Keel, server: S)
    /// # where S: tower::Service<http::Request<keel_rpc::pipeline::CountingBody<tonic::body::Body>>> {
    /// // Any tower layer: here, one that times each call.
    /// let timed = tower::layer::layer_fn(|inner| inner);
    /// let service = keel.wrap_with(&user_v1::USER_SERVICE_POLICY, server, timed);
    /// # }
    /// ```
    pub fn wrap_with<S, L>(
        &self,
        policy: &'static ServicePolicy,
        server: S,
        layer: L,
    ) -> Result<Pipeline<crate::pipeline::Layered<L::Service, S>>, Error>
    where
        L: Layer<S>,
    {
        use tonic::service::LayerExt as _;
        Ok(self
            .pipeline_layer(policy, true)?
            .layer(layer.named_layer(server)))
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Cancelled when a server of this runtime (or of a clone of it) starts
    /// draining, after its lame duck. Calls in flight then get
    /// `server.drain_timeout` to finish; a handler's long-lived streams (a
    /// feed, a watch) should end on it instead, so that the drain does not
    /// wait for them (their clients reconnect to another replica). Once
    /// cancelled it stays so: a runtime serves one server's lifetime.
    ///
    /// ```
    /// # fn run(keel: &keel_rpc::Keel) {
    /// let draining = keel.draining();
    /// tokio::spawn(async move {
    ///     draining.cancelled().await;
    ///     // end the streams this handler serves
    /// });
    /// # }
    /// ```
    pub fn draining(&self) -> tokio_util::sync::CancellationToken {
        self.draining.clone()
    }

    /// The feed of revoked sessions of `auth.revocations`, when it is set.
    pub fn revocation_feed(&self) -> Option<&Arc<RevocationFeed>> {
        self.revocation_feed.as_ref()
    }

    /// The keys of `auth.jwks_url`, when it is set.
    pub fn remote_keys(&self) -> Option<&Arc<RemoteKeys>> {
        self.remote_keys.as_ref()
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
