//! Serving: one [`Server`] runs a process's Keel services with the standard
//! health and reflection services, `/metrics`, limits from configuration,
//! and a graceful shutdown that loses no accepted call.
//!
//! The gRPC port's connections are Keel's own accept loop over hyper
//! (`serve/connection`): `server.max_connections`, `server.handshake_timeout`
//! (TLS handshake and HTTP/2 preface), `GOAWAY` after `server.idle_timeout`
//! without calls and at `server.max_connection_age`, TCP keepalive, HTTP/2 pings when `server.keepalive_interval`
//! is set (`server.keepalive_timeout`), counted in `keel_server_connections` and
//! `keel_server_connections_closed_total{reason}`; and for each call,
//! `server.request_body_timeout` for its request to arrive (the pipeline's
//! step 6, and REST's body; `keel_server_request_body_timeouts_total`). Each call gets the
//! connection's address and certificates as tonic's server gives them
//! (`Request::remote_addr`, `peer_certs`).
//!
//! Shutdown, on the first SIGINT/SIGTERM:
//!
//! 1. every health status (each service and the server, `""`) turns
//!    `NOT_SERVING` at once, and the server keeps serving for
//!    `server.lame_duck`, so load balancers stop routing to it;
//! 2. it stops accepting: the listening socket closes (new connections are
//!    refused), HTTP/2 `GOAWAY` goes to every connection, health `Watch`
//!    streams end;
//! 3. calls in flight finish, for up to `server.drain_timeout`;
//! 4. what is still running then ends with `UNAVAILABLE`;
//! 5. [`Server::serve`] returns `Ok(())`; the caller flushes telemetry and
//!    exits 0.
//!
//! A second signal at any point exits the process at once.

mod connection;
mod health;
mod probe;
mod rest;
pub use rest::RestError;
mod reflection;
mod signals;
mod web;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::Error;
use crate::Keel;
use crate::config::{Config, TlsKeys};
use connection::{Phases, Port};
use reflection::Reflection;

pub use health::Health;
pub use probe::{probe, probe_local};
use signals::os_signals;
pub use signals::shutdown_on;

/// How long [`Server::serve_on`] waits for connections to close after
/// ending the remaining calls (each connection has a grace of its own, one
/// second, within it).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The listeners a [`Server`] serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// `/metrics`; `None` serves no metrics endpoint.
    pub metrics: Option<TcpListener>,
}

