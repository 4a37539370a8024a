//! JWT verification with pinned algorithms and a bounded cache of verified tokens.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use quanta::Instant;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::{AuthError, Claims, KeySet, Revocations};
use crate::clock;
use crate::config::{Algorithm, AuthConfig};
use crate::wire::CallHeaders;

/// Why a [`Verifier`] (or its [`KeySet`]) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configured key does not parse for the configured algorithm.
    #[error("{key}: not a valid {algorithm:?} key: {reason}")]
    BadKey {
        /// The configuration key that holds the key.
        key: &'static str,
        /// The configured algorithm.
        algorithm: Algorithm,
        /// What the parser said.
        reason: String,
    },
    /// A configured key file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    KeyFile {
        /// The configuration key that names the file.
        key: &'static str,
        /// The configured path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No key is configured at all.
    #[error(
        "auth: no verification key configured: set auth.hmac_secret or auth.public_key_* for \
         {0:?}, or auth.keys, or auth.jwks"
    )]
    MissingKey(Algorithm),
    /// Two keys have the same `kid`.
    #[error("auth: kid {0:?} is used by two keys")]
    DuplicateKid(String),
    /// A JWKS document does not parse.
    #[error("{source_name}: not a JWKS document: {reason}")]
    Jwks {
        /// Where the document came from (`auth.jwks`, `auth.jwks_file`, …).
        source_name: String,
        /// What the parser said.
        reason: String,
    },
    /// A key of a JWKS document cannot be used.
    #[error("JWKS key {kid:?}: {reason}")]
    BadJwk {
        /// Its `kid` (empty when it has none).
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key that must sign has no private key.
    #[error("auth.keys: kid {kid:?} has no private key (private_key_pem or private_key_file)")]
    NoPrivateKey {
        /// The key id.
        kid: String,
    },
}

/// Verifies bearer tokens: signature with the key the token's `kid` header
/// selects (or the default key), with the algorithm that key pins (never the
/// one the token names), `exp`/`nbf`/`iat` with leeway, `iss`/`aud` when
/// configured, a non-empty `sub`, and `token_use == "access"`.
///
/// Verified tokens are kept in a bounded cache, keyed by the whole token and
/// dropped from use once the token's `exp` has passed: at most
/// `auth.cache_capacity` of them, and at most that many KiB (each weighs
/// what it holds, token and claims, and at least 1 KiB), so large tokens
/// take no more memory than as many typical ones. Repeated calls with
/// the same token cost one hash lookup, made before the header is decoded
/// any further than finding the token in it. In front of it, each thread
/// keeps one token it found there: a thread that sees the same token call
/// after call (one client's connection, a service calling another with its
/// own token) compares it with that one and takes no lock, so worker threads
/// do not take turns writing the shared cache's lock. Replacing the
/// keys ([`Verifier::set_keys`]) empties the cache and retires both.
pub struct Verifier {
    /// Tells this verifier's entries in the per-thread [`RECENT`] apart.
    id: u64,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped by every [`Verifier::set_keys`]: a verification made with
    /// earlier keys is no longer used, wherever it is kept.
    generation: AtomicU64,
    /// One validation per algorithm: the same rules, pinned to that algorithm.
    validations: Vec<(Algorithm, Validation)>,
    cache: Option<Cache<TokenKey, Verified, ByBytes>>,
    max_token_bytes: usize,
    /// `auth.leeway` in seconds, for the `iat` check (jsonwebtoken checks only `exp`/`nbf`).
    leeway: u64,
    /// Notified when a token names a `kid` no key has: [`RemoteKeys`](super::RemoteKeys)
    /// then fetches its key set again.
    pub(super) unknown_kid: tokio::sync::Notify,
    /// The revoked sessions refused, with `auth.revocations`: checked after
    /// every verification, from the cache or not.
    revocations: Option<Arc<Revocations>>,
}

/// A token in the cache. It is hashed by its length and its last
/// [`HASHED_SUFFIX`] bytes, the end of its signature, which differs from
/// token to token (hashing all of a 300-byte token costs more than the rest
/// of a cache hit); it is compared whole.
#[derive(PartialEq, Eq)]
#[cfg_attr(test, derive(Clone))]
struct TokenKey(Box<[u8]>);

