//! Keel's auth service: credentials, short-lived JWT access tokens and
//! rotating opaque refresh tokens, in a SQLite file (embedded default) or a
//! PostgreSQL database shared by several replicas.
//!
//! It is itself a Keel service, defined in the annotated
//! `proto/keel/v1/auth.proto` (package `keel.auth.v1`):
//!
//! | method | access | what |
//! |---|---|---|
//! | `CreateCredential` | `auth:admin` | username + password (argon2id) + scopes |
//! | `Login` | public, throttled | access token + refresh token (a new session) |
//! | `Refresh` | public | spends the refresh token, returns the next one and a new access token |
//! | `Validate` | public | introspection: signature, expiry, issuer, audience, session not revoked |
//! | `Revoke` | public (the token is the proof) | ends the session of a refresh token |
//! | `RevokeAll` | any token | ends every session of a subject: one's own, or anyone's with `auth:admin` |
//! | `GetJwks` | public | the public keys, as a JWKS, for asymmetric algorithms |
//!
//! Access tokens are accepted by every Keel service's
//! [`keel_rpc::auth::Verifier`]: they carry `sub`, `scope`, `iss`, `aud`, `exp`,
//! `iat`, `nbf`, `jti`, `sid` (the session) and `token_use: "access"`, and a
//! `kid` header naming the `[[auth.keys]]` entry that signed them.
//!
//! Refresh tokens are 256 random bits (base64url), stored only as SHA-256
//! hashes, in families (sessions). A refresh spends the token with a
//! conditional `UPDATE … WHERE spent_at IS NULL` in the transaction that
//! stores its successor, so of concurrent refreshes with one token exactly
//! one succeeds; presenting a spent token again revokes the family.
//!
//! Clients use [`RefreshingTokenSource`], a [`keel_rpc::auth::TokenSource`] that
//! logs in once and refreshes before expiry.
//!
//! The binary (`src/main.rs`) serves it and has client commands (`login`,
//! `create-credential`, `validate`, `jwks`); see the README's quick start.

#![warn(missing_docs)]

mod db;
mod passwords;
mod redis_ledger;
mod revocations;
mod service;
mod settings;
mod throttle;
mod token_source;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

pub use db::{AuthStore, CredentialRow, MIGRATIONS, NewSession, Rotation, SessionState};
pub use passwords::{PasswordError, Passwords};
pub use redis_ledger::RedisLedger;
pub use service::{
    ADMIN_SCOPE, AuthHandler, MAX_PASSWORD_BYTES, MAX_SCOPES, MAX_USERNAME_CHARS,
    MIN_PASSWORD_BYTES, RETRY_AFTER_MS, check_password, check_scopes, check_username,
};
pub use settings::{
    AuthSections, BootstrapConfig, PasswordsConfig, Settings, ThrottleConfig, TokensConfig,
};
pub use throttle::{
    Attempt, FailureKey, FailureLedger, IN_FLIGHT_RETRY_AFTER, LedgerError, Refused, Standing,
    Throttle, ThrottleReason, ThrottleScope, Throttled,
};
pub use token_source::{DEFAULT_REFRESH_MARGIN, RefreshingTokenSource};
pub use tokens::{
    REFRESH_TOKEN_BYTES, REFRESH_TOKEN_LEN, SignedToken, Signer, jwks_json, refresh_token_hash,
};

/// Generated from `proto/keel/v1/auth.proto` by `cargo xtask gen`.
#[allow(missing_docs)]
pub mod auth_v1 {
    include!("gen/keel.auth.v1.rs");
}

/// The embedded default configuration (`keel.toml` beside `Cargo.toml`): a
/// production one, with no credential.
pub const DEFAULT_CONFIG: &str = include_str!("../keel.toml");

/// The development credentials (`development.toml`: a signing key, the
/// bootstrap administrator's password), layered in only when
/// `service.environment = "development"`.
pub const DEVELOPMENT_CONFIG: &str = include_str!("../development.toml");

/// The development HMAC secret of [`DEVELOPMENT_CONFIG`] (shared with the
/// user service's development credentials), for tests.
pub const DEV_SECRET: &str = "keel-dev-secret-do-not-use-in-production";

/// The development password of the bootstrap administrator in
/// [`DEVELOPMENT_CONFIG`], for tests.
pub const DEV_ADMIN_PASSWORD: &str = "keel-dev-admin-password";

/// The service's configuration layers: [`DEFAULT_CONFIG`], in development
/// [`DEVELOPMENT_CONFIG`], `file` when given, then the process's `KEEL_*`
/// variables; load them with `Settings::from_loader`.
pub fn loader(file: Option<&std::path::Path>) -> keel_rpc::config::Loader {
    keel_rpc::config::Loader::service(DEFAULT_CONFIG, DEVELOPMENT_CONFIG, file)
}

/// Every service this crate serves, for [`keel_rpc::Keel::new`].
pub const SERVICES: &[&keel_rpc::codegen::ServicePolicy] = &[&auth_v1::AUTH_SERVICE_POLICY];

