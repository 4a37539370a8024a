//! Keel's runtime: what a Keel service links against.
//!
//! `keel-rpc-codegen` turns annotated `.proto` files into tonic servers plus a
//! static [`ServicePolicy`](codegen::ServicePolicy) per service. At run time:
//!
//! - [`config`] loads the typed configuration (defaults < TOML file <
//!   `KEEL_…` environment), rejecting bad values with their key;
//! - [`telemetry::init`] sets up logs (human or JSON, with trace ids) and
//!   OpenTelemetry tracing exported over OTLP;
//! - [`Keel::new`] builds the shared runtime from it: the JWT [`Verifier`]
//!   and the Prometheus [`Metrics`] of every served service;
//! - the generated `user_service(handler, &keel)` puts the tonic server
//!   behind the [`pipeline`] of per-method steps its policy asks for (the
//!   module lists them, in order), so the handler only ever sees calls that
//!   passed them, and can read the caller with [`RequestExt::claims`];
//! - the generated `connect_user_service(channel, &client)` wraps the tonic
//!   client in Keel's [`client`] layer: bearer token from a
//!   [`TokenSource`](auth::TokenSource), trace-context injection, a default
//!   deadline and the `grpc_client_*` metrics;
//! - [`Keel::server`] serves them with health, reflection and `/metrics`,
//!   and shuts down gracefully on SIGINT/SIGTERM (lame duck, then drain).
//!
//! ```no_run
//! # mod user_v1 { pub static USER_SERVICE_POLICY: keel_rpc::codegen::ServicePolicy =
//! #   keel_rpc::codegen::ServicePolicy { name: "user.v1.UserService", methods: &[], route: |_| None }; }
//! # async fn run() -> Result<(), keel_rpc::Error> {
//! let config: keel_rpc::config::Config = keel_rpc::config::Config::load("", None)?;
//! let mut telemetry = keel_rpc::telemetry::init(&config)?;
//! let keel = keel_rpc::Keel::new(&config, &[&user_v1::USER_SERVICE_POLICY])?;
//! keel.server(&config)
//!     // .add_service(user_v1::user_service(MyUsers::default(), &keel)?)
//!     // .reflection(user_v1::FILE_DESCRIPTOR_SET)
//!     .serve()
//!     .await?;
//! telemetry.shutdown().await?; // export the spans still queued
//! # Ok(()) }
//! ```

// The code `#[derive(Section)]` writes names `::keel_rpc`, here too.
extern crate self as keel_rpc;

pub mod auth;
pub mod cli;
pub mod client;
mod clock;
pub mod codegen;
pub mod config;
mod error;
pub mod json;
pub mod metrics;
mod observe;
pub mod pipeline;
mod policy;
mod runtime;
pub mod serve;
#[cfg(feature = "store")]
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod validate;
mod wire;

// Deadline propagation lives in `telemetry`, beside the context that carries
// it; users (and the examples) have always found it here.
pub use telemetry::deadline;

pub use auth::{Claims, RequestExt, Verifier};
pub use error::Error;
pub use metrics::Metrics;
pub use pipeline::Pipeline;
pub use runtime::Keel;
pub use serve::Server;
