use std::net::SocketAddr;

/// Errors of the Keel runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The auth section could not be turned into a verifier.
    #[error(transparent)]
    Auth(#[from] crate::auth::SetupError),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Telemetry could not be set up or flushed.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// `server.tls` or `client.tls` names files that do not make a usable certificate or key.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `auth.jwks_url` could not be set up or fetched at startup.
    #[error(transparent)]
    Jwks(#[from] crate::auth::JwksError),
    /// A generated client could not be built.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The rate-limit backend (`[rate_limit] backend`) could not be set up.
    #[error(transparent)]
    RateLimit(#[from] crate::pipeline::RateBackendError),
    /// A method option of the policy table did not decode as a layer asked.
    #[error(transparent)]
    Option(#[from] crate::pipeline::OptionError),
    /// A service was wrapped that was not given to [`Keel::new`](crate::Keel::new).
    #[error("service {0} was not given to Keel::new, so it has no metrics; add its policy there")]
    UndeclaredService(&'static str),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// What the address is for (`grpc`, `metrics`).
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The descriptors of a service's REST routes do not describe their messages.
    #[error("REST routes: {0}")]
    Rest(#[from] crate::serve::RestError),
    /// A descriptor set given to reflection does not decode.
    #[error("reflection: a file descriptor set does not decode: {0}")]
    Reflection(#[source] prost::DecodeError),
    /// A health probe got no usable answer.
    #[error("health probe of {addr}: {reason}")]
    Probe {
        /// The probed address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// Serving failed.
    #[error("serving {what}: {source}")]
    Serve {
        /// What was being served.
        what: &'static str,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