/// Builds and runs a gRPC server; made by [`Keel::server`]. See the
/// [module docs](self) for the shutdown sequence.
pub struct Server {
    keel: Keel,
    config: Config,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    health: Health,
    /// Routes of the HTTP port besides `/metrics`.
    http: axum::Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.names)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Whether it serves `/metrics` (so needs a listener for it).
    #[cfg(feature = "testing")]
    pub(crate) fn metrics_enabled(&self) -> bool {
        self.config.metrics.enabled
    }

    pub(crate) fn new<App>(keel: Keel, config: &Config<App>) -> Self {
        Server {
            keel,
            config: config.keel(),
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptor_sets: Vec::new(),
            health: Health::default(),
            http: axum::Router::new(),
        }
    }

    /// Adds a service: usually a generated, Keel-wrapped one
    /// (`user_v1::user_service(handler, &keel)?`), but any tonic service
    /// works. Its health status is reported under its name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Serves `grpc.reflection.v1` and `v1alpha` (grpcurl needs v1) for the
    /// files of an encoded `FileDescriptorSet`, such as the
    /// `FILE_DESCRIPTOR_SET` that keel-rpc-codegen generates (custom options
    /// included). Call once per set.
    pub fn reflection(mut self, encoded_file_descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded_file_descriptor_set);
        self
    }

    /// The statuses the standard health service (`grpc.health.v1.Health`)
    /// reports. The server sets its own services' and `""` (the whole
    /// server): `SERVING` once it serves, `NOT_SERVING` from the first
    /// shutdown signal on. Other names are the caller's to set, such as a
    /// dependency's readiness; `Watch` of a name nobody set answers
    /// `SERVICE_UNKNOWN` and stays open until it is.
    ///
    /// ```no_run
    /// # async fn run(keel: keel_rpc::Keel, config: keel_rpc::config::Config) -> Result<(), keel_rpc::Error> {
    /// use tonic_health::pb::health_check_response::ServingStatus;
    /// let server = keel.server(&config);
    /// let health = server.health();
    /// tokio::spawn(async move {
    ///     // … once the cache is warm:
    ///     health.set("cache", ServingStatus::Serving);
    /// });
    /// server.serve().await?;
    /// # Ok(()) }
    /// ```
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Adds routes to the service's HTTP port (`metrics.addr`, beside `/metrics`), such as
    /// the auth service's `GET /.well-known/jwks.json`. Served only while `metrics.enabled`.
    ///
    /// ```no_run
    /// # async fn run(keel: keel_rpc::Keel, config: keel_rpc::config::Config) -> Result<(), keel_rpc::Error> {
    /// let about = axum::Router::new().route("/about", axum::routing::get(|| async { "keel" }));
    /// keel.server(&config).http_routes(about).serve().await?;
    /// # Ok(()) }
    /// ```
    pub fn http_routes(mut self, routes: axum::Router) -> Self {
        self.http = self.http.merge(routes);
        self
    }

    /// Serves `document` (a generated `*_OPENAPI` document) at `GET /openapi.json` on the
    /// HTTP port, beside `/metrics`.
    ///
    /// ```no_run
    /// # async fn run(keel: keel_rpc::Keel, config: keel_rpc::config::Config) -> Result<(), keel_rpc::Error> {
    /// # const USER_SERVICE_OPENAPI: &str = "{}";
    /// keel.server(&config).openapi(USER_SERVICE_OPENAPI).serve().await?;
    /// # Ok(()) }
    /// ```
    pub fn openapi(self, document: &'static str) -> Self {
        let route = axum::routing::get(move || async move {
            ([(http::header::CONTENT_TYPE, "application/json")], document)
        });
        self.http_routes(axum::Router::new().route("/openapi.json", route))
    }

    /// Binds `server.addr` (and `metrics.addr` when enabled) and serves until
    /// SIGINT or SIGTERM, then shuts down gracefully. A second signal exits
    /// the process at once.
    pub async fn serve(self) -> Result<(), Error> {
        let grpc = bind("grpc", self.config.server.addr).await?;
        let metrics = match self.config.metrics.enabled {
            true => Some(bind("metrics", self.config.metrics.addr).await?),
            false => None,
        };
        let signals = os_signals()?;
        self.serve_on(Listeners { grpc, metrics }, signals).await
    }

    /// Serves on listeners bound by the caller. The first item of `signals`
    /// starts the graceful shutdown; a second one ends all calls at once
    /// (for [`serve`](Self::serve), the process exits instead).
    pub async fn serve_on(
        self,
        listeners: Listeners,
        signals: impl Stream<Item = ()> + Send + Unpin + 'static,
    ) -> Result<(), Error> {
        let Server {
            keel,
            config,
            mut routes,
            names,
            descriptor_sets,
            health,
            http,
        } = self;
        let settings = &config.server;

        // What runs beside the gRPC server (the key refresher, `/metrics`) stops with it.
        let background = CancellationToken::new();
        // The keys of `auth.jwks_url` before the first call: a failure is a startup error.
        if let Some(remote) = keel.remote_keys() {
            remote.fetch().await?;
            tokio::spawn(remote.clone().run(background.clone()));
        }
        // Revoked sessions from the start; until the feed answers, tokens are
        // as `auth.revocations_when_behind` says.
        if let Some(feed) = keel.revocation_feed() {
            tokio::spawn(feed.clone().run(background.clone()));
        }

        routes.add_service(health.service(config.server.request_body_timeout));
        if !descriptor_sets.is_empty() {
            let reflection = Reflection::new(&descriptor_sets)?;
            routes
                .add_service(reflection.v1())
                .add_service(reflection.v1alpha());
        }

        let phases = Phases {
            draining: CancellationToken::new(),
            deadline: CancellationToken::new(),
            handlers: keel.draining(),
        };
        // Before anything is served: a certificate that does not load fails `serve`.
        // REST routes, if a service has any.
        let rest = rest::routes(keel.services(), &config, keel.metrics())?;
        // gRPC-Web and REST may come over HTTP/1.1: offer it to TLS clients too.
        let http1 = config.http.grpc_web || rest.is_some();
        let alpn = match http1 {
            true => crate::tls::ALPN_GRPC_WEB,
            false => crate::tls::ALPN_GRPC,
        };
        let tls = (settings.tls.as_ref())
            .map(|tls| crate::tls::server_config(tls, &TlsKeys::SERVER, alpn))
            .transpose()?;
        let metrics_tls = (config.metrics.tls.as_ref())
            .map(|tls| crate::tls::server_config(tls, &TlsKeys::METRICS, crate::tls::ALPN_HTTP))
            .transpose()?;
        let grpc_addr = listeners.grpc.local_addr().ok();
        let router = web::wrap(routes.routes().prepare().into_axum_router(), &config.http);
        let rest_service =
            rest.map(|rest| rest::service(rest, router.clone(), &config.http, &names));
        let port = Port::new(
            router,
            rest_service,
            phases.clone(),
            tls,
            settings,
            http1,
            keel.metrics().connections().clone(),
        );
        let grpc = tokio::spawn(port.serve(listeners.grpc));

        let metrics = listeners.metrics.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics");
            let app = crate::metrics::router(keel.metrics().clone()).merge(http);
            let stop = background.clone().cancelled_owned();
            match metrics_tls {
                None => tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }),
                Some(tls) => tokio::spawn(async move {
                    let listener = crate::tls::TlsListener::new(listener, tls)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }),
            }
        });

        set_health(&health, &names, ServingStatus::Serving);
        let tls = settings.tls.is_some();
        tracing::info!(addr = ?grpc_addr, services = ?names, tls, "serving gRPC");

        let result = lifecycle(
            grpc,
            signals,
            &phases,
            &health,
            &names,
            settings.lame_duck,
            settings.drain_timeout,
        )
        .await;
        background.cancel();
        if let Some(metrics) = metrics {
            match metrics.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(serve_error("metrics", e)),
                Err(e) => return Err(serve_error("metrics", e)),
            }
        }
        result
    }
}