/// A token looked up in the cache, hashed as [`TokenKey`].
struct TokenRef<'a>(&'a [u8]);

const HASHED_SUFFIX: usize = 32;

fn hash_token<H: Hasher>(token: &[u8], state: &mut H) {
    state.write_usize(token.len());
    state.write(&token[token.len().saturating_sub(HASHED_SUFFIX)..]);
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(&self.0, state);
    }
}

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_token(self.0, state);
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        *self.0 == *key.0
    }
}

/// A cached verification: the claims, usable until the token's `exp` while
/// the keys it was made with are current.
#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    /// `exp` on the monotonic clock (TSC-based where the CPU allows), so a
    /// hit needs no wall-clock read.
    valid_until: Instant,
    /// The verifier's [`generation`](Verifier::generation) when the token was
    /// verified.
    generation: u64,
    /// What the entry weighs in the cache: [`entry_bytes`], at least
    /// [`ENTRY_BYTES`].
    weight: u32,
}

/// The least an entry of the cache weighs, and what `auth.cache_capacity`
/// is multiplied by to make the cache's budget in bytes: about what an
/// entry of a typical access token takes (a few hundred bytes of token, its
/// claims decoded, the cache's bookkeeping: `entry_bytes` of a 230-byte
/// token of [`mint_access_token`](super::mint_access_token) is about 600).
/// So a cache of such tokens holds `auth.cache_capacity` of them, as when it
/// counted tokens, while tokens of 7.6 KB (about 13 KiB an entry) fill its
/// budget (10 000 KiB by default) at about 750, where 10 000 of them once
/// took 144 MiB.
const ENTRY_BYTES: usize = 1024;

/// Weighs a cache entry by the bytes it holds (computed once, when it is
/// verified).
#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<TokenKey, Verified> for ByBytes {
    fn weight(&self, _: &TokenKey, verified: &Verified) -> u64 {
        u64::from(verified.weight)
    }
}

/// The bytes a cache entry of `token` and its `claims` holds, as near as
/// can be told without asking the allocator: the token, the claims and
/// every string and JSON value in them, the entry itself.
fn entry_bytes(token: &[u8], claims: &Claims) -> usize {
    /// The cache's own per-entry bookkeeping (its slot, hash and links).
    const BOOKKEEPING: usize = 64;
    let strings = [&claims.iss, &claims.sid, &claims.jti, &claims.token_use]
        .into_iter()
        .flatten()
        .chain(&claims.aud)
        .chain([&claims.sub, &claims.scope])
        .map(String::len)
        .sum::<usize>();
    let others = (claims.other.iter())
        .map(|(name, value)| size_of::<String>() + name.len() + json_bytes(value))
        .sum::<usize>();
    BOOKKEEPING
        + size_of::<TokenKey>()
        + token.len()
        + size_of::<Verified>()
        // The `Arc`'s counts.
        + 2 * size_of::<usize>()
        + size_of::<Claims>()
        + claims.aud.len() * size_of::<String>()
        + strings
        + others
}

/// The bytes a JSON value holds, itself and what it owns. (Recursion is
/// bounded: `serde_json` refuses documents nested deeper than 128.)
fn json_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    size_of::<Value>()
        + match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(json_bytes).sum(),
            Value::Object(fields) => (fields.iter())
                .map(|(name, value)| size_of::<String>() + name.len() + json_bytes(value))
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

impl Verified {
    fn usable(&self, generation: u64, now: Instant) -> bool {
        self.generation == generation && self.valid_until > now
    }
}

/// A token this thread found in a verifier's cache, and what it found.
struct Recent {
    /// The verifier's [`id`](Verifier::id); 0 when empty.
    verifier: u64,
    /// Reused from token to token: refilling it allocates only for a longer
    /// token than any before.
    token: Vec<u8>,
    verified: Option<Verified>,
    /// Calls since it last answered. It is replaced only after
    /// [`REPLACE_AFTER`] of them, so a thread that serves many callers in
    /// turn does not copy every token into it (and a caller seen now and
    /// then between another's calls does not push that one out).
    misses: u8,
}

