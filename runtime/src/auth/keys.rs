//! Verification keys: the default key, keys selected by `kid`, and JWKS documents.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey};

use super::SetupError;
use crate::config::{Algorithm, AuthConfig, KeyConfig};

/// One verification key with the algorithm it pins.
#[derive(Clone)]
pub(crate) struct Key {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The verification keys of a [`Verifier`](super::Verifier): keys selected by
/// the `kid` header of a token, and an optional default key for tokens
/// without a `kid` or with one that names no key here.
///
/// Built from configuration ([`KeySet::from_config`]) and extended in code
/// ([`KeySet::insert`], [`KeySet::insert_jwks`]).
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: BTreeMap<String, Key>,
    default: Option<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: BTreeMap<&str, Algorithm> = self
            .by_kid
            .iter()
            .map(|(kid, key)| (kid.as_str(), key.algorithm))
            .collect();
        f.debug_struct("KeySet")
            .field("by_kid", &kids)
            .field("default", &self.default.as_ref().map(|k| k.algorithm))
            .finish()
    }
}

impl KeySet {
    /// No keys: every token is rejected until keys are added.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// The keys of the `auth` section: the default key (`auth.algorithm` with
    /// `auth.hmac_secret` / `auth.public_key_*`, when set), every
    /// `[[auth.keys]]` entry and the keys of `auth.jwks` / `auth.jwks_file`.
    pub fn from_config(config: &AuthConfig) -> Result<KeySet, SetupError> {
        let mut keys = KeySet::new();
        keys.default = default_key(config)?;
        for entry in &config.keys {
            let key = decoding_key(entry)?;
            keys.insert(&entry.kid, entry.algorithm, key)?;
        }
        if let Some(jwks) = &config.jwks {
            keys.insert_jwks_json("auth.jwks", jwks)?;
        }
        if let Some(path) = &config.jwks_file {
            let text = read(path, "auth.jwks_file")?;
            keys.insert_jwks_json("auth.jwks_file", &text)?;
        }
        Ok(keys)
    }

    /// Adds a key selected by `kid`. A `kid` may be used once.
    pub fn insert(
        &mut self,
        kid: &str,
        algorithm: Algorithm,
        key: DecodingKey,
    ) -> Result<(), SetupError> {
        if kid.is_empty() {
            return Err(SetupError::BadJwk {
                kid: String::new(),
                reason: "empty kid".to_owned(),
            });
        }
        if self.by_kid.contains_key(kid) {
            return Err(SetupError::DuplicateKid(kid.to_owned()));
        }
        self.by_kid.insert(kid.to_owned(), Key { algorithm, key });
        Ok(())
    }

    /// Sets the default key, used for tokens without a `kid` or whose `kid`
    /// names no other key.
    pub fn set_default(&mut self, algorithm: Algorithm, key: DecodingKey) {
        self.default = Some(Key { algorithm, key });
    }

    /// Adds every key of a JWKS document (see [`KeySet::insert_jwks`]).
    pub fn insert_jwks_json(&mut self, source: &str, json: &str) -> Result<(), SetupError> {
        let jwks: JwkSet = serde_json::from_str(json).map_err(|e| SetupError::Jwks {
            source_name: source.to_owned(),
            reason: e.to_string(),
        })?;
        self.insert_jwks(&jwks)
    }

    /// Adds every key of a JWKS. Each key needs a `kid`; its algorithm is its
    /// `alg`, or for EC and OKP keys the one their curve implies (`ES256`,
    /// `ES384`, `EdDSA`); RSA keys need `alg`. Symmetric (`oct`) keys and keys
    /// whose `use` is not `sig` are rejected.
    pub fn insert_jwks(&mut self, jwks: &JwkSet) -> Result<(), SetupError> {
        for jwk in &jwks.keys {
            let (kid, algorithm, key) = from_jwk(jwk)?;
            self.insert(&kid, algorithm, key)?;
        }
        Ok(())
    }

    /// The key ids, in order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(String::as_str)
    }

    /// Whether there is a default key.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Number of keys, the default key included.
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.default.is_some())
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token with this `kid` header.
    pub(crate) fn select(&self, kid: Option<&str>) -> Option<&Key> {
        kid.and_then(|kid| self.by_kid.get(kid))
            .or(self.default.as_ref())
    }
}

fn read(path: &Path, key: &'static str) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|source| SetupError::KeyFile {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// The default key of the `auth` section, if it has one.
fn default_key(config: &AuthConfig) -> Result<Option<Key>, SetupError> {
    let algorithm = config.algorithm;
    let bad_key = |key, e: jsonwebtoken::errors::Error| SetupError::BadKey {
        key,
        algorithm,
        reason: e.to_string(),
    };
    if algorithm.is_hmac() {
        let Some(secret) = &config.hmac_secret else {
            return Ok(None);
        };
        let key = DecodingKey::from_secret(secret.expose().as_bytes());
        return Ok(Some(Key { algorithm, key }));
    }
    let (name, pem) = match (&config.public_key_pem, &config.public_key_file) {
        (Some(pem), _) => ("auth.public_key_pem", pem.clone()),
        (None, Some(path)) => ("auth.public_key_file", read(path, "auth.public_key_file")?),
        (None, None) => return Ok(None),
    };
    let key = public_pem(algorithm, pem.as_bytes()).map_err(|e| bad_key(name, e))?;
    Ok(Some(Key { algorithm, key }))
}

fn public_pem(algorithm: Algorithm, pem: &[u8]) -> jsonwebtoken::errors::Result<DecodingKey> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
}