impl Keel {
    /// A [`Server`] for this runtime, configured by `config.server` and
    /// `config.metrics`.
    pub fn server<App>(&self, config: &Config<App>) -> Server {
        Server::new(self.clone(), config)
    }
}

/// Runs the shutdown sequence around the serving task; see the module docs.
async fn lifecycle(
    mut grpc: tokio::task::JoinHandle<()>,
    mut signals: impl Stream<Item = ()> + Unpin,
    phases: &Phases,
    health: &Health,
    names: &[&'static str],
    lame_duck: Duration,
    drain_timeout: Duration,
) -> Result<(), Error> {
    let finished =
        |joined: Result<(), tokio::task::JoinError>| joined.map_err(|e| serve_error("grpc", e));
    tokio::select! {
        joined = &mut grpc => return finished(joined),
        _ = signals.next() => {}
    }

    tracing::info!(?lame_duck, "shutdown: NOT_SERVING, lame duck");
    set_health(health, names, ServingStatus::NotServing);
    let aborted = tokio::select! {
        _ = tokio::time::sleep(lame_duck) => false,
        _ = signals.next() => true,
    };

    tracing::info!(?drain_timeout, "shutdown: draining");
    phases.draining.cancel();
    phases.handlers.cancel();
    if !aborted {
        tokio::select! {
            joined = &mut grpc => return finished(joined),
            _ = tokio::time::sleep(drain_timeout) => {}
            _ = signals.next() => {}
        }
    }

    tracing::warn!("shutdown: ending the remaining calls with UNAVAILABLE");
    phases.deadline.cancel();
    match tokio::time::timeout(CLOSE_GRACE, &mut grpc).await {
        Ok(joined) => finished(joined),
        Err(_) => {
            grpc.abort();
            tracing::warn!("shutdown: connections still open after the drain deadline were closed");
            Ok(())
        }
    }
}

fn set_health(health: &Health, names: &[&'static str], status: ServingStatus) {
    health.set("", status);
    for name in names {
        health.set(name, status);
    }
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

fn serve_error(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Serve {
        what,
        source: Box::new(e),
    }
}