/// See [`Recent::misses`].
const REPLACE_AFTER: u8 = 8;

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent { verifier: 0, token: Vec::new(), verified: None, misses: 0 })
    };
}

/// Ids of verifiers, from 1.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys())
            .field("cache_bytes", &self.cache.as_ref().map(|c| c.capacity()))
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier from the `auth` section of the configuration, with
    /// the keys of [`KeySet::from_config`].
    pub fn from_config(config: &AuthConfig) -> Result<Self, SetupError> {
        let keys = KeySet::from_config(config)?;
        // The keys of `jwks_url` come when the server starts (`RemoteKeys::fetch`).
        if keys.is_empty() && config.jwks_url.is_none() {
            return Err(SetupError::MissingKey(config.algorithm));
        }
        Ok(Verifier::with_keys(config, keys))
    }

    /// A verifier with the rules of `config` (leeway, issuer, audience,
    /// cache, size limit) and the given keys, ignoring the keys `config`
    /// names.
    pub fn with_keys(config: &AuthConfig, keys: KeySet) -> Self {
        let validations = Algorithm::ALL
            .into_iter()
            .map(|algorithm| (algorithm, validation(config, algorithm)))
            .collect();
        Verifier {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            validations,
            cache: (config.cache_capacity > 0).then(|| {
                let budget = config.cache_capacity.saturating_mul(ENTRY_BYTES);
                Cache::with_weighter(config.cache_capacity, budget as u64, ByBytes)
            }),
            max_token_bytes: config.max_token_bytes,
            leeway: config.leeway.as_secs(),
            unknown_kid: tokio::sync::Notify::new(),
            revocations: Revocations::from_config(config).map(Arc::new),
        }
    }

    /// The revoked sessions this verifier refuses, with `auth.revocations`
    /// (kept by a [`RevocationFeed`](super::RevocationFeed)).
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }

    /// `claims`, unless their session is revoked (see [`Revocations`]).
    fn unrevoked(&self, claims: Arc<Claims>) -> Result<Arc<Claims>, AuthError> {
        match &self.revocations {
            None => Ok(claims),
            Some(revocations) => revocations.check(&claims).map(|()| claims),
        }
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the keys (for instance with a freshly fetched JWKS) and
    /// empties the cache, so no token is accepted on a key that is gone.
    pub fn set_keys(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// Reads the bearer token from `authorization` and verifies it.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Claims>, AuthError> {
        let authorization = CallHeaders::read(headers).authorization()?;
        self.authenticate_at(authorization, clock::now())
    }

    /// [`authenticate`](Self::authenticate) with the request's one
    /// `authorization` value, and `now` read by the caller (the time the
    /// request arrived): a cache hit then reads no clock.
    pub(crate) fn authenticate_at(
        &self,
        value: &HeaderValue,
        now: Instant,
    ) -> Result<Arc<Claims>, AuthError> {
        let token = bearer_token(value.as_bytes())?;
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        // A cached token is one that verified, so it was well-formed: the
        // header is only decoded further on a miss.
        if let Some(claims) = self.cached(token, now) {
            return self.unrevoked(claims);
        }
        value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let token = std::str::from_utf8(token).map_err(|_| AuthError::MalformedHeader)?;
        self.verify_miss(token, now)
            .and_then(|claims| self.unrevoked(claims))
    }

    /// Verifies one token, answering from the cache when it can.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let now = clock::now();
        let claims = match self.cached(token.as_bytes(), now) {
            Some(claims) => claims,
            None => self.verify_miss(token, now)?,
        };
        self.unrevoked(claims)
    }

    /// The cached claims of `token`, if it verified before with the current
    /// keys and its `exp` is after `now`: from this thread's [`Recent`] token
    /// when it is the same, else from the shared cache (the hit then
    /// replaces that token, unless it answered one of the last
    /// [`REPLACE_AFTER`] calls).
    fn cached(&self, token: &[u8], now: Instant) -> Option<Arc<Claims>> {
        let cache = self.cache.as_ref()?;
        let generation = self.generation.load(Ordering::SeqCst);
        let replace = RECENT.with_borrow_mut(|recent| match &recent.verified {
            Some(verified)
                if recent.verifier == self.id
                    && *recent.token == *token
                    && verified.usable(generation, now) =>
            {
                recent.misses = 0;
                ControlFlow::Break(verified.claims.clone())
            }
            Some(_) if recent.misses < REPLACE_AFTER => {
                recent.misses += 1;
                ControlFlow::Continue(false)
            }
            _ => ControlFlow::Continue(true),
        });
        let replace = match replace {
            ControlFlow::Break(claims) => return Some(claims),
            ControlFlow::Continue(replace) => replace,
        };
        let hit = cache.get(&TokenRef(token))?;
        if !hit.usable(generation, now) {
            cache.remove(&TokenRef(token));
            return None;
        }
        let claims = hit.claims.clone();
        if replace {
            RECENT.with_borrow_mut(|recent| {
                recent.verifier = self.id;
                recent.token.clear();
                recent.token.extend_from_slice(token);
                recent.verified = Some(hit);
                recent.misses = 0;
            });
        }
        Some(claims)
    }

    /// Verifies a token that is not in the cache, and caches it. Out of
    /// line: the hit path, taken by nearly every call, stays short.
    #[inline(never)]
    fn verify_miss(&self, token: &str, now: Instant) -> Result<Arc<Claims>, AuthError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let claims = self.verify_uncached(token)?;
        if let Some(cache) = &self.cache
            && let Some(valid_until) = monotonic_deadline(claims.exp, now)
            && self.generation.load(Ordering::SeqCst) == generation
        {
            let weight = entry_bytes(token.as_bytes(), &claims).max(ENTRY_BYTES);
            let verified = Verified {
                claims: claims.clone(),
                valid_until,
                generation,
                weight: u32::try_from(weight).unwrap_or(u32::MAX),
            };
            cache.insert(TokenKey(token.as_bytes().into()), verified);
        }
        Ok(claims)
    }

    /// Full verification, bypassing the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_error(e.kind()))?;
        let keys = self.keys();
        let Some(key) = keys.select(header.kid.as_deref()) else {
            if header.kid.is_some() {
                self.unknown_kid.notify_one();
            }
            return Err(AuthError::UnknownKey);
        };
        let validation = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == key.algorithm)
            .map(|(_, validation)| validation)
            .ok_or(AuthError::Algorithm)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| map_error(e.kind()))?;
        let claims = data.claims;
        if claims.token_use.as_deref() != Some("access") {
            return Err(AuthError::NotAccessToken);
        }
        if claims.sub.trim().is_empty() {
            return Err(AuthError::EmptySubject);
        }
        if claims
            .iat
            .is_some_and(|iat| iat > jsonwebtoken::get_current_timestamp() + self.leeway)
        {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(Arc::new(claims))
    }

    /// Number of tokens in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// The bytes the cache's entries hold ([`entry_bytes`] of each,
    /// whatever they weigh), and its budget.
    #[cfg(test)]
    fn cache_bytes(&self) -> (usize, usize) {
        let Some(cache) = &self.cache else {
            return (0, 0);
        };
        let held = (cache.iter())
            .map(|(token, verified)| entry_bytes(&token.0, &verified.claims))
            .sum();
        (held, cache.capacity() as usize)
    }
}

