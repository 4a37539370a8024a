//! [`RefreshingTokenSource`]: the client side of the auth service.

use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use keel_rpc::auth::{TokenError, TokenFuture, TokenSource};
use keel_rpc::config::Secret;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::auth_v1::auth_service_client::AuthServiceClient;
use crate::auth_v1::{LoginRequest, RefreshRequest, TokenResponse};

/// Default [`RefreshingTokenSource::refresh_margin`].
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A [`TokenSource`] that logs in to the auth service once, then keeps a
/// fresh access token: when the current one is within the refresh margin
/// of its expiry (or was [invalidated](TokenSource::invalidate)), the next
/// [`token`](TokenSource::token) call refreshes it with the refresh token,
/// and logs in again only when the session is gone (revoked, expired).
///
/// Concurrent callers share one refresh: the first does it, the others
/// wait for its result. While the auth service is unreachable, a token that
/// has not expired yet is still handed out.
pub struct RefreshingTokenSource {
    client: AuthServiceClient<Channel>,
    username: String,
    password: Secret,
    margin: Duration,
    /// The current token, read without waiting.
    current: RwLock<Option<Current>>,
    /// Held while logging in or refreshing.
    renewing: Mutex<()>,
}

impl std::fmt::Debug for RefreshingTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingTokenSource")
            .field("username", &self.username)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Current {
    access: Arc<str>,
    /// When the access token expires, on this process's monotonic clock.
    expires: Instant,
    /// How long it was valid for when received.
    lifetime: Duration,
    refresh_token: Option<Secret>,
    /// Set by `invalidate`: refresh before handing the token out again.
    stale: bool,
}

impl RefreshingTokenSource {
    /// A source that logs in as `username` on the first
    /// [`token`](TokenSource::token) call, through `channel` to the auth
    /// service.
    pub fn new(channel: Channel, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        RefreshingTokenSource {
            client: AuthServiceClient::new(channel),
            username: username.into(),
            password: password.into(),
            margin: DEFAULT_REFRESH_MARGIN,
            current: RwLock::new(None),
            renewing: Mutex::new(()),
        }
    }

    /// Like [`new`](Self::new), but logs in now, so bad credentials or an
    /// unreachable service show at startup.
    pub async fn login(
        channel: Channel,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        let source = RefreshingTokenSource::new(channel, username, password);
        source.token().await?;
        Ok(source)
    }

    /// Refreshes when the access token has less than `margin` left (capped
    /// at a quarter of its lifetime, so short-lived tokens are not
    /// refreshed all the time). Default [`DEFAULT_REFRESH_MARGIN`].
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    fn current(&self) -> Option<Current> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_current(&self, value: Option<Current>) {
        match self.current.write() {
            Ok(mut current) => *current = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }

    /// The token if it can be used without renewing.
    fn fresh(&self, now: Instant) -> Option<Arc<str>> {
        let current = self.current()?;
        let margin = self.margin.min(current.lifetime / 4);
        (!current.stale && now + margin < current.expires).then_some(current.access)
    }

    async fn token_now(&self) -> Result<Arc<str>, TokenError> {
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        let _renewing = self.renewing.lock().await;
        // Another caller may have renewed while this one waited.
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        let previous = self.current();
        let renewed = match previous.as_ref().and_then(|c| c.refresh_token.clone()) {
            Some(refresh_token) => match self.refresh(refresh_token).await {
                Err(status) if status.code() == Code::Unauthenticated => {
                    tracing::info!(
                        message = status.message(),
                        "refresh refused; logging in again"
                    );
                    self.login_now().await
                }
                other => other,
            },
            None => self.login_now().await,
        };
        match renewed {
            Ok(response) => {
                let current = received(response);
                let token = current.access.clone();
                self.set_current(Some(current));
                Ok(token)
            }
            Err(status) => {
                let error = match status.code() {
                    Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
                        self.set_current(None);
                        TokenError::new(status.message().to_owned())
                    }
                    code => TokenError::unavailable(format!(
                        "the auth service answered {code:?}: {}",
                        status.message()
                    )),
                };
                // Unreachable auth service: a token that has not expired
                // yet still works.
                match previous {
                    Some(current)
                        if error.is_unavailable()
                            && !current.stale
                            && Instant::now() < current.expires =>
                    {
                        tracing::warn!(%error, "renewing the access token failed; using the current one");
                        Ok(current.access)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    async fn login_now(&self) -> Result<TokenResponse, tonic::Status> {
        let mut client = self.client.clone();
        let response = client
            .login(LoginRequest {
                username: self.username.clone(),
                password: self.password.expose().to_owned(),
            })
            .await?;
        Ok(response.into_inner())
    }

    async fn refresh(&self, refresh_token: Secret) -> Result<TokenResponse, tonic::Status> {
        let mut client = self.client.clone();
        // One id for this refresh: the client's retries of it resend it.
        let request_id = crate::tokens::new_request_id()
            .map_err(|e| tonic::Status::internal(format!("no randomness for a request id: {e}")))?;
        let response = client
            .refresh(RefreshRequest {
                refresh_token: refresh_token.expose().to_owned(),
                request_id,
            })
            .await?;
        Ok(response.into_inner())
    }
}

/// The state after a successful login or refresh.
fn received(response: TokenResponse) -> Current {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let expires_at = u64::try_from(response.access_token_expires_at).unwrap_or(0);
    let lifetime = Duration::from_secs(expires_at.saturating_sub(now_unix));
    Current {
        access: Arc::from(response.access_token),
        expires: Instant::now() + lifetime,
        lifetime,
        refresh_token: (!response.refresh_token.is_empty())
            .then(|| Secret::new(response.refresh_token)),
        stale: false,
    }
}

impl TokenSource for RefreshingTokenSource {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.token_now())
    }

    fn invalidate(&self) {
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(current) = current.as_mut() {
            current.stale = true;
        }
    }
}
