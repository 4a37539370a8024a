//! The example gateway: `gateway.v1.ProfileService`, whose `GetProfile`
//! answers from user-service's `GetUser`, called through user-service's
//! generated Keel client with the caller's own token.
//!
//! It shows what a second Keel service adds: the caller's `traceparent`
//! continues through the gateway's server span, its client span and
//! user-service's server span, so one request is one trace across both
//! services; the caller's identity travels as its bearer token, which both
//! services verify; both sides' metrics (`grpc_server_*`, `grpc_client_*`)
//! land on the gateway's `/metrics`.

mod profiles;

use std::path::Path;

use keel_rpc::config::{Config, Loader, Problems, Section};

pub use profiles::Profiles;

/// Generated from `proto/gateway/v1/gateway.proto` by `cargo xtask gen`.
pub mod gateway_v1 {
    include!("gen/gateway.v1.rs");
}

/// The embedded default configuration (`keel.toml` beside `Cargo.toml`): a
/// production one, with no credential.
pub const DEFAULT_CONFIG: &str = include_str!("../keel.toml");

/// The development credentials (`development.toml`), layered in only when
/// `service.environment = "development"`.
pub const DEVELOPMENT_CONFIG: &str = include_str!("../development.toml");

/// Every service this crate serves, for [`keel_rpc::Keel::new`].
pub const SERVICES: &[&keel_rpc::codegen::ServicePolicy] = &[&gateway_v1::PROFILE_SERVICE_POLICY];

/// The gateway's configuration: Keel's sections and its own `[upstream]`.
pub type Settings = Config<Sections>;

/// The gateway's own sections.
#[derive(Clone, Debug, Section)]
pub struct Sections {
    /// Where the services it calls listen.
    #[config(section)]
    pub upstream: Upstream,
}

/// The `[upstream]` section: where the services the gateway calls listen.
#[derive(Clone, Debug, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct Upstream {
    /// Where user-service is: a URL (one replica), or `dns:///name:port` (every address of
    /// the name a replica, calls balanced over them).
    #[config(default = "http://127.0.0.1:50051")]
    pub user_service: String,
}

impl Upstream {
    fn problems(&self, problems: &mut Problems<'_>) {
        if let Err(e) = keel_rpc::client::check_target(&self.user_service) {
            problems.push("user_service", e.to_string());
        }
    }
}

/// The gateway's configuration layers: [`DEFAULT_CONFIG`], in development
/// [`DEVELOPMENT_CONFIG`], `file` when given, then the process's `KEEL_*`
/// variables; load them with `Settings::from_loader`.
pub fn loader(file: Option<&Path>) -> Loader {
    Loader::service(DEFAULT_CONFIG, DEVELOPMENT_CONFIG, file)
}

/// The gateway's server: `ProfileService` wrapped in Keel's layers, with
/// health, reflection and `/metrics`, calling user-service at `upstream`.
/// The client metrics are registered beside the server's.
pub fn server<A>(
    keel: &keel_rpc::Keel,
    config: &Config<A>,
    upstream: &Upstream,
) -> Result<keel_rpc::Server, keel_rpc::Error> {
    let client = keel_rpc::client::Client::new(config, keel.metrics().registry())?;
    let profiles = Profiles::new(client, upstream)?;
    Ok(keel
        .server(config)
        .add_service(gateway_v1::profile_service(profiles, keel)?)
        .reflection(gateway_v1::FILE_DESCRIPTOR_SET))
}
