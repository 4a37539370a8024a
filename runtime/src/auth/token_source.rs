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
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send now (without the `Bearer ` prefix).
    fn token(&self) -> TokenFuture<'_>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }
}

/// Why a [`TokenSource`] has no token to give. Clients fail the call with
/// `UNAUTHENTICATED` and this message.
#[derive(Debug, thiserror::Error)]
#[error("no access token: {source}")]
pub struct TokenError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl TokenError {
    /// An error caused by `source`.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TokenError {
            source: source.into(),
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
