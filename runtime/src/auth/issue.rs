//! Minting access tokens that [`Verifier`](super::Verifier) accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::config::AuthConfig;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Only HMAC keys can be taken from the verification config: an
    /// asymmetric setup holds the public key only.
    #[error(
        "minting needs an HMAC algorithm with auth.hmac_secret; {0:?} has only a public key here"
    )]
    NotHmac(crate::config::Algorithm),
    /// Encoding failed.
    #[error("encoding token: {0}")]
    Encode(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    scope: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    token_use: &'static str,
}

/// Mints an access token for `sub` with `scopes`, valid for `ttl`, signed
/// with the configured HMAC secret and carrying the configured `iss`/`aud`.
/// For development and tests; production tokens come from an auth service.
pub fn mint_access_token(
    config: &AuthConfig,
    sub: &str,
    scopes: &[&str],
    ttl: Duration,
) -> Result<String, IssueError> {
    let secret = match &config.hmac_secret {
        Some(secret) if config.algorithm.is_hmac() => secret,
        _ => return Err(IssueError::NotHmac(config.algorithm)),
    };
    sign_access_token(
        config,
        config.algorithm,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
        sub,
        scopes,
        ttl,
    )
}

/// An access token for `sub` with `scopes`, valid for `ttl`, signed with
/// `key` by `algorithm`, carrying `config`'s `iss`/`aud`.
pub(crate) fn sign_access_token(
    config: &AuthConfig,
    algorithm: crate::config::Algorithm,
    key: &EncodingKey,
    sub: &str,
    scopes: &[&str],
    ttl: Duration,
) -> Result<String, IssueError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let claims = AccessClaims {
        sub,
        scope: scopes.join(" "),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
        token_use: "access",
    };
    Ok(jsonwebtoken::encode(
        &Header::new(algorithm.to_jsonwebtoken()),
        &claims,
        key,
    )?)
}