/// Where the HTTP port serves the public keys of the asymmetric signing keys,
/// as a JWKS (RFC 7517; the same document as `GetJwks`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How often ended sessions are purged from the store.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Ended sessions are kept this long before they are purged.
pub const PURGE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How often failed logins that no longer count are deleted from the
/// throttle's ledger: its rows then live at most `burst × interval` (2.5 min
/// per username by default) plus this.
pub const THROTTLE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Errors of setting up or running the auth service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] keel_rpc::config::ConfigError),
    /// The Keel runtime could not be set up or serve.
    #[error(transparent)]
    Keel(#[from] keel_rpc::Error),
    /// A key could not be loaded.
    #[error(transparent)]
    Keys(#[from] keel_rpc::auth::SetupError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] keel_rpc::store::StoreError),
    /// Password hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(getrandom::Error),
    /// Signing a token failed.
    #[error("signing a token: {0}")]
    Sign(String),
    /// Something else in the setup is wrong.
    #[error("{0}")]
    Setup(String),
}

/// Everything the service runs on, built from [`Settings`].
#[derive(Clone, Debug)]
pub struct App {
    /// The Keel runtime (verifier, metrics).
    pub keel: keel_rpc::Keel,
    /// The handler.
    pub handler: AuthHandler,
}

impl App {
    /// Connects the store (applying migrations), loads the keys, creates
    /// the bootstrap administrator when absent, and builds the handler.
    pub async fn new(settings: &Settings) -> Result<App, Error> {
        let store = AuthStore::open(&settings.store).await?;
        App::with_store(settings, store).await
    }

    /// Like [`App::new`] on an already open store.
    pub async fn with_store(settings: &Settings, store: AuthStore) -> Result<App, Error> {
        let keel = keel_rpc::Keel::new(settings, SERVICES)?;
        let signer = Signer::new(
            &settings.auth,
            &settings.app.tokens.signing_kid,
            settings.app.tokens.access_ttl,
        )?;
        let passwords = Passwords::new(&settings.app.passwords).await?;
        // Failed logins where every replica counts them: the Redis of the
        // rate limits when there is one, else the store.
        let ledger: Arc<dyn throttle::FailureLedger> =
            match RedisLedger::new(&settings.rate_limit, &settings.client.tls)
                .map_err(|e| Error::Setup(format!("rate_limit.backend: {e}")))?
            {
                Some(redis) => Arc::new(redis),
                None => Arc::new(store.clone()),
            };
        let handler = AuthHandler::new(
            store.clone(),
            signer,
            Arc::clone(keel.verifier()),
            passwords,
            Throttle::new(&settings.app.throttle, ledger),
            settings.app.tokens.clone(),
            keel.draining(),
        );
        handler.bootstrap(&settings.app.bootstrap).await?;
        Ok(App { keel, handler })
    }

    /// The service, ready to serve: `AuthService` wrapped in Keel's layers,
    /// plus the standard health and reflection services (public), and on the
    /// HTTP port `/metrics` and the JWKS at [`JWKS_PATH`] (for verifiers'
    /// `auth.jwks_url`), as `config` says.
    pub fn server<A>(
        &self,
        config: &keel_rpc::config::Config<A>,
    ) -> Result<keel_rpc::Server, keel_rpc::Error> {
        let jwks = jwks_json(self.handler.jwks());
        let document = axum::routing::get(move || {
            let jwks = jwks.clone();
            async move {
                use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
                // Verifiers refresh on their own schedule; a minute of caching
                // in between only delays a rotation they wait for anyway.
                let headers = [
                    (CONTENT_TYPE, "application/json"),
                    (CACHE_CONTROL, "max-age=60"),
                ];
                (headers, jwks)
            }
        });
        Ok(self
            .keel
            .server(config)
            .add_service(auth_v1::auth_service(self.handler.clone(), &self.keel)?)
            .reflection(auth_v1::FILE_DESCRIPTOR_SET)
            .http_routes(axum::Router::new().route(JWKS_PATH, document)))
    }

    /// Purges ended sessions every [`PURGE_INTERVAL`], and sweeps the
    /// throttle's expired failures every [`THROTTLE_SWEEP_INTERVAL`], until
    /// the returned task is aborted. (Every replica does; they do not mind.)
    pub fn spawn_purge(&self) -> tokio::task::JoinHandle<()> {
        let handler = self.handler.clone();
        tokio::spawn(async move {
            let mut sessions = tokio::time::interval(PURGE_INTERVAL);
            let mut failures = tokio::time::interval(THROTTLE_SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = sessions.tick() => {
                        let before = std::time::SystemTime::now()
                            .checked_sub(PURGE_AFTER)
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
                        match handler.store().purge_sessions_ended_before(before).await {
                            Ok(0) => {}
                            Ok(purged) => tracing::info!(purged, "ended sessions purged"),
                            Err(error) => tracing::warn!(%error, "purging ended sessions failed"),
                        }
                    }
                    _ = failures.tick() => match handler.throttle().sweep().await {
                        Ok(0) => {}
                        Ok(swept) => tracing::debug!(swept, "expired login failures swept"),
                        Err(error) => tracing::warn!(%error, "sweeping login failures failed"),
                    },
                }
            }
        })
    }
}
