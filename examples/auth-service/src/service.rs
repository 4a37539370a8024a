//! The `keel.auth.v1.AuthService` handler.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;

use keel_rpc::auth::Verifier;
use keel_rpc::store::StoreError;
use keel_rpc::{Claims, RequestExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::auth_v1::auth_service_server::AuthService;
use crate::auth_v1::{
    CreateCredentialRequest, Credential, GetJwksRequest, Jwks, LoginRequest, RefreshRequest,
    RevokeAllRequest, RevokeAllResponse, RevokeRequest, RevokeResponse, TokenResponse,
    ValidateRequest, ValidateResponse, WatchRevocationsRequest, WatchRevocationsResponse,
};
use crate::db::{AuthStore, CredentialRow, NewSession, Rotation, SessionState};
use crate::passwords::{PasswordError, Passwords};
use crate::revocations::Feed;
use crate::settings::{BootstrapConfig, TokensConfig};
use crate::throttle::{LedgerError, Refused, ThrottleReason, ThrottleScope, Throttled};
use crate::tokens::{self, Signer};
use crate::{Error, Throttle};

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Most scopes on one credential.
pub const MAX_SCOPES: usize = 64;
/// The scope that allows `CreateCredential` and revoking anyone's sessions.
pub const ADMIN_SCOPE: &str = "auth:admin";
/// Metadata key of the retry hint on `RESOURCE_EXHAUSTED` answers, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The one answer to every failed password check.
const BAD_CREDENTIALS: &str = "invalid username or password";

/// Checks a username: 1 to 64 characters among letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(format!("longer than {MAX_USERNAME_CHARS} characters"));
    }
    if let Some(c) = username
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "{c:?} is not allowed; use letters, digits, '.', '_', '-' and '@'"
        ));
    }
    Ok(())
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), String> {
    match password.len() {
        n if n < MIN_PASSWORD_BYTES => Err(format!(
            "must be at least {MIN_PASSWORD_BYTES} bytes, got {n}"
        )),
        n if n > MAX_PASSWORD_BYTES => Err(format!(
            "must be at most {MAX_PASSWORD_BYTES} bytes, got {n}"
        )),
        _ => Ok(()),
    }
}

/// Checks scopes: each non-empty, without whitespace, at most [`MAX_SCOPES`].
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.len() > MAX_SCOPES {
        return Err(format!("at most {MAX_SCOPES} scopes, got {}", scopes.len()));
    }
    for (i, scope) in scopes.iter().enumerate() {
        if scope.is_empty() {
            return Err(format!("scope {i} is empty"));
        }
        if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("scope {i} ({scope:?}) contains whitespace"));
        }
    }
    Ok(())
}

pub(crate) fn now_millis() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn secs(millis: i64) -> u64 {
    u64::try_from(millis / 1000).unwrap_or(0)
}

/// A store failure as the caller sees it: `UNAVAILABLE` when retrying may
/// help (pool exhausted, connection lost, database locked), `INTERNAL`
/// otherwise. The details go to the log only.
pub(crate) fn store_status(error: StoreError) -> Status {
    use keel_rpc::store::sqlx::Error as Sqlx;
    let transient = match &error {
        StoreError::Query(e) | StoreError::Connect { source: e, .. } => match e {
            Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Io(_) | Sqlx::WorkerCrashed => true,
            Sqlx::Database(db) => {
                // SQLite BUSY / LOCKED; PostgreSQL serialization failure,
                // deadlock, too many connections, shutting down.
                matches!(
                    db.code().as_deref(),
                    Some("5" | "6" | "40001" | "40P01" | "53300" | "57P01")
                )
            }
            _ => false,
        },
        _ => false,
    };
    tracing::error!(%error, "store error");
    if transient {
        Status::unavailable("the credential store is unavailable; retry later")
    } else {
        Status::internal("internal error")
    }
}

fn password_status(error: PasswordError) -> Status {
    tracing::error!(%error, "password hashing failed");
    Status::internal("internal error")
}

fn internal(error: Error) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

fn ledger_status(error: LedgerError) -> Status {
    match error {
        LedgerError::Store(error) => store_status(error),
        LedgerError::Backend(reason) => {
            tracing::warn!(%reason, "the login throttle cannot count; logins refused");
            Status::unavailable("the login throttle is unavailable; retry later")
        }
    }
}

