//! What the service issues: signed access tokens (JWT) and opaque refresh
//! tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use keel_rpc::config::{Algorithm, AuthConfig};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::auth_v1;

/// Bytes of randomness in a refresh token (256 bits).
pub const REFRESH_TOKEN_BYTES: usize = 32;

/// Length of a refresh token: [`REFRESH_TOKEN_BYTES`] in unpadded base64url.
pub const REFRESH_TOKEN_LEN: usize = 43;

/// Unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `N` random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(bytes)
}

/// A random identifier: 128 bits, base64url (22 characters).
pub fn random_id() -> Result<String, Error> {
    Ok(b64(&random::<16>()?))
}

/// A new refresh token: [`REFRESH_TOKEN_BYTES`] random bytes, base64url.
pub fn new_refresh_token() -> Result<String, Error> {
    Ok(b64(&random::<REFRESH_TOKEN_BYTES>()?))
}

/// A new `RefreshRequest.request_id`: 16 random bytes, base64url (22 characters).
pub fn new_request_id() -> Result<String, Error> {
    Ok(b64(&random::<16>()?))
}

/// Whether `token` has the shape of a refresh token this service issues.
pub fn is_refresh_token_shaped(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the store keeps of a refresh token: its SHA-256, in hex.
pub fn refresh_token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

/// The claims of an access token.
#[derive(Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    sid: &'a str,
    token_use: &'static str,
}

/// A signed access token.
#[derive(Clone, Debug)]
pub struct SignedToken {
    /// The JWT.
    pub token: String,
    /// Its `exp`, Unix seconds.
    pub expires_at: u64,
}

/// Signs access tokens with the `[tokens] signing_kid` key, and publishes
/// the public keys of every `[[auth.keys]]` entry that has a private key.
pub struct Signer {
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: Duration,
    jwks: auth_v1::Jwks,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.header.kid)
            .field("alg", &self.header.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer of `auth` (keys, issuer, audience) with the key `signing_kid`.
    pub fn new(auth: &AuthConfig, signing_kid: &str, ttl: Duration) -> Result<Self, Error> {
        let (Some(issuer), Some(audience)) = (&auth.issuer, &auth.audience) else {
            return Err(Error::Setup(
                "auth.issuer and auth.audience are required".to_owned(),
            ));
        };
        let mut signing = None;
        let mut jwks = auth_v1::Jwks::default();
        for entry in &auth.keys {
            let has_private = entry.hmac_secret.is_some()
                || entry.private_key_pem.is_some()
                || entry.private_key_file.is_some();
            if !has_private {
                continue;
            }
            let key = keel_rpc::auth::encoding_key(entry)?;
            if let Some(jwk) = keel_rpc::auth::public_jwk(&entry.kid, entry.algorithm, &key)? {
                jwks.keys.push(to_proto(&jwk)?);
            }
            if entry.kid == signing_kid {
                signing = Some((entry.algorithm, key));
            }
        }
        let (algorithm, key) = signing.ok_or_else(|| {
            Error::Setup(format!(
                "tokens.signing_kid {signing_kid:?}: no [[auth.keys]] entry with a private key"
            ))
        })?;
        let mut header = Header::new(algorithm.to_jsonwebtoken());
        header.kid = Some(signing_kid.to_owned());
        Ok(Signer {
            header,
            key,
            issuer: issuer.clone(),
            audience: audience.clone(),
            ttl,
            jwks,
        })
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.to_jsonwebtoken() == self.header.alg)
            .unwrap_or_default()
    }

    /// The published public keys.
    pub fn jwks(&self) -> &auth_v1::Jwks {
        &self.jwks
    }

    /// An access token for `sub` with `scope` (space-separated) in session
    /// `sid`, issued at `now` (Unix seconds).
    pub fn sign(&self, sub: &str, scope: &str, sid: &str, now: u64) -> Result<SignedToken, Error> {
        let jti = random_id()?;
        let expires_at = now + self.ttl.as_secs();
        let claims = AccessClaims {
            sub,
            scope,
            iss: &self.issuer,
            aud: &self.audience,
            iat: now,
            nbf: now,
            exp: expires_at,
            jti: &jti,
            sid,
            token_use: "access",
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok(SignedToken { token, expires_at })
    }
}

/// A JWK as the proto message (whose JSON form is the JWK itself).
fn to_proto(jwk: &jsonwebtoken::jwk::Jwk) -> Result<auth_v1::Jwk, Error> {
    let value = serde_json::to_value(jwk).map_err(|e| Error::Setup(e.to_string()))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Ok(auth_v1::Jwk {
        kty: field("kty"),
        kid: field("kid"),
        r#use: field("use"),
        alg: field("alg"),
        n: field("n"),
        e: field("e"),
        crv: field("crv"),
        x: field("x"),
        y: field("y"),
    })
}

/// The JWKS document (JSON text) of a `GetJwks` answer: what
/// `auth.jwks` / `auth.jwks_file` of other services take.
pub fn jwks_json(jwks: &auth_v1::Jwks) -> String {
    let keys: Vec<serde_json::Value> = jwks
        .keys
        .iter()
        .map(|key| {
            let mut object = serde_json::Map::new();
            for (name, value) in [
                ("kty", &key.kty),
                ("kid", &key.kid),
                ("use", &key.r#use),
                ("alg", &key.alg),
                ("n", &key.n),
                ("e", &key.e),
                ("crv", &key.crv),
                ("x", &key.x),
                ("y", &key.y),
            ] {
                if !value.is_empty() {
                    object.insert(name.to_owned(), serde_json::Value::String(value.clone()));
                }
            }
            serde_json::Value::Object(object)
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_256_random_bits_in_base64url() {
        let a = new_refresh_token().unwrap();
        let b = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), REFRESH_TOKEN_LEN);
        assert!(is_refresh_token_shaped(&a));
        assert!(!is_refresh_token_shaped(&a[1..]));
        assert!(!is_refresh_token_shaped(&format!("{}=", &a[1..])));
    }

    #[test]
    fn only_the_hash_is_kept() {
        let hash = refresh_token_hash("abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
