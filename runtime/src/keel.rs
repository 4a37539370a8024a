//! [`Keel`]: what generated code needs at run time, built once from config.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tower::Layer;
use tower::layer::util::Stack;

use crate::Error;
use crate::auth::{AuthLayer, AuthService, Verifier};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsLayer, MetricsService};
use crate::policy::ServicePolicy;

/// A generated server wrapped in Keel's layers: metrics outside, auth inside,
/// so rejected calls are counted too.
pub type KeelService<S> = MetricsService<AuthService<S>>;

/// The layer that makes a [`KeelService`].
pub type KeelLayer = Stack<AuthLayer, MetricsLayer>;

/// The shared runtime of a process's Keel services: the token verifier and
/// the metrics of every service it serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keel {
    verifier: Arc<Verifier>,
    metrics: Metrics,
}

impl Keel {
    /// Builds the runtime for `services` (the generated `*_POLICY` tables of
    /// every service this process serves) from `config`.
    pub fn new(config: &Config, services: &[&'static ServicePolicy]) -> Result<Self, Error> {
        Ok(Keel {
            verifier: Arc::new(Verifier::from_config(&config.auth)?),
            metrics: Metrics::new(services)?,
        })
    }

    /// Assembles a runtime from parts built elsewhere (a shared registry, a
    /// custom verifier).
    pub fn from_parts(verifier: Arc<Verifier>, metrics: Metrics) -> Self {
        Keel { verifier, metrics }
    }

    /// The layer applying `policy`: metrics, then auth.
    pub fn layer(&self, policy: &'static ServicePolicy) -> Result<KeelLayer, Error> {
        let service = self
            .metrics
            .service(policy)
            .ok_or(Error::UndeclaredService(policy.name))?;
        Ok(Stack::new(
            AuthLayer::new(policy, self.verifier.clone()),
            MetricsLayer::new(service),
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

    /// Serves `router` on `config.server.addr`, and the metrics on
    /// `config.metrics.addr` when enabled, until Ctrl-C or SIGTERM.
    pub async fn serve(
        &self,
        config: &Config,
        router: tonic::transport::server::Router,
    ) -> Result<(), Error> {
        let grpc = bind("grpc", config.server.addr).await?;
        let metrics = if config.metrics.enabled {
            Some(bind("metrics", config.metrics.addr).await?)
        } else {
            None
        };
        self.serve_with(router, grpc, metrics, shutdown_signal())
            .await
    }

    /// Serves on listeners bound by the caller until `shutdown` completes.
    pub async fn serve_with(
        &self,
        router: tonic::transport::server::Router,
        grpc: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics_task = metrics.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics at /metrics");
            let app = crate::metrics::router(self.metrics.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            })
        });
        tracing::info!(addr = ?grpc.local_addr().ok(), "serving gRPC");
        let served = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), shutdown)
            .await;
        let _ = stop_tx.send(true);
        if let Some(task) = metrics_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(Error::Serve {
                        what: "metrics",
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    return Err(Error::Serve {
                        what: "metrics",
                        source: Box::new(e),
                    });
                }
            }
        }
        served.map_err(|e| Error::Serve {
            what: "grpc",
            source: Box::new(e),
        })
    }
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