/// `RESOURCE_EXHAUSTED` with the retry hint, for failures on record and for
/// attempts in flight alike (see [`crate::IN_FLIGHT_RETRY_AFTER`] for why).
fn throttled_status(throttled: Throttled) -> Status {
    let retry_ms = u64::try_from(throttled.retry_after.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let what = match throttled.scope {
        ThrottleScope::Username => "for this username",
        ThrottleScope::Peer => "from this address",
    };
    let too_many = match throttled.reason {
        ThrottleReason::Failures => "too many failed logins",
        ThrottleReason::InFlight => "too many concurrent logins",
    };
    let mut metadata = MetadataMap::new();
    metadata.insert(RETRY_AFTER_MS, MetadataValue::from(retry_ms));
    Status::with_metadata(
        tonic::Code::ResourceExhausted,
        format!(
            "{too_many} {what}; retry after {:.1}s",
            retry_ms as f64 / 1000.0
        ),
        metadata,
    )
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// Checks the shape of a refresh token argument.
fn check_refresh_token(token: &str) -> Result<(), Status> {
    // (Not empty: auth.proto's rule.)
    if !tokens::is_refresh_token_shaped(token) {
        return Err(invalid(
            "refresh_token",
            format!(
                "malformed; expected the {}-character token returned by Login or Refresh",
                tokens::REFRESH_TOKEN_LEN
            ),
        ));
    }
    Ok(())
}

/// The `AuthService` handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: AuthStore,
    signer: Signer,
    verifier: Arc<Verifier>,
    passwords: Passwords,
    throttle: Throttle,
    tokens: TokensConfig,
    revocations: Arc<Feed>,
}

impl AuthHandler {
    /// A handler issuing tokens with `signer`, validating them with
    /// `verifier` (the one Keel's auth layer uses), whose `WatchRevocations`
    /// streams end when `draining` is cancelled ([`keel_rpc::Keel::draining`]).
    pub fn new(
        store: AuthStore,
        signer: Signer,
        verifier: Arc<Verifier>,
        passwords: Passwords,
        throttle: Throttle,
        tokens: TokensConfig,
        draining: tokio_util::sync::CancellationToken,
    ) -> Self {
        AuthHandler {
            inner: Arc::new(Inner {
                revocations: Feed::new(store.clone(), draining),
                store,
                signer,
                verifier,
                passwords,
                throttle,
                tokens,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &AuthStore {
        &self.inner.store
    }

    /// The public keys of the asymmetric signing keys, as `GetJwks` answers.
    pub fn jwks(&self) -> &crate::auth_v1::Jwks {
        self.inner.signer.jwks()
    }

    /// The login throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    /// Creates the bootstrap administrator when configured and absent.
    /// Returns whether it was created.
    pub async fn bootstrap(&self, config: &BootstrapConfig) -> Result<bool, Error> {
        let (Some(username), Some(password)) = (config.admin(), &config.admin_password) else {
            return Ok(false);
        };
        if self.inner.store.credential(username).await?.is_some() {
            tracing::info!(%username, "bootstrap administrator exists; left unchanged");
            return Ok(false);
        }
        let mut scopes = vec![ADMIN_SCOPE.to_owned()];
        for scope in &config.admin_scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let hash = self
            .inner
            .passwords
            .hash(password.expose().to_owned())
            .await?;
        let created = self
            .inner
            .store
            .create_credential(username, &hash, &scopes.join(" "), now_millis())
            .await?;
        if created {
            tracing::info!(%username, scopes = %scopes.join(" "), "bootstrap administrator created");
        }
        Ok(created)
    }

    /// A new session for `credential`: its first refresh token and an access
    /// token.
    async fn start_session(&self, credential: &CredentialRow) -> Result<TokenResponse, Status> {
        let inner = &self.inner;
        let now = now_millis();
        let session_id = tokens::random_id().map_err(internal)?;
        let refresh_token = tokens::new_refresh_token().map_err(internal)?;
        let session_end = now.saturating_add(millis(inner.tokens.session_ttl));
        let refresh_end = now
            .saturating_add(millis(inner.tokens.refresh_ttl))
            .min(session_end);
        inner
            .store
            .start_session(&NewSession {
                id: &session_id,
                subject: &credential.username,
                scopes: &credential.scopes,
                now,
                expires_at: session_end,
                token_hash: &tokens::refresh_token_hash(&refresh_token),
                token_expires_at: refresh_end,
            })
            .await
            .map_err(store_status)?;
        self.tokens(
            &credential.username,
            &credential.scopes,
            session_id,
            refresh_token,
            refresh_end,
            now,
        )
    }

    fn tokens(
        &self,
        subject: &str,
        scopes: &str,
        session_id: String,
        refresh_token: String,
        refresh_expires_at: i64,
        now: i64,
    ) -> Result<TokenResponse, Status> {
        let access = self
            .inner
            .signer
            .sign(subject, scopes, &session_id, secs(now))
            .map_err(internal)?;
        Ok(TokenResponse {
            access_token: access.token,
            token_type: "Bearer".to_owned(),
            access_token_expires_at: i64::try_from(access.expires_at).unwrap_or(i64::MAX),
            refresh_token,
            refresh_token_expires_at: refresh_expires_at / 1000,
            scope: scopes.to_owned(),
            session_id,
        })
    }

    /// Re-hashes a password made with other argon2 parameters, in the
    /// background.
    fn upgrade_hash(&self, credential: CredentialRow, password: String) {
        let handler = self.clone();
        tokio::spawn(async move {
            let inner = &handler.inner;
            let result = async {
                let new = inner.passwords.hash(password).await?;
                inner
                    .store
                    .upgrade_password_hash(
                        &credential.username,
                        &credential.password_hash,
                        &new,
                        now_millis(),
                    )
                    .await?;
                Ok::<_, Error>(())
            }
            .await;
            match result {
                Ok(()) => tracing::info!(username = %credential.username, "password hash upgraded"),
                Err(error) => tracing::warn!(%error, "upgrading a password hash failed"),
            }
        });
    }
}

fn claims_response(claims: &Claims) -> ValidateResponse {
    ValidateResponse {
        valid: true,
        reason: String::new(),
        subject: claims.sub.clone(),
        scopes: claims.scopes().map(str::to_owned).collect(),
        issuer: claims.iss.clone().unwrap_or_default(),
        audience: claims.aud.clone(),
        expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX),
        issued_at: claims
            .iat
            .and_then(|iat| i64::try_from(iat).ok())
            .unwrap_or_default(),
        token_id: claims.jti.clone().unwrap_or_default(),
        session_id: claims.sid.clone().unwrap_or_default(),
    }
}

fn not_valid(reason: impl Into<String>) -> ValidateResponse {
    ValidateResponse {
        valid: false,
        reason: reason.into(),
        ..ValidateResponse::default()
    }
}

#[tonic::async_trait]
impl AuthService for AuthHandler {
    async fn create_credential(
        &self,
        request: Request<CreateCredentialRequest>,
    ) -> Result<Response<Credential>, Status> {
        let caller = request.claims().map(|c| c.sub.clone()).unwrap_or_default();
        let CreateCredentialRequest {
            username,
            password,
            scopes,
        } = request.into_inner();
        check_username(&username).map_err(|e| invalid("username", e))?;
        check_password(&password).map_err(|e| invalid("password", e))?;
        check_scopes(&scopes).map_err(|e| invalid("scopes", e))?;
        let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
        for scope in scopes {
            if !unique.contains(&scope) {
                unique.push(scope);
            }
        }
        let hash = self
            .inner
            .passwords
            .hash(password)
            .await
            .map_err(password_status)?;
        let now = now_millis();
        let created = self
            .inner
            .store
            .create_credential(&username, &hash, &unique.join(" "), now)
            .await
            .map_err(store_status)?;
        if !created {
            return Err(Status::already_exists(format!(
                "username {username:?} is taken"
            )));
        }
        tracing::info!(%username, %caller, "credential created");
        Ok(Response::new(Credential {
            username,
            scopes: unique,
            created_at: now / 1000,
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        // (auth.proto's rules have bounded both fields' lengths.)
        let LoginRequest { username, password } = request.into_inner();
        let inner = &self.inner;
        let attempt = match inner.throttle.begin(&username, peer).await {
            Ok(attempt) => attempt,
            Err(Refused::Throttled(throttled)) => {
                tracing::debug!(%username, ?peer, ?throttled, "login throttled");
                return Err(throttled_status(throttled));
            }
            Err(Refused::Ledger(error)) => return Err(ledger_status(error)),
        };
        // From here on, an early return drops `attempt` uncounted: only a
        // judged wrong password counts as a failure.
        let credential = inner
            .store
            .credential(&username)
            .await
            .map_err(store_status)?;
        let stored = credential.as_ref().map(|c| c.password_hash.clone());
        let matched = inner
            .passwords
            .verify(password.clone(), stored)
            .await
            .map_err(password_status)?;
        let credential = match credential {
            Some(credential) if matched => credential,
            _ => {
                // Counted before the answer, and before the attempt's slots
                // in flight are freed. A failure that cannot be counted is
                // not answered as one either: the store's error instead
                // (UNAVAILABLE when transient, which clients retry with the
                // same password: no new guess).
                if let Err(error) = inner.throttle.failed(attempt).await {
                    tracing::warn!(%username, ?peer, "a failed login could not be counted");
                    return Err(ledger_status(error));
                }
                tracing::info!(%username, ?peer, "login failed");
                return Err(Status::unauthenticated(BAD_CREDENTIALS));
            }
        };
        drop(attempt); // A success counts nothing.
        if inner.passwords.needs_rehash(&credential.password_hash) {
            self.upgrade_hash(credential.clone(), password);
        }
        let response = self.start_session(&credential).await?;
        tracing::info!(%username, session = %response.session_id, "login");
        Ok(Response::new(response))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let RefreshRequest {
            refresh_token: presented,
            request_id,
        } = request.into_inner();
        check_refresh_token(&presented)?;
        let inner = &self.inner;
        let now = now_millis();
        let next = tokens::new_refresh_token().map_err(internal)?;
        let rotation = inner
            .store
            .rotate(
                &tokens::refresh_token_hash(&presented),
                &tokens::refresh_token_hash(&next),
                now,
                now.saturating_add(millis(inner.tokens.refresh_ttl)),
                &request_id,
            )
            .await
            .map_err(store_status)?;
        match rotation {
            Rotation::Rotated {
                family_id,
                subject,
                scopes,
                token_expires_at,
            } => Ok(Response::new(self.tokens(
                &subject,
                &scopes,
                family_id,
                next,
                token_expires_at,
                now,
            )?)),
            Rotation::Unknown => Err(Status::unauthenticated("invalid refresh token")),
            Rotation::Expired => Err(Status::unauthenticated(
                "refresh token expired; log in again",
            )),
            Rotation::Revoked => Err(Status::unauthenticated("session revoked; log in again")),
            Rotation::Reused { family_id } => {
                self.inner.revocations.committed();
                tracing::warn!(session = %family_id, "refresh token reused; session revoked");
                Err(Status::unauthenticated(
                    "refresh token already used; its session has been revoked",
                ))
            }
        }
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let token = request.into_inner().access_token;
        let claims = match self.inner.verifier.verify(&token) {
            Ok(claims) => claims,
            Err(error) => return Ok(Response::new(not_valid(error.to_string()))),
        };
        let Some(session) = &claims.sid else {
            return Ok(Response::new(not_valid(
                "not issued by this auth service (no session)",
            )));
        };
        let state = self
            .inner
            .store
            .session_state(session, now_millis())
            .await
            .map_err(store_status)?;
        Ok(Response::new(match state {
            SessionState::Active => claims_response(&claims),
            SessionState::Ended => not_valid("session revoked or ended"),
            SessionState::Unknown => not_valid("unknown session"),
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let token = request.into_inner().refresh_token;
        check_refresh_token(&token)?;
        let revoked = self
            .inner
            .store
            .revoke_token_session(&tokens::refresh_token_hash(&token), now_millis())
            .await
            .map_err(store_status)?;
        if revoked {
            self.inner.revocations.committed();
            tracing::info!("session revoked");
        }
        Ok(Response::new(RevokeResponse {}))
    }

    async fn revoke_all(
        &self,
        request: Request<RevokeAllRequest>,
    ) -> Result<Response<RevokeAllResponse>, Status> {
        let caller = request
            .claims()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let requested = request.into_inner().subject;
        let subject = if requested.is_empty() {
            caller.sub.clone()
        } else {
            check_username(&requested).map_err(|e| invalid("subject", e))?;
            requested
        };
        if subject != caller.sub && !caller.has_scope(ADMIN_SCOPE) {
            return Err(Status::permission_denied(format!(
                "revoking the sessions of another subject needs scope {ADMIN_SCOPE}"
            )));
        }
        let revoked = self
            .inner
            .store
            .revoke_subject(&subject, now_millis())
            .await
            .map_err(store_status)?;
        if revoked > 0 {
            self.inner.revocations.committed();
        }
        tracing::info!(%subject, caller = %caller.sub, revoked, "sessions revoked");
        Ok(Response::new(RevokeAllResponse {
            sessions_revoked: i64::try_from(revoked).unwrap_or(i64::MAX),
        }))
    }

    type WatchRevocationsStream =
        Pin<Box<dyn Stream<Item = Result<WatchRevocationsResponse, Status>> + Send + 'static>>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let after = request.into_inner().after;
        let messages =
            Arc::clone(&self.inner.revocations).watch(after, self.inner.tokens.access_ttl);
        Ok(Response::new(Box::pin(messages)))
    }

    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.inner.signer.jwks().clone()))
    }
}
