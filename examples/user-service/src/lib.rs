//! The example user service: users with per-method auth and metrics that
//! come from the annotations in `proto/user/v1/user.proto`.
//!
//! Users live in a [`keel_rpc::store::Store`]: a SQLite file by default
//! (`store.url` in `keel.toml`), or PostgreSQL.
//!
//! The binary (`src/main.rs`) serves it and also mints development tokens and
//! calls it with the generated client; the tests drive it over real sockets.

mod audit;
mod users;

pub use audit::{AuditLayer, AuditLog, Entry as AuditEntry};
pub use users::{MIGRATIONS, Users};

/// Generated from `proto/user/v1/user.proto` by `cargo xtask gen`.
pub mod user_v1 {
    include!("gen/user.v1.rs");
}

/// The embedded default configuration (`keel.toml` beside `Cargo.toml`): a
/// production one, with no credential.
pub const DEFAULT_CONFIG: &str = include_str!("../keel.toml");

/// The development credentials (`development.toml`), layered in only when
/// `service.environment = "development"`.
pub const DEVELOPMENT_CONFIG: &str = include_str!("../development.toml");

/// The development HMAC secret of [`DEVELOPMENT_CONFIG`] (for tests).
pub const DEV_SECRET: &str = "keel-dev-secret-do-not-use-in-production";

/// The service's configuration layers: [`DEFAULT_CONFIG`], in development
/// [`DEVELOPMENT_CONFIG`], `file` when given, then the process's `KEEL_*`
/// variables.
pub fn loader(file: Option<&std::path::Path>) -> keel_rpc::config::Loader {
    keel_rpc::config::Loader::service(DEFAULT_CONFIG, DEVELOPMENT_CONFIG, file)
}

/// Every service this crate serves, for [`keel_rpc::Keel::new`].
pub const SERVICES: &[&keel_rpc::codegen::ServicePolicy] = &[&user_v1::USER_SERVICE_POLICY];

/// The service, ready to serve: `UserService` wrapped in Keel's layers
/// (with the audit layer, which logs the audited calls), plus the standard
/// health and reflection services (not wrapped, so public).
pub fn server(
    keel: &keel_rpc::Keel,
    config: &keel_rpc::config::Config,
    users: Users,
) -> Result<keel_rpc::Server, keel_rpc::Error> {
    server_with_audit(keel, config, users, AuditLog::default())
}

/// [`server`], its audit layer recording into `audit`.
pub fn server_with_audit(
    keel: &keel_rpc::Keel,
    config: &keel_rpc::config::Config,
    users: Users,
    audit: AuditLog,
) -> Result<keel_rpc::Server, keel_rpc::Error> {
    let audited = user_v1::user_service_with(users, keel, AuditLayer::new(audit)?)?;
    Ok(keel
        .server(config)
        .add_service(audited)
        .reflection(user_v1::FILE_DESCRIPTOR_SET)
        .openapi(user_v1::USER_SERVICE_OPENAPI))
}