/// The checks of `config`, pinned to `algorithm`.
fn validation(config: &AuthConfig, algorithm: Algorithm) -> Validation {
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
    validation
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

/// The token of an `authorization` value `Bearer <token>` (scheme matched
/// case-insensitively, surrounding whitespace trimmed), as bytes.
fn bearer_token(value: &[u8]) -> Result<&[u8], AuthError> {
    // `Bearer ` as written by nearly every client is compared whole, before
    // any other case is compared letter by letter.
    match value.split_first_chunk::<7>() {
        Some((scheme, token))
            if *scheme == *b"Bearer " || scheme.eq_ignore_ascii_case(b"bearer ") =>
        {
            match token.trim_ascii() {
                [] => Err(AuthError::MissingToken),
                token => Ok(token),
            }
        }
        _ => Err(AuthError::NotBearer),
    }
}

/// `exp` (seconds since the Unix epoch) as an instant on the monotonic clock,
/// `now` being the present; `None` when it has passed or is out of range.
fn monotonic_deadline(exp: u64, now: Instant) -> Option<Instant> {
    let exp = UNIX_EPOCH.checked_add(Duration::from_secs(exp))?;
    let remaining = exp.duration_since(SystemTime::now()).ok()?;
    now.checked_add(remaining)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{AuthError, ENTRY_BYTES, Verifier, bearer_token, clock, entry_bytes};
    use crate::auth::mint_access_token;
    use crate::config::{AuthConfig, Secret};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn auth_config(cache_capacity: usize) -> AuthConfig {
        AuthConfig {
            hmac_secret: Some(Secret::new(SECRET)),
            cache_capacity,
            ..AuthConfig::default()
        }
    }

    /// A valid access token of `sub` with a claim of `pad` bytes.
    fn padded_token(sub: &str, pad: usize) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({
            "sub": sub,
            "exp": now + 600,
            "iat": now,
            "token_use": "access",
            "pad": "x".repeat(pad),
        });
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    /// Whether `token` is answered from the cache.
    fn is_hit(verifier: &Verifier, token: &str) -> bool {
        verifier.cached(token.as_bytes(), clock::now()).is_some()
    }

    #[test]
    fn large_tokens_fill_the_cache_by_their_bytes_not_their_count() {
        let verifier = Verifier::from_config(&auth_config(200)).unwrap();
        let budget = 200 * ENTRY_BYTES;
        // Distinct tokens of 7.6 KB, as many as the cache counts and more.
        for i in 0..400 {
            let token = padded_token(&format!("user-{i}"), 5_500);
            assert!((7_000..8_192).contains(&token.len()), "{}", token.len());
            verifier.verify(&token).unwrap();
        }
        let (held, capacity) = verifier.cache_bytes();
        assert!(held <= budget, "{held} bytes held, over {budget}");
        assert!(
            capacity <= budget + ENTRY_BYTES,
            "a budget of {capacity} bytes"
        );
        assert!(
            verifier.cached_tokens() > 0,
            "large tokens are still cached"
        );

        // A small token is still cached: verified again, it is a hit.
        let small =
            mint_access_token(&auth_config(200), "ada", &[], Duration::from_secs(60)).unwrap();
        verifier.verify(&small).unwrap();
        assert!(is_hit(&verifier, &small));
        assert!(verifier.verify(&small).is_ok());
    }

    #[test]
    fn small_tokens_are_counted_as_before() {
        let config = auth_config(100);
        let verifier = Verifier::from_config(&config).unwrap();
        let tokens: Vec<String> = (0..50)
            .map(|i| {
                let sub = format!("user-{i}");
                mint_access_token(&config, &sub, &["users:read"], Duration::from_secs(60)).unwrap()
            })
            .collect();
        for token in &tokens {
            verifier.verify(token).unwrap();
        }
        // Each weighs the least an entry does, as much of the budget as one
        // of the count: all of them are held, and answered from the cache.
        let claims = verifier.verify(&tokens[0]).unwrap();
        assert!(entry_bytes(tokens[0].as_bytes(), &claims) <= ENTRY_BYTES);
        assert_eq!(verifier.cached_tokens(), 50);
        assert!(tokens.iter().all(|token| is_hit(&verifier, token)));
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_the_token_trimmed() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc  "] {
            assert_eq!(bearer_token(value.as_bytes()), Ok(&b"abc"[..]), "{value:?}");
        }
        for value in ["Bearer ", "bearer    "] {
            assert_eq!(
                bearer_token(value.as_bytes()),
                Err(AuthError::MissingToken),
                "{value:?}"
            );
        }
        for value in [
            "Basic YWxpY2U6c2VjcmV0",
            "Bearerabc",
            "Bearer\tabc",
            "Bearer",
            "",
            "Bear",
        ] {
            assert_eq!(
                bearer_token(value.as_bytes()),
                Err(AuthError::NotBearer),
                "{value:?}"
            );
        }
    }
}
