//! Keel's runtime: what a Keel service links against.
//!
//! `keel-codegen` turns annotated `.proto` files into tonic servers plus a
//! static [`ServicePolicy`] per service. At run time:
//!
//! - [`config`] loads the typed configuration (defaults < TOML file <
//!   `KEEL_…` environment), rejecting bad values with their key;
//! - [`Keel::new`] builds the shared runtime from it: the JWT [`Verifier`]
//!   and the Prometheus [`Metrics`] of every served service;
//! - the generated `user_service(handler, &keel)` wraps the tonic server in
//!   [`MetricsLayer`] and [`AuthLayer`] following the policy, so the handler
//!   only ever sees authorized calls, and can read the caller with
//!   [`RequestExt::claims`];
//! - [`Keel::serve`] serves gRPC and `/metrics` until a shutdown signal.
//!
//! ```no_run
//! # mod user_v1 { pub static USER_SERVICE_POLICY: keel::ServicePolicy =
//! #   keel::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None }; }
//! # async fn run() -> Result<(), keel::Error> {
//! let config = keel::config::Config::load("", None)?;
//! let keel = keel::Keel::new(&config, &[&user_v1::USER_SERVICE_POLICY])?;
//! // let router = tonic::transport::Server::builder()
//! //     .add_service(user_v1::user_service(MyUsers::default(), &keel)?);
//! // keel.serve(&config, router).await
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod error;
mod keel;
pub mod metrics;
mod policy;

pub use auth::{AuthLayer, AuthService, Claims, RequestExt, Verifier};
pub use error::Error;
pub use keel::{Keel, KeelLayer, KeelService, shutdown_signal};
pub use metrics::{Metrics, MetricsLayer, MetricsService};
pub use policy::{Access, MethodKind, MethodPolicy, ServicePolicy};
