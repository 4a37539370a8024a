//! Where a client's bearer token comes from: [`TokenSource`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The future of [`TokenSource::token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Arc<str>, TokenError>> + Send + 'a>>;

/// Supplies the access token a client sends as `authorization: Bearer <token>`.
///
/// Keel's client layer asks for a token on every call that does not carry an
/// `authorization` header already. A source that refreshes its token should
/// answer from its cache and renew ahead of expiry, so calls rarely wait.
///
/// - [`StaticToken`]: one fixed token.
/// - `auth_service::RefreshingTokenSource` (the `auth-service` example
///   crate): logs in to Keel's auth service once and refreshes before expiry.
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send now (without the `Bearer ` prefix).
    fn token(&self) -> TokenFuture<'_>;

    /// Tells the source that a server refused its current token
    /// (`UNAUTHENTICATED`), so that the next [`token`](Self::token) gets a
    /// new one. The default does nothing.
    fn invalidate(&self) {}
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }

    fn invalidate(&self) {
        (**self).invalidate()
    }
}

/// Why a [`TokenSource`] has no token to give. Clients fail the call with
/// [`TokenError::to_status`]: `UNAUTHENTICATED` and this message, or
/// `UNAVAILABLE` when the source is only [unavailable](TokenError::unavailable)
/// for now.
#[derive(Debug, thiserror::Error)]
#[error("no access token: {source}")]
pub struct TokenError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    unavailable: bool,
}

impl TokenError {
    /// An error caused by `source`: the credentials were refused, retrying
    /// will not help.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TokenError {
            source: source.into(),
            unavailable: false,
        }
    }

    /// The token could not be obtained for now (the issuer is unreachable or
    /// overloaded); a later call may succeed.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TokenError {
            source: source.into(),
            unavailable: true,
        }
    }

    /// Whether this is an [`unavailable`](TokenError::unavailable) error.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// The status a call fails with: `UNAVAILABLE` when
    /// [unavailable](TokenError::unavailable), else `UNAUTHENTICATED`.
    pub fn to_status(&self) -> tonic::Status {
        if self.unavailable {
            tonic::Status::unavailable(self.to_string())
        } else {
            tonic::Status::unauthenticated(self.to_string())
        }
    }
}

/// A token that never changes: one given by configuration, or the caller's
/// own token forwarded to the services it calls.
#[derive(Clone)]
pub struct StaticToken(Arc<str>);

impl StaticToken {
    /// A source that always answers `token` (without the `Bearer ` prefix).
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        StaticToken(token.into())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken([redacted])")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(std::future::ready(Ok(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_static_token_never_changes() {
        let source: Arc<dyn TokenSource> = Arc::new(StaticToken::new("abc.def.ghi"));
        assert_eq!(&*source.token().await.unwrap(), "abc.def.ghi");
        source.invalidate();
        assert_eq!(&*source.token().await.unwrap(), "abc.def.ghi");
        assert!(!format!("{:?}", StaticToken::new("abc")).contains("abc"));
    }

    #[test]
    fn errors_map_to_statuses() {
        let refused = TokenError::new("invalid username or password");
        assert!(!refused.is_unavailable());
        assert_eq!(refused.to_status().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            refused.to_status().message(),
            "no access token: invalid username or password"
        );
        let down = TokenError::unavailable("connection refused");
        assert!(down.is_unavailable());
        assert_eq!(down.to_status().code(), tonic::Code::Unavailable);
    }
}
