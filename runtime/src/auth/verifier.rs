//! JWT verification with pinned algorithms and a bounded cache of verified tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use quick_cache::sync::Cache;

use super::{AuthError, Claims};
use crate::config::{Algorithm, AuthConfig};

/// Why a [`Verifier`] could not be built from configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configured key does not parse for the configured algorithm.
    #[error("{key}: not a valid {algorithm:?} verification key: {reason}")]
    BadKey {
        /// The configuration key that holds the key.
        key: &'static str,
        /// The configured algorithm.
        algorithm: Algorithm,
        /// What the parser said.
        reason: String,
    },
    /// The configured key file could not be read.
    #[error("auth.public_key_file: cannot read {path}: {source}")]
    KeyFile {
        /// The configured path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No key is configured for the algorithm.
    #[error("auth: no verification key configured for {0:?}")]
    MissingKey(Algorithm),
}

/// Verifies bearer tokens: signature with the configured key and algorithm
/// (never the one the token names), `exp`/`nbf` with leeway, `iss`/`aud` when
/// configured, and `token_use == "access"`.
///
/// Verified tokens are kept in a bounded cache, keyed by the whole token and
/// dropped from use once the token's `exp` has passed, so repeated calls with
/// the same token cost one hash lookup.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    cache: Option<Cache<String, Arc<Claims>>>,
    max_token_bytes: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("cache", &self.cache.as_ref().map(|c| c.capacity()))
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier from the `auth` section of the configuration.
    pub fn from_config(config: &AuthConfig) -> Result<Self, SetupError> {
        let algorithm = config.algorithm;
        let bad_key = |key, e: jsonwebtoken::errors::Error| SetupError::BadKey {
            key,
            algorithm,
            reason: e.to_string(),
        };
        let key = if algorithm.is_hmac() {
            let secret = config
                .hmac_secret
                .as_ref()
                .ok_or(SetupError::MissingKey(algorithm))?;
            DecodingKey::from_secret(secret.expose().as_bytes())
        } else {
            let (name, pem) = match (&config.public_key_pem, &config.public_key_file) {
                (Some(pem), _) => ("auth.public_key_pem", pem.clone()),
                (None, Some(path)) => (
                    "auth.public_key_file",
                    std::fs::read_to_string(path).map_err(|source| SetupError::KeyFile {
                        path: path.display().to_string(),
                        source,
                    })?,
                ),
                (None, None) => return Err(SetupError::MissingKey(algorithm)),
            };
            let pem = pem.as_bytes();
            match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                _ => DecodingKey::from_rsa_pem(pem),
            }
            .map_err(|e| bad_key(name, e))?
        };

        let mut validation = Validation::new(algorithm.to_jsonwebtoken());
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        Ok(Verifier {
            key,
            validation,
            cache: (config.cache_capacity > 0).then(|| Cache::new(config.cache_capacity)),
            max_token_bytes: config.max_token_bytes,
        })
    }

    /// Reads the bearer token from `authorization` and verifies it.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Claims>, AuthError> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = values.next().ok_or(AuthError::MissingToken)?;
        if values.next().is_some() {
            return Err(AuthError::MalformedHeader);
        }
        if value.len() > self.max_token_bytes + "Bearer ".len() {
            return Err(AuthError::TooLarge);
        }
        let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::NotBearer),
        };
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        self.verify(token)
    }

    /// Verifies one token, answering from the cache when it can.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let now = now_secs();
        if let Some(cache) = &self.cache
            && let Some(claims) = cache.get(token)
        {
            if claims.exp > now {
                return Ok(claims);
            }
            cache.remove(token);
        }
        let claims = self.verify_uncached(token)?;
        if let Some(cache) = &self.cache
            && claims.exp > now
        {
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// Full verification, bypassing the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        if data.claims.token_use.as_deref() != Some("access") {
            return Err(AuthError::NotAccessToken);
        }
        Ok(Arc::new(data.claims))
    }

    /// Number of tokens in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => AuthError::Algorithm,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        _ => AuthError::Malformed,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
