//! Keel's runtime: what a Keel service links against.
//!
//! `keel-codegen` turns annotated `.proto` files into tonic servers plus a
//! static [`ServicePolicy`] per service. At run time:
//!
//! - [`config`] loads the typed configuration (defaults < TOML file <
//!   `KEEL_…` environment), rejecting bad values with their key;
//! - [`telemetry::init`] sets up logs (human or JSON, with trace ids) and
//!   OpenTelemetry tracing exported over OTLP;
//! - [`Keel::new`] builds the shared runtime from it: the JWT [`Verifier`]
//!   and the Prometheus [`Metrics`] of every served service;
//! - the generated `user_service(handler, &keel)` wraps the tonic server in
//!   a [`KeelService`] following the policy: one span per RPC (continuing the
//!   caller's W3C trace context), metrics, auth and panic recovery, so the
//!   handler only ever sees authorized calls, and can read the caller with
//!   [`RequestExt::claims`]. Each concern is also a tower layer of its own
//!   ([`TraceLayer`](telemetry::TraceLayer), [`MetricsLayer`],
//!   [`AuthLayer`], [`RecoverLayer`](recover::RecoverLayer));
//! - the generated `user_service_client(channel, &client)` wraps the tonic
//!   client in Keel's [`client`] layer: bearer token from a
//!   [`TokenSource`](auth::TokenSource), trace-context injection, a default
//!   deadline and the `grpc_client_*` metrics;
//! - [`Keel::server`] serves them with health, reflection and `/metrics`,
//!   and shuts down gracefully on SIGINT/SIGTERM (lame duck, then drain).
//!
//! ```no_run
//! # mod user_v1 { pub static USER_SERVICE_POLICY: keel::ServicePolicy =
//! #   keel::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None }; }
//! # async fn run() -> Result<(), keel::Error> {
//! let config = keel::config::Config::load("", None)?;
//! let mut telemetry = keel::telemetry::init(&config)?;
//! let keel = keel::Keel::new(&config, &[&user_v1::USER_SERVICE_POLICY])?;
//! keel.server(&config)
//!     // .add_service(user_v1::user_service(MyUsers::default(), &keel)?)
//!     // .reflection(user_v1::FILE_DESCRIPTOR_SET)
//!     .serve()
//!     .await?;
//! telemetry.shutdown().await?; // export the spans still queued
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auth;
mod body;
mod call_headers;
pub mod client;
mod clock;
pub mod config;
pub mod deadline;
mod error;
mod keel;
pub mod metrics;
mod policy;
pub mod recover;
pub mod serve;
pub mod service;
#[cfg(feature = "store")]
pub mod store;
pub mod telemetry;
pub mod tls;

pub use auth::{AuthLayer, AuthService, Claims, RequestExt, Verifier};
pub use error::Error;
pub use keel::Keel;
pub use metrics::{Metrics, MetricsLayer, MetricsService};
pub use policy::{Access, MethodKind, MethodPolicy, ServicePolicy};
pub use serve::Server;
pub use service::{KeelBody, KeelCall, KeelFuture, KeelLayer, KeelService};
