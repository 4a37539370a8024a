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

use keel::config::{Config, ConfigError, Loader};
use serde::Deserialize;

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

/// Every service this crate serves, for [`keel::Keel::new`].
pub const SERVICES: &[&keel::ServicePolicy] = &[&gateway_v1::PROFILE_SERVICE_POLICY];

/// The `[upstream]` section: where the services the gateway calls listen.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    /// URL of user-service (`KEEL_UPSTREAM__USER_SERVICE`). Default
    /// `http://127.0.0.1:50051`.
    pub user_service: String,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            user_service: "http://127.0.0.1:50051".to_owned(),
        }
    }
}

/// Loads Keel's configuration and `[upstream]` from the embedded defaults,
/// in development [`DEVELOPMENT_CONFIG`], `file` when given, then `KEEL_*`
/// variables, reporting every problem of both at once.
pub fn load_config(file: Option<&Path>) -> Result<(Config, Upstream), ConfigError> {
    let mut loader = Loader::new()
        .defaults_toml(DEFAULT_CONFIG)
        .development_toml(DEVELOPMENT_CONFIG)
        .allow_section("upstream");
    if let Some(file) = file {
        loader = loader.file(file);
    }
    load_with(&loader.env())
}

/// [`load_config`] from a prepared loader (tests give their own
/// environment); the loader must allow the `upstream` section.
pub fn load_with(loader: &Loader) -> Result<(Config, Upstream), ConfigError> {
    let config = loader.load();
    let upstream = loader
        .extract_section::<Upstream>("upstream")
        .and_then(|upstream| {
            match tonic::transport::Endpoint::from_shared(upstream.user_service.clone()) {
                Ok(_) => Ok(upstream),
                Err(e) => Err(ConfigError::new(vec![format!(
                    "upstream.user_service: {:?} is not a URL: {e}",
                    upstream.user_service
                )])),
            }
        });
    match (config, upstream) {
        (Ok(config), Ok(upstream)) => Ok((config, upstream)),
        (config, upstream) => {
            let problems = config.err().into_iter().chain(upstream.err());
            let problems = problems.flat_map(|e| e.problems().to_vec()).collect();
            Err(ConfigError::new(problems))
        }
    }
}

/// The gateway's server: `ProfileService` wrapped in Keel's layers, with
/// health, reflection and `/metrics`, calling user-service at `upstream`.
/// The client metrics are registered beside the server's.
pub fn server(
    keel: &keel::Keel,
    config: &Config,
    upstream: &Upstream,
) -> Result<keel::Server, keel::Error> {
    let client = keel::client::Client::new(config, keel.metrics().registry())?;
    let profiles = Profiles::new(client, upstream)?;
    Ok(keel
        .server(config)
        .add_service(gateway_v1::profile_service(profiles, keel)?)
        .reflection(gateway_v1::FILE_DESCRIPTOR_SET))
}