/// The signing key of an `[[auth.keys]]` entry that holds a private key (or
/// an HMAC secret), for services that issue tokens.
pub fn encoding_key(entry: &KeyConfig) -> Result<EncodingKey, SetupError> {
    let algorithm = entry.algorithm;
    if algorithm.is_hmac() {
        return Ok(EncodingKey::from_secret(hmac_secret(entry)?));
    }
    let pem = match (&entry.private_key_pem, &entry.private_key_file) {
        (Some(pem), _) => pem.expose().to_owned(),
        (None, Some(path)) => read(path, "auth.keys")?,
        (None, None) => {
            return Err(SetupError::NoPrivateKey {
                kid: entry.kid.clone(),
            });
        }
    };
    let pem = pem.as_bytes();
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| bad_key(entry, e))
}

/// The secret of an `HS*` key of `[[auth.keys]]`.
fn hmac_secret(entry: &KeyConfig) -> Result<&[u8], SetupError> {
    entry
        .hmac_secret
        .as_ref()
        .map(|secret| secret.expose().as_bytes())
        .ok_or(SetupError::MissingKey(entry.algorithm))
}

/// A key of `[[auth.keys]]` that jsonwebtoken refused.
fn bad_key(entry: &KeyConfig, error: jsonwebtoken::errors::Error) -> SetupError {
    SetupError::BadKey {
        key: "auth.keys",
        algorithm: entry.algorithm,
        reason: format!("kid {:?}: {error}", entry.kid),
    }
}

/// The public JWK of a signing key: `kid`, `alg`, `use: "sig"` and the
/// public parameters. `None` for `HS*` keys, which are never published.
pub fn public_jwk(
    kid: &str,
    algorithm: Algorithm,
    key: &EncodingKey,
) -> Result<Option<Jwk>, SetupError> {
    if algorithm.is_hmac() {
        return Ok(None);
    }
    let mut jwk = Jwk::from_encoding_key(key, algorithm.to_jsonwebtoken()).map_err(|e| {
        SetupError::BadKey {
            key: "auth.keys",
            algorithm,
            reason: format!("kid {kid:?}: {e}"),
        }
    })?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(Some(jwk))
}

/// The verification key of an `[[auth.keys]]` entry.
fn decoding_key(entry: &KeyConfig) -> Result<DecodingKey, SetupError> {
    let algorithm = entry.algorithm;
    let bad_key = |e| bad_key(entry, e);
    if algorithm.is_hmac() {
        return Ok(DecodingKey::from_secret(hmac_secret(entry)?));
    }
    let public = match (&entry.public_key_pem, &entry.public_key_file) {
        (Some(pem), _) => Some(pem.clone()),
        (None, Some(path)) => Some(read(path, "auth.keys")?),
        (None, None) => None,
    };
    if let Some(pem) = public {
        return public_pem(algorithm, pem.as_bytes()).map_err(bad_key);
    }
    // Only a private key: verify with its public half.
    let private = encoding_key(entry)?;
    let jwk = Jwk::from_encoding_key(&private, algorithm.to_jsonwebtoken()).map_err(bad_key)?;
    DecodingKey::from_jwk(&jwk).map_err(bad_key)
}

/// `(kid, algorithm, key)` of one JWK, checked.
fn from_jwk(jwk: &Jwk) -> Result<(String, Algorithm, DecodingKey), SetupError> {
    let kid = jwk.common.key_id.clone().unwrap_or_default();
    let bad = |reason: String| SetupError::BadJwk {
        kid: kid.clone(),
        reason,
    };
    if kid.is_empty() {
        return Err(bad("every key needs a kid".to_owned()));
    }
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(bad("\"use\" must be \"sig\"".to_owned()));
    }
    let named = match jwk.common.key_algorithm {
        Some(alg) => Some(
            Algorithm::ALL
                .into_iter()
                .find(|a| a.as_str() == alg.to_string())
                .ok_or_else(|| bad(format!("unsupported alg {alg}")))?,
        ),
        None => None,
    };
    let algorithm = match (&jwk.algorithm, named) {
        (AlgorithmParameters::OctetKey(_), _) => {
            return Err(bad(
                "symmetric (oct) keys do not belong in a JWKS; use [[auth.keys]] with \
                 hmac_secret"
                    .to_owned(),
            ));
        }
        (AlgorithmParameters::RSA(_), Some(alg))
            if matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) =>
        {
            alg
        }
        (AlgorithmParameters::RSA(_), None) => {
            return Err(bad("RSA keys need an \"alg\" (RS256, PS256, …)".to_owned()));
        }
        (AlgorithmParameters::EllipticCurve(ec), alg) => {
            let implied = match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => return Err(bad(format!("unsupported curve {other:?}"))),
            };
            match alg {
                Some(alg) if alg != implied => {
                    return Err(bad(format!(
                        "alg {alg} does not match curve {:?}",
                        ec.curve
                    )));
                }
                _ => implied,
            }
        }
        (AlgorithmParameters::OctetKeyPair(okp), alg) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(bad(format!("unsupported curve {:?}", okp.curve)));
            }
            match alg {
                Some(alg) if alg != Algorithm::EdDSA => {
                    return Err(bad(format!("alg {alg} does not match an Ed25519 key")));
                }
                _ => Algorithm::EdDSA,
            }
        }
        (AlgorithmParameters::RSA(_), Some(alg)) => {
            return Err(bad(format!("alg {alg} does not match an RSA key")));
        }
        _ => return Err(bad("unsupported key type".to_owned())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
    Ok((kid, algorithm, key))
}
